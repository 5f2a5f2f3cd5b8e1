import pytest

from harmguard.policy import PolicyError, load_policy, policy_digest, shipped_policies


def test_shipped_policies_load():
    assert {"davidson2017", "sms_spam"} <= set(shipped_policies())
    dav = load_policy("davidson2017")
    assert dav.label_mode == "exclusive"
    assert dav.classes == ["hate", "offensive", "none"]
    spam = load_policy("sms_spam")
    assert spam.categories == ["spam"]


def test_policy_from_path_and_digest(tmp_path):
    text = (
        "name: toxic\nlabel_mode: exclusive\ncategories: [toxic]\n"
        "data: {uri: data.csv, label_map: {'1': toxic, '0': none}}\n"
    )
    path = tmp_path / "toxic.yaml"
    path.write_text(text)
    p = load_policy(str(path))
    assert p.name == "toxic" and p.data.primary.uri == "data.csv"
    d1 = policy_digest(str(path))
    path.write_text(text + "description: changed\n")
    assert policy_digest(str(path)) != d1


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ("name: x\nlabel_mode: exclusive\ncategories: [a]\n", "data"),
        ("name: x\nlabel_mode: exclusive\ncategories: [a]\ndata: {}\n", "sources"),
        ("name: x\nlabel_mode: exclusive\ncategories: [a]\ndata: {sources: [{label_map: {}}]}\n", "dataset"),
        (
            "name: x\nlabel_mode: exclusive\ncategories: [a]\ndata: {dataset: d, sources: [{dataset: e}]}\n",
            "not both",
        ),
        (
            "name: x\nlabel_mode: exclusive\ncategories: [a]\ndata: {sources: [{dataset: d}, {dataset: d}]}\n",
            "distinct names",
        ),
        (
            "name: x\nlabel_mode: exclusive\ncategories: [a]\ndata: {dataset: d}\n"
            "validation: {prevalence: {b: [0, 1]}}\n",
            "unknown category 'b'",
        ),
        ("name: x\nlabel_mode: sometimes\ncategories: [a]\ndata: {dataset: d}\n", "label_mode"),
        ("name: x\nlabel_mode: exclusive\ncategories: [a]\ndata: {dataset: d}\ntypo_field: 1\n", "typo_field"),
        (
            "name: x\nlabel_mode: exclusive\ncategories: [a]\ndata: {dataset: d}\ngate: {thresholds: [{metric: f1}]}\n",
            "needs `min` or `max`",
        ),
    ],
)
def test_invalid_policies_name_the_problem(tmp_path, doc, needle):
    path = tmp_path / "p.yaml"
    path.write_text(doc)
    with pytest.raises(PolicyError, match=needle):
        load_policy(str(path))


def test_unknown_policy_lists_shipped():
    with pytest.raises(PolicyError, match="davidson2017"):
        load_policy("no_such_policy")


_AUC_POLICY = (
    "name: x\nlabel_mode: exclusive\ncategories: [hate]\ndata: {dataset: d}\n"
    "evaluation_sets: [{name: hc, dataset: hatecheck, category: hate, text_column: t, label_column: l, positive: p}]\n"
    "gate: {thresholds: [{metric: METRIC, kind: operating, category: hate, slice: hc, min: FLOOR}]}\n"
)


@pytest.mark.parametrize(
    "metric", ["min_bpsn_auc", "min_bnsp_auc", "min_subgroup_auc", "bpsn_auc", "bias_score", "roc_auc"]
)
def test_an_auc_floor_under_chance_is_refused_at_load(tmp_path, metric):
    """A floor under 0.5 on any ROC AUC certifies a model that may rank worse than a coin: the policy is refused."""
    path = tmp_path / "p.yaml"
    path.write_text(_AUC_POLICY.replace("METRIC", metric).replace("FLOOR", "0.49"))
    with pytest.raises(PolicyError, match=rf"{metric}.*under 0.5"):
        load_policy(str(path))
    path.write_text(_AUC_POLICY.replace("METRIC", metric).replace("FLOOR", "0.5"))
    assert load_policy(str(path)).gate.thresholds[0].min == 0.5


def test_a_pr_auc_floor_may_sit_under_one_half():
    """PR-AUC's chance level is the prevalence (hate is 5.8% of davidson2017), so its floors are not held to 0.5."""
    floors = [t.min for t in load_policy("davidson2017").gate.thresholds if t.metric == "pr_auc" and t.min]
    assert floors and min(floors) < 0.5
