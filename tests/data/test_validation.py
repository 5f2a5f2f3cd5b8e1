"""Real Great Expectations runs on small snapshots with planted defects."""

import pandas as pd
import pytest

from harmguard.data.snapshot import build_snapshot
from harmguard.data.validation import TEXT_CHARS, validate_snapshot
from harmguard.policy import Policy


@pytest.fixture(scope="module")
def policy() -> Policy:
    return Policy.model_validate(
        {
            "name": "toy",
            "label_mode": "exclusive",
            "categories": ["bad"],
            "data": {"uri": "x.csv", "label_map": {"1": "bad", "0": "none"}, "columns": {"votes": ["v0", "v1"]}},
            "validation": {"min_rows": 50, "min_split_rows": 5, "prevalence": {"bad": [0.2, 0.6]},
                           "min_agreement": 0.7, "max_text_length": 500},
        }
    )  # fmt: skip


def clean(n: int = 300) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "text": [f"distinct message {i} with words {i * 7}" for i in range(n)],
            "label": [i % 3 == 0 for i in range(n)],
            "v0": [0 if i % 3 == 0 else 3 for i in range(n)],
            "v1": [3 if i % 3 == 0 else 0 for i in range(n)],
        }
    ).astype({"label": int})


def test_clean_data_passes(policy):
    result = validate_snapshot(build_snapshot(clean(), policy), policy)
    assert result.success, result.summary()
    names = {c.name for c in result.checks}
    assert {"schema", "text_not_null", "text_not_blank", "label_set", "text_length", "duplicate_rate", "leakage",
            "prevalence_bad", "agreement", "train_rows", "validation_rows", "test_rows"} <= names  # fmt: skip


def test_planted_defects_are_each_named_with_rows(policy):
    raw = clean()
    raw.loc[5, "text"] = ""
    raw.loc[6, "text"] = "   "
    raw.loc[7, "label"] = 9
    raw.loc[8, "text"] = "x" * 900
    snap = build_snapshot(raw, policy)
    test_rows = snap[snap["split"] == "test"].head(6).assign(split="train")
    snap = pd.concat([snap, test_rows], ignore_index=True)
    result = validate_snapshot(snap, policy)
    failed = {c.name: c for c in result.failed}
    assert {"text_not_blank", "label_set", "text_length", "leakage"} <= set(failed)
    assert "prevalence_bad" not in failed
    assert failed["label_set"].unexpected_count == 1 and failed["label_set"].examples[0]["label"] == "9"
    assert failed["leakage"].unexpected_count == 12  # six texts, each in test and in train
    assert all(len(c.examples) <= 5 for c in result.checks)
    long = failed["text_length"].examples
    assert any(len(x["text"]) == TEXT_CHARS for x in long)  # texts are truncated in reports


def test_prevalence_and_agreement_bounds(policy):
    raw = clean()
    raw["label"] = 0  # no positives at all
    raw["v0"], raw["v1"] = 2, 2  # annotators split evenly
    result = validate_snapshot(build_snapshot(raw, policy), policy)
    failed = {c.name for c in result.failed}
    assert {"prevalence_bad", "agreement"} <= failed


def test_duplicate_rate(policy):
    raw = clean()
    raw.loc[:60, "text"] = "the same text again"
    result = validate_snapshot(build_snapshot(raw, policy), policy)
    dup = next(c for c in result.checks if c.name == "duplicate_rate")
    assert not dup.success and dup.examples and dup.examples[0]["text"] == "the same text again"


def test_redaction(policy):
    raw = clean()
    raw.loc[7, "label"] = 9
    result = validate_snapshot(build_snapshot(raw, policy), policy, redact=True)
    assert result.failed[0].examples[0]["text"] == "[redacted]"


def test_many_offending_rows_are_counted_and_the_first_named_in_row_order(policy):
    # the positions GX returns (the frame's index) must name the right rows: shuffled input, a non-range index
    raw = clean(3000)
    bad = list(range(0, 3000, 3))  # a thousand unknown labels
    raw.loc[bad, "label"] = 9
    snap = build_snapshot(raw, policy).sample(frac=1.0, random_state=1)
    snap.index = snap.index * 10 + 7
    result = validate_snapshot(snap, policy)
    check = next(c for c in result.failed if c.name == "label_set")
    assert check.unexpected_count == 1000
    expected = snap[snap["label"] == "9"].head(5)
    assert [e["row_id"] for e in check.examples] == [str(r) for r in expected["row_id"]]
    assert [e["text"] for e in check.examples] == list(expected["text"])


def test_the_suite_leaves_great_expectations_as_it_found_it(policy):
    # validation skips GX's whole-frame fingerprint and its Decimal scan of numeric columns for its own run only
    import decimal

    import numpy as np
    from great_expectations import util as gx_util
    from great_expectations.execution_engine import pandas_execution_engine as engine

    before, scan = engine.HASH_THRESHOLD, gx_util.does_ndarray_contain_decimal_dtype
    validate_snapshot(build_snapshot(clean(), policy), policy)
    assert engine.HASH_THRESHOLD == before > 0
    assert gx_util.does_ndarray_contain_decimal_dtype is scan
    assert scan(np.array([1.0, decimal.Decimal("0.5")], dtype=object))


def test_a_column_of_decimals_is_still_read_as_numbers(policy):
    # object columns still get GX's Decimal handling while numeric ones skip the scan: agreement as Decimal objects
    import decimal

    # few rows: GX converts each Decimal with a warning that walks the stack (inspect.stack), ~10 ms a value
    data = build_snapshot(clean(60), policy)
    data["agreement"] = [decimal.Decimal("0.5")] * len(data)  # below min_agreement 0.7
    check = next(c for c in validate_snapshot(data, policy).checks if c.name == "agreement")
    assert not check.success and check.observed == 0.5


def test_validate_prepared_refuses_a_frame_whose_index_is_not_the_row_position(policy):
    from harmguard.data.validation import add_helper_columns, validate_prepared

    data = add_helper_columns(build_snapshot(clean(), policy), policy)
    with pytest.raises(ValueError, match="row position"):
        validate_prepared(data.iloc[::-1], policy)
