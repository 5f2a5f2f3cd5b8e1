"""The retraining loop through the CLI, at small scale, on the real moderation stream.

Import week 1, train `hate_speech`, approve, promote; import week 2 (its redeliveries counted as duplicates);
`retrain-needed` says due; the next run's gate compares challenger and champion on `recent`, the same rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from harmguard.policy import read_policy_bytes
from tests.conftest import run_cli

SAMPLE = "4000"  # rows of the joined sources: keeps each run under a minute on 2 cores


def _last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def solo_policy(folder: Path) -> str:
    """hate_speech as a one-person setup: the login that trains also approves (the shipped policy refuses that).

    A model trained on a 4,000-row sample is not the shipped model: the per-functionality, fairness and evasion
    floors (which the full run meets) are left out, so what is tested is the loop; the overall floors and every
    change check stay.
    """
    doc = yaml.safe_load(read_policy_bytes("hate_speech")[0])
    doc["allow_self_approval"] = True
    sample_free = {"min_subgroup_auc", "min_bpsn_auc", "min_bnsp_auc", "bias_score", "fpr_spread"}
    doc["gate"]["thresholds"] = [
        t
        for t in doc["gate"]["thresholds"]
        if "change" in t or (":" not in t.get("slice", "") and t["metric"] not in sample_free)
    ]
    path = folder / "hate_speech_solo.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return str(path)


def test_labels_in_train_promote_labels_in_retrain_judged_on_recent(hg_env, mirror, tmp_path):
    weeks = mirror / "stormfront_moderation"
    policy = solo_policy(tmp_path)

    def cli(*args: str) -> dict:
        proc = run_cli(list(args), hg_env)
        assert proc.returncode in (0, 3), proc.stderr[-3000:]
        return _last_json(proc.stdout)

    one = cli("labels", "import", "--policy", "hate_speech", str(weeks / "week-01.jsonl"), "--json")
    assert (one["watermark"], one["duplicates"]) == (1, 0)
    first = cli("run", "--policy", policy, "--sample", SAMPLE, "--by", "trainer", "--json")
    assert first["blessed"] and first["version"] == "hate_speech/1", first["reasons"]
    lineage = first["lineage"]
    assert lineage["labels"]["watermark"] == 1 and lineage["labels"]["until"].startswith("2026-10-04")
    assert {s["name"] for s in lineage["sources"]} == {"davidson2017", "toxigen_prompts", "labels"}
    assert first["evaluation_sets"]["recent"]["rows"] > 50  # week 1 is within the newest 14 days: all held out

    approved = run_cli(["approve", "hate_speech/1", "--by", "reviewer", "--reason", "report read"], hg_env)
    assert approved.returncode == 0, approved.stderr[-2000:]
    promoted = cli("promote", "hate_speech/1", "--by", "releaser", "--json")
    assert promoted["ok"] and promoted["champion"]["version"] == "hate_speech/1"
    quiet = cli("retrain-needed", "--policy", "hate_speech", "--json")
    assert quiet["due"] is False and quiet["champion_watermark"] == 1 and quiet["new_labels"] == 0

    two = cli("labels", "import", "--policy", "hate_speech", str(weeks / "week-02.jsonl"), "--json")
    assert (two["watermark"], two["duplicates"], two["new"]) == (2, 25, 1401)  # at-least-once delivery
    due = cli("retrain-needed", "--policy", "hate_speech", "--json")
    assert due["due"] is True and due["new_labels"] == 1401 and due["labels_watermark"] == 2

    second = cli("run", "--policy", policy, "--sample", SAMPLE, "--by", "trainer", "--json")
    assert second["lineage"]["labels"]["watermark"] == 2
    assert second["data_version"] != first["data_version"]
    assert second["champion"]["version"] == "hate_speech/1"
    recent = [c for c in second["checks"] if c["slice"] == "recent" and c["type"] == "change"]
    assert recent and all(not c["skipped"] and c["rows"] > 100 for c in recent)  # the same recent rows, both models
    assert all(c["interval"] is not None and c["champion_value"] is not None for c in recent)
    report = Path(second["report"]).read_text()  # the reviewer sees recent week by week, champion beside
    assert "Recent decisions, week by week" in report and "2026-W40" in report and "2026-W41" in report
