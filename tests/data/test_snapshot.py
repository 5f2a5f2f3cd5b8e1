import pandas as pd
import pytest

from harmguard.data.snapshot import (
    SnapshotError,
    build_snapshot,
    compute_data_version,
    map_columns,
    normalize_text,
    write_snapshot,
)
from harmguard.policy import Policy
from harmguard.storage import LocalStore


def make_policy(**data) -> Policy:
    return Policy.model_validate(
        {
            "name": "toy",
            "label_mode": "exclusive",
            "categories": ["bad"],
            "data": {"uri": "x.csv", "label_map": {"1": "bad", "0": "none"}, **data},
        }
    )


def frame(n: int, offset: int = 0) -> pd.DataFrame:
    return pd.DataFrame(
        {"text": [f"message number {i} here" for i in range(offset, offset + n)], "label": [i % 2 for i in range(n)]}
    )


@pytest.mark.parametrize(
    ("raw", "norm"),
    [
        ("RT @user: Hello   World http://t.co/x", "hello world"),
        ("ＨＥＬＬＯ world", "hello world"),  # NFKC folds full-width letters
        ("Straße", "strasse"),  # casefold, not lower
        ("rt RT: spaced\n\tout www.example.com", "spaced out"),
        ("&amp; fish", "& fish"),
    ],
)
def test_normalize_text(raw, norm):
    assert normalize_text(raw) == norm


def test_split_is_stable_when_rows_are_added():
    p = make_policy()
    small = build_snapshot(frame(500), p)
    big = build_snapshot(pd.concat([frame(500), frame(500, offset=500)], ignore_index=True), p)
    assert (big["split"].iloc[:500].to_numpy() == small["split"].to_numpy()).all()
    shares = big["split"].value_counts(normalize=True)
    assert abs(shares["train"] - 0.8) < 0.06 and abs(shares["test"] - 0.1) < 0.04


def test_duplicates_never_straddle_splits():
    raw = pd.DataFrame(
        {"text": [f"RT @a{i}: Same text {i % 50}" for i in range(400)], "label": [i % 2 for i in range(400)]}
    )
    snap = build_snapshot(raw, make_policy())
    groups = snap.assign(n=snap["text"].map(normalize_text)).groupby("n")["split"].nunique()
    assert (groups == 1).all()


def test_given_split_is_respected_and_validation_carved():
    raw = frame(400)
    raw["split"] = ["test" if i % 5 == 0 else "train" for i in range(400)]
    snap = build_snapshot(raw, make_policy())
    assert (snap.loc[raw["split"] == "test", "split"] == "test").all()
    assert set(snap.loc[raw["split"] == "train", "split"]) == {"train", "validation"}
    assert 10 < (snap["split"] == "validation").sum() < 80


def test_unknown_labels_are_kept_for_validation():
    raw = frame(10)
    raw.loc[3, "label"] = 7
    snap = map_columns(raw, make_policy())
    assert snap.loc[3, "label"] == "7"
    assert set(snap["label"]) == {"bad", "none", "7"}


def test_missing_column_is_named():
    with pytest.raises(SnapshotError, match="'body'.*columns are"):
        map_columns(frame(3), make_policy(columns={"text": "body"}))


def test_data_version_tracks_content_not_normalization(tmp_path):
    p = make_policy()
    a = build_snapshot(frame(100), p)
    assert compute_data_version(a) == compute_data_version(build_snapshot(frame(100), p))
    b = a.copy()
    b.loc[0, "label"] = "none" if b.loc[0, "label"] == "bad" else "bad"
    assert compute_data_version(b) != compute_data_version(a)
    store = LocalStore(tmp_path)
    info = write_snapshot(store, a, policy=p, source="test")
    again = write_snapshot(store, a, policy=p, source="test")  # create-only: the same version is reused
    assert info.data_version == again.data_version
    assert (tmp_path / "snapshots" / info.data_version / "data.parquet").is_file()


def test_sample_is_stable_subset():
    p = make_policy()
    s1 = build_snapshot(frame(1000), p, sample=200)
    s2 = build_snapshot(frame(1000), p, sample=400)
    assert len(s1) == 200 and len(s2) == 400
    assert set(s1["text"]) <= set(s2["text"])


def test_dedupe_keeps_first():
    raw = pd.DataFrame({"text": ["Hi there", "hi   THERE", "other"], "label": [1, 0, 0]})
    snap = build_snapshot(raw, make_policy(dedupe=True))
    assert snap["text"].tolist() == ["Hi there", "other"]
