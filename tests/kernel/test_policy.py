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
