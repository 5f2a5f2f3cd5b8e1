"""The shipped Great Expectations suite over 1,000,000 rows against plain pandas doing the same checks (#22 item 6).

The frame is synthetic from real: the davidson2017 snapshot (as the ingest step builds it) repeated until it has
``--rows`` rows, each copy with its own row ids and its texts suffixed with the copy number (so copies are not
duplicates of each other, as in real data). A second frame plants defects in it: ``--defects`` blank texts and as
many unknown labels, spread over the frame.

Both sides get the same frame with the suite's helper columns (normalized text, split and class indicators:
``add_helper_columns``, timed once per frame and shared) and decide the same checks, row by row where the check is
about rows, and each names the first offending rows of a failed check:

- GX: ``harmguard.data.validation.validate_prepared``, the function the validate step runs (one ephemeral context,
  one validation definition, SUMMARY results with the offending rows' positions);
- pandas: each expectation of the same suite (``build_checks``) decided with plain pandas from its own parameters.

The benchmark checks that both sides agree (success, offending-row count and the rows named, per check), then prints
seconds and rows/s of each side and the ratio GX / pandas speed (goal: at least 0.5). GX's import and first context
are timed apart (a fixed cost of the validate step, not of the rows).

Run: `.venv/bin/python benchmarks/validation_scale.py [--rows 1000000] [--defects 1000]` (a few minutes on 2 cores;
most of it the normalized text of a million rows). Needs the dataset mirror (HARMGUARD_DATA_MIRROR).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from typing import Any

import numpy as np
import pandas as pd

from harmguard.data.snapshot import assemble_snapshot
from harmguard.data.sources import load_sources
from harmguard.data.validation import EXAMPLES, _offending_mask, add_helper_columns, build_checks, validate_prepared
from harmguard.policy import Policy, load_policy
from harmguard.settings import load_settings
from harmguard.storage import open_store


def real_snapshot(policy: Policy) -> pd.DataFrame:
    """The policy's snapshot as the ingest step assembles it (a temporary home; datasets from the mirror)."""
    with tempfile.TemporaryDirectory() as home:
        settings = load_settings({**os.environ, "HARMGUARD_HOME": home})
        parts, cut = load_sources(policy, settings, open_store(settings.home))
        frame, _ = assemble_snapshot(parts, policy, cut=cut)
    return frame


def scale(base: pd.DataFrame, rows: int) -> pd.DataFrame:
    """``base`` repeated to ``rows`` rows: each copy with its own row ids and texts (suffix ``v<copy>``)."""
    copies = []
    for k in range(-(-rows // len(base))):
        c = base.copy()
        c["row_id"] = c["row_id"].astype(str) + f"-{k}"
        if k:
            c["text"] = c["text"] + f" v{k}"
        copies.append(c)
    return pd.concat(copies, ignore_index=True).iloc[:rows].reset_index(drop=True)


def plant(frame: pd.DataFrame, defects: int, seed: int = 0) -> pd.DataFrame:
    """``defects`` blank texts and ``defects`` unknown labels at random rows."""
    out = frame.copy()
    rng = np.random.default_rng(seed)
    where = rng.choice(len(out), size=2 * defects, replace=False)
    out.loc[where[:defects], "text"] = "   "
    out.loc[where[defects:], "label"] = "spam"
    return out


def pandas_checks(data: pd.DataFrame, policy: Policy) -> list[dict[str, Any]]:
    """The suite decided with plain pandas: per check success, offending-row count and the first rows named."""
    out = []
    for name, _, exp in build_checks(policy, data):
        kind = type(exp).__name__
        p = exp.model_dump() if hasattr(exp, "model_dump") else exp.dict()
        col: Any = data[p["column"]] if p.get("column") else None
        lo, hi = p.get("min_value"), p.get("max_value")
        mask = None  # offending rows of a row-level check
        if kind == "ExpectTableColumnsToMatchSet":
            ok = set(p["column_set"]) <= set(data.columns)
        elif kind == "ExpectTableRowCountToBeBetween":
            ok = (lo is None or len(data) >= lo) and (hi is None or len(data) <= hi)
        elif kind == "ExpectColumnValuesToNotBeNull":
            mask = col.isna()
        elif kind == "ExpectColumnValuesToNotMatchRegex":
            mask = col.notna() & col.str.contains(p["regex"], regex=True, na=False)
        elif kind == "ExpectColumnValueLengthsToBeBetween":
            n = col.str.len()
            mask = col.notna() & ((n < lo) | (n > hi))
        elif kind == "ExpectColumnValuesToBeInSet":
            mask = col.notna() & ~col.isin(p["value_set"])
        elif kind == "ExpectColumnValuesToBeBetween":
            mask = col.notna() & (((col < lo) if lo is not None else False) | ((col > hi) if hi is not None else False))
        elif kind == "ExpectColumnProportionOfUniqueValuesToBeBetween":
            share = col.nunique() / col.notna().sum()
            ok = (lo is None or share >= lo) and (hi is None or share <= hi)
        elif kind in ("ExpectColumnSumToBeBetween", "ExpectColumnMeanToBeBetween"):
            v = col.sum() if kind == "ExpectColumnSumToBeBetween" else col.mean()
            ok = (lo is None or v >= lo) and (hi is None or v <= hi)
        else:
            raise SystemExit(f"no pandas counterpart for {kind} ({name}): add one")
        if mask is not None:
            ok = not mask.any()
            count: int | None = int(mask.sum())
            named = data.loc[mask, "row_id"].head(EXAMPLES)
        else:
            count = None
            shown = None if ok else _offending_mask(name, data, policy)
            named = data.loc[shown, "row_id"].head(EXAMPLES) if shown is not None else data["row_id"].iloc[0:0]
        out.append({"name": name, "success": bool(ok), "unexpected_count": count, "rows": [str(r) for r in named]})
    return out


def gx_checks(data: pd.DataFrame, policy: Policy) -> list[dict[str, Any]]:
    """The validate step's suite run, in the same shape."""
    result = validate_prepared(data, policy)
    return [
        {
            "name": c.name,
            "success": c.success,
            "unexpected_count": c.unexpected_count,
            "rows": [e["row_id"] for e in c.examples],
        }
        for c in result.checks
    ]


def timed(fn: Any, *args: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--policy", default="davidson2017")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--defects", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3, help="alternating GX/pandas pairs per frame (median)")
    args = ap.parse_args()
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    policy = load_policy(args.policy)

    t0 = time.perf_counter()
    base = real_snapshot(policy)
    clean = scale(base, args.rows)
    took = time.perf_counter() - t0
    print(f"frame: {len(clean):,} rows from {len(base):,} real rows of {policy.name} ({took:.1f} s)")

    # GX's import and first context: once per validate step, whatever the rows
    small = add_helper_columns(plant(base.head(2000), 10), policy)
    _, gx_fixed = timed(validate_prepared, small, policy)
    pandas_checks(small, policy)  # both sides warm (regex caches, first kernels) before timing
    print(f"GX import + first suite on 2,000 rows: {gx_fixed:.1f} s (fixed cost of the step)")

    report: dict[str, Any] = {"rows": len(clean), "gx_fixed_s": round(gx_fixed, 2), "frames": {}}
    for label, frame in (("clean", clean), (f"{args.defects} blank + {args.defects} unknown labels", None)):
        if frame is None:
            frame = plant(clean, args.defects)
        data, helpers_s = timed(add_helper_columns, frame, policy)
        ge_times, pd_times = [], []
        for _ in range(args.repeats):  # alternating pairs; the median of each side (the cores are shared)
            ge, ge_s = timed(gx_checks, data, policy)
            pdc, pd_s = timed(pandas_checks, data, policy)
            ge_times.append(ge_s)
            pd_times.append(pd_s)
        ge_s, pd_s = float(np.median(ge_times)), float(np.median(pd_times))
        disagree = [(g, p) for g, p in zip(ge, pdc, strict=True) if g != p]
        failed = [g["name"] for g in ge if not g["success"]]
        ratio = pd_s / ge_s  # GX speed as a share of pandas' speed on the same rows
        print(f"\n[{label}] failed checks: {failed or 'none'}")
        print(f"  helper columns (shared):  {helpers_s:7.1f} s")
        print(f"  GX suite:                 {ge_s:7.1f} s  {len(data) / ge_s:>12,.0f} rows/s")
        print(f"  plain pandas, same checks:{pd_s:7.1f} s  {len(data) / pd_s:>12,.0f} rows/s")
        print(f"  ratio GX / pandas speed:  {ratio:7.2f}  (goal >= 0.5)")
        print(
            f"  with helpers on both sides: {(helpers_s + pd_s) / (helpers_s + ge_s):.2f}; "
            f"both sides agree on every check and the rows named: {not disagree}"
        )
        for g, p in disagree:
            print(f"    differ: GX {g} pandas {p}")
        report["frames"][label] = {
            "failed": failed,
            "helpers_s": round(helpers_s, 2),
            "gx_s": round(ge_s, 2),
            "pandas_s": round(pd_s, 2),
            "gx_runs_s": [round(t, 2) for t in ge_times],
            "pandas_runs_s": [round(t, 2) for t in pd_times],
            "ratio": round(ratio, 3),
            "agree": not disagree,
        }
        if disagree:
            raise SystemExit("GX and pandas disagree: the comparison is not of the same checks")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
