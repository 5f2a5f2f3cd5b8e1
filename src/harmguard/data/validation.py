"""Data validation with Great Expectations 1.x: one suite per policy, run on the whole snapshot.

Each expectation carries its intent. Checks that compare rows with each other (duplicates, leakage between splits,
prevalence) run on helper columns computed here, so Great Expectations still decides pass/fail and the report can
list the offending rows.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from harmguard.data.snapshot import RECENT, normalize_text, split_counts
from harmguard.data.sources import LABELS
from harmguard.policy import SPLITS, Policy

EXAMPLES = 5
# What GX returns per expectation: counts, and the positions of the first 20 offending rows (the frame's index is
# the row position, see add_helper_columns). Naming rows by ``unexpected_index_column_names`` instead made GX build
# a dict per offending row with per-cell lookups before keeping 20 of them, and the pandas "query" (on by default)
# is a string listing every offending row: both cost seconds per check when many rows fail, for nothing we show.
RESULT_FORMAT = {"result_format": "SUMMARY", "return_unexpected_index_query": False}
MIN_WEEK_ROWS = 30  # fewest decisions in the newest week, and in its trailing weeks, to compare their label rates
TEXT_CHARS = 200


@dataclass
class CheckResult:
    """One expectation's outcome, readable without Great Expectations."""

    name: str
    intent: str
    expectation: str
    column: str | None
    success: bool
    observed: Any
    unexpected_count: int | None
    examples: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ValidationResult:
    """The whole suite's outcome."""

    success: bool
    checks: list[CheckResult]
    rows: int
    counts: dict[str, dict[str, int]]

    @property
    def failed(self) -> list[CheckResult]:
        """Checks that failed."""
        return [c for c in self.checks if not c.success]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "success": self.success,
            "rows": self.rows,
            "counts": self.counts,
            "checks": [asdict(c) for c in self.checks],
        }

    def summary(self) -> str:
        """One line per failed check (or a pass line)."""
        if self.success:
            return f"all {len(self.checks)} data checks passed on {self.rows} rows"
        return "; ".join(f"{c.name}: {describe(c)}" for c in self.failed)


def describe(check: CheckResult) -> str:
    """A short human description of what was observed."""
    if check.unexpected_count:
        return f"{check.unexpected_count} offending rows"
    return f"observed {check.observed}"


def truncate(text: Any, limit: int = TEXT_CHARS, redact: bool = False) -> str:
    """A text as reports show it: truncated, or redacted entirely."""
    if redact:
        return "[redacted]"
    s = "" if text is None or (not isinstance(text, str) and pd.isna(text)) else str(text)
    return s if len(s) <= limit else s[: limit - 1] + "…"


def add_helper_columns(frame: pd.DataFrame, policy: Policy) -> pd.DataFrame:
    """Columns the suite needs: normalized text, group split count, class indicators, split indicators."""
    # the index is the row position, by which GX names offending rows (row ids from the source may repeat)
    out = frame.reset_index(drop=True)
    out["norm"] = out["text"].fillna("").map(normalize_text)
    # leakage: how many different splits each normalized text appears in (1 means no leakage)
    out["norm_splits"] = out.groupby("norm")["split"].transform("nunique").astype(int)
    out["norm_repeat"] = out["norm"].duplicated(keep=False)
    for cat in policy.categories:
        labels = out["label"].fillna("").astype(str)
        out[f"is_{cat}"] = labels.str.split("|").map(lambda parts, c=cat: c in parts).astype(float)
    for split in SPLITS:
        out[f"in_{split}"] = (out["split"] == split).astype(int)
    newest, trailing = _label_weeks(out, policy)
    for cat in policy.categories if newest is not None else []:
        # the newest week's label rate: the category's indicator on those rows, NaN elsewhere (means skip NaN)
        out[f"newest_{cat}"] = out[f"is_{cat}"].where(newest)
    return out


def _label_weeks(frame: pd.DataFrame, policy: Policy) -> tuple[pd.Series | None, pd.Series | None]:
    """Imported decisions of the newest week before the snapshot's newest decision, and of its trailing weeks."""
    spec = policy.data.labels
    if spec is None or "decided_at" not in frame.columns or "origin" not in frame.columns:
        return None, None
    human = frame["origin"] == LABELS
    times = pd.to_datetime(frame["decided_at"].where(human), utc=True, format="ISO8601")
    if not human.any():
        return None, None
    end = times.max()
    week = pd.Timedelta(days=7)
    newest = human & (times > end - week)
    trailing = human & (times <= end - week) & (times > end - week * (1 + spec.label_rate_weeks))
    if newest.sum() < MIN_WEEK_ROWS or trailing.sum() < MIN_WEEK_ROWS:
        return None, None  # too few decisions to compare rates: reported by `labels status`, not checked
    return newest, trailing


def build_checks(policy: Policy, frame: pd.DataFrame) -> list[tuple[str, str, Any]]:
    """The suite as (name, intent, expectation) triples."""
    import great_expectations as gx

    e = gx.expectations
    v = policy.validation
    labels = policy.classes if policy.label_mode == "exclusive" else None
    splits = [*SPLITS, RECENT] if policy.data.labels is not None else list(SPLITS)
    checks: list[tuple[str, str, Any]] = [
        # schema: the snapshot carries the columns every later step reads
        (
            "schema",
            "the snapshot has row_id, text, label and split columns",
            e.ExpectTableColumnsToMatchSet(column_set=["row_id", "text", "label", "split"], exact_match=False),
        ),
        # size: enough rows to train and evaluate on
        ("row_count", f"at least {v.min_rows} rows", e.ExpectTableRowCountToBeBetween(min_value=v.min_rows)),
        # non-empty text: a missing text cannot be classified or learned from
        ("text_not_null", "every row has a text", e.ExpectColumnValuesToNotBeNull(column="text")),
        (
            "text_not_blank",
            "no text is empty or only whitespace",
            e.ExpectColumnValuesToNotMatchRegex(column="text", regex=r"^\s*$"),
        ),
        # length bounds: outliers are usually parse errors (a whole file in one cell) or truncation
        (
            "text_length",
            f"texts are {v.min_text_length}-{v.max_text_length} characters",
            e.ExpectColumnValueLengthsToBeBetween(
                column="text", min_value=v.min_text_length, max_value=v.max_text_length
            ),
        ),
        # label set: an unknown label is a mapping error or a new category nobody has decided on
        (
            "split_values",
            f"split is one of {splits}",
            e.ExpectColumnValuesToBeInSet(column="split", value_set=splits),
        ),
        # duplicates: heavy duplication inflates metrics and weights some texts more than others
        (
            "duplicate_rate",
            f"at most {v.max_duplicate_rate:.0%} of rows repeat another row's normalized text",
            e.ExpectColumnProportionOfUniqueValuesToBeBetween(column="norm", min_value=1 - v.max_duplicate_rate),
        ),
        # leakage: no normalized text in two splits, or test metrics measure memory instead of generalization
        (
            "leakage",
            "no normalized text appears in more than one split",
            e.ExpectColumnValuesToBeBetween(column="norm_splits", max_value=1),
        ),
    ]
    if labels is not None:
        checks.insert(
            5,
            (
                "label_set",
                f"labels are among {labels}",
                e.ExpectColumnValuesToBeInSet(column="label", value_set=labels),
            ),
        )
    else:
        for cat in policy.categories:
            # multilabel label set: each indicator column holds 0 or 1
            checks.append(
                (
                    f"label_{cat}",
                    f"{cat} indicator is 0 or 1",
                    e.ExpectColumnValuesToBeInSet(column=f"y_{cat}", value_set=[0, 1]),
                )
            )
    for split in SPLITS:
        # split sizes: every split must be big enough for its job (fit, calibrate, measure)
        checks.append(
            (
                f"{split}_rows",
                f"{split} split has at least {v.min_split_rows} rows",
                e.ExpectColumnSumToBeBetween(column=f"in_{split}", min_value=v.min_split_rows),
            )
        )
    for cat, (lo, hi) in v.prevalence.items():
        # prevalence: a class rate far from the usual one signals a labeling or sampling change
        checks.append(
            (
                f"prevalence_{cat}",
                f"{cat} is {lo:.1%}-{hi:.1%} of rows",
                e.ExpectColumnMeanToBeBetween(column=f"is_{cat}", min_value=lo, max_value=hi),
            )
        )
    if policy.data.labels is not None and "conflict" in frame.columns:
        # sources that disagree on a text (a human decision wins; the disagreement still says something is off)
        rate = policy.data.labels.max_conflict_rate
        checks.append(
            (
                "conflict_rate",
                f"at most {rate:.1%} of rows have a text whose sources or reviewers disagree on the label",
                e.ExpectColumnMeanToBeBetween(column="conflict", max_value=rate),
            )
        )
    newest, trailing = _label_weeks(frame, policy)
    if newest is not None and trailing is not None and policy.data.labels is not None:
        tol, weeks = policy.data.labels.label_rate_tolerance, policy.data.labels.label_rate_weeks
        for cat in policy.categories:
            # new labels against their own trailing weeks (not the base datasets, whose rates differ by design):
            # a feed that suddenly marks everything, or nothing, is a broken feed
            base = float(frame.loc[trailing, f"is_{cat}"].mean())
            lo, hi = max(0.0, base - tol), min(1.0, base + tol)
            checks.append(
                (
                    f"label_rate_{cat}",
                    f"{cat} rate of the newest week's decisions is {lo:.1%}-{hi:.1%} "
                    f"(the {weeks} weeks before: {base:.1%}, +/- {tol:.0%})",
                    e.ExpectColumnMeanToBeBetween(column=f"newest_{cat}", min_value=lo, max_value=hi),
                )
            )
    if v.min_agreement is not None and "agreement" in frame.columns:
        # annotator agreement: low agreement means noisy labels the model will learn
        checks.append(
            (
                "agreement",
                f"mean annotator agreement >= {v.min_agreement:.0%}",
                e.ExpectColumnMeanToBeBetween(column="agreement", min_value=v.min_agreement),
            )
        )
    return checks


def _offending_mask(name: str, frame: pd.DataFrame, policy: Policy) -> pd.Series | None:
    """Rows to show for aggregate checks that do not list unexpected rows themselves."""
    if name == "duplicate_rate":
        return frame["norm_repeat"]
    if name == "agreement":
        return frame["agreement"] < 0.5
    if name == "conflict_rate":
        return frame["conflict"] == 1
    if name.startswith("label_rate_"):
        return frame[f"newest_{name.removeprefix('label_rate_')}"].notna()
    if name.endswith("_rows") and name.removesuffix("_rows") in SPLITS:
        return None
    return None


_gx_guard = threading.Lock()


@contextlib.contextmanager
def _gx_without_waste() -> Iterator[None]:
    """Great Expectations for the duration of our run, minus two whole-column passes whose result nobody uses.

    - GX marks a pandas batch with ``hash_pandas_object`` of the whole frame when it is under ``HASH_THRESHOLD``
      bytes (1e9): over 1M rows that hash took 70% of the suite's time (about 19 s of 27 s on 2 loaded cores), and
      nothing reads the marker; the snapshot's identity is its data version. A zero threshold skips the hash only.
    - Before every column mean and sum GX looks for ``decimal.Decimal`` objects one element at a time, a Python
      loop over the column (about 0.4 s per aggregate check over 1M rows). Only an object array can hold one: for
      a numeric array the answer is known without the loop, and object arrays are still scanned.

    Both are module globals GX reads at call time; they are restored after the run. Every expectation still reads
    every row.
    """
    from great_expectations import util as gx_util
    from great_expectations.execution_engine import pandas_execution_engine as engine

    scan = gx_util.does_ndarray_contain_decimal_dtype

    def decimal_scan(data: Any) -> bool:
        kind = getattr(getattr(data, "dtype", None), "kind", "O")
        return kind not in "biufc" and scan(data)  # bool, int, unsigned, float, complex arrays hold no Decimal

    with _gx_guard:
        saved = engine.HASH_THRESHOLD
        engine.HASH_THRESHOLD = 0
        gx_util.does_ndarray_contain_decimal_dtype = decimal_scan  # type: ignore[assignment]
        try:
            yield
        finally:
            engine.HASH_THRESHOLD = saved
            gx_util.does_ndarray_contain_decimal_dtype = scan


def validate_snapshot(frame: pd.DataFrame, policy: Policy, *, redact: bool = False) -> ValidationResult:
    """Run the policy's suite on a snapshot frame."""
    data = add_helper_columns(frame, policy)
    return validate_prepared(data, policy, redact=redact, counts=split_counts(frame))


def validate_prepared(
    data: pd.DataFrame, policy: Policy, *, redact: bool = False, counts: dict[str, dict[str, int]] | None = None
) -> ValidationResult:
    """Run the suite on a frame that already has its helper columns (``add_helper_columns``).

    One validation of the whole suite over the frame; each map expectation's result names its first offending rows
    by position (SUMMARY format: counts and at most 20 positions, never a list of every offending row), and the
    report shows the first ``EXAMPLES`` of them.
    """
    import great_expectations as gx  # lazy: heavy; GX_ANALYTICS_ENABLED=False comes from the entry point's environment

    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)  # our own progress lives in the CLI
    batch_def = (
        ctx.data_sources.add_pandas("snapshot").add_dataframe_asset("rows").add_batch_definition_whole_dataframe("all")
    )
    named = build_checks(policy, data)
    suite = ctx.suites.add(gx.ExpectationSuite(name=f"{policy.name}-data"))
    for _, _, exp in named:
        suite.add_expectation(exp)
    vd = ctx.validation_definitions.add(
        gx.ValidationDefinition(name=f"{policy.name}-data", data=batch_def, suite=suite)
    )
    if not data.index.equals(pd.RangeIndex(len(data))):
        raise ValueError("validate_prepared needs the frame of add_helper_columns (its index is the row position)")
    with _gx_without_waste():
        run = vd.run(batch_parameters={"dataframe": data}, result_format=RESULT_FORMAT)
    by_id = {r.expectation_config.id: r for r in run.results if r.expectation_config is not None}
    checks = []
    for (name, intent, exp), configured in zip(named, suite.expectations, strict=True):
        r = by_id[configured.id]
        res = r.result or {}
        idx = res.get("partial_unexpected_index_list") or []
        positions = [i["_pos"] if isinstance(i, dict) else i for i in idx]
        examples: list[dict[str, Any]] = []
        if positions:
            rows = data.iloc[positions[:EXAMPLES]]
        else:
            mask = _offending_mask(name, data, policy) if not r.success else None
            rows = data[mask].head(EXAMPLES) if mask is not None else data.iloc[0:0]
        for _, row in rows.iterrows():
            examples.append(
                {
                    "row_id": str(row["row_id"]),
                    "split": str(row["split"]),
                    "label": str(row["label"]),
                    "text": truncate(row["text"], redact=redact),
                }
            )
        observed = res.get("observed_value")
        if observed is None and "unexpected_count" in res:
            observed = f"{res['unexpected_count']} of {res.get('element_count')} rows"
        checks.append(
            CheckResult(
                name=name,
                intent=intent,
                expectation=exp.expectation_type,
                column=getattr(exp, "column", None),
                success=bool(r.success),
                observed=_jsonable(observed),
                unexpected_count=res.get("unexpected_count"),
                examples=examples,
            )
        )

    return ValidationResult(
        success=all(c.success for c in checks),
        checks=checks,
        rows=len(data),
        counts=counts if counts is not None else split_counts(data),
    )


def _jsonable(v: Any) -> Any:
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if hasattr(v, "item"):
        return v.item()
    if isinstance(v, (list, tuple, set)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    return str(v)
