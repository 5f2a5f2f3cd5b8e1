"""The commands as the CLI will call them: windows, policy choice, exit codes; retention; a gs:// home."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from harmguard.data.snapshot import split_frame
from harmguard.exit_codes import ExitCode
from harmguard.monitoring.commands import (
    CommandError,
    monitor_command,
    parse_window,
    review_queue_export_command,
    traffic_purge_command,
)
from harmguard.monitoring.parts import REVIEW, TRAFFIC, live_parts, read_traffic
from harmguard.monitoring.purge import purge_review
from harmguard.policy import load_policy
from harmguard.storage import LocalStore
from harmguard.storage.gcs import GCSStore, make_client
from tests.monitoring.helpers import recorder_for, serve_texts
from tests.support.gcs_emulator import fake_gcs_server

NOW = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)


def test_windows():
    assert parse_window("7d", None, None, now=NOW) == (NOW - timedelta(days=7), NOW)
    assert parse_window("36h", None, "2025-03-10T00:00:00+01:00", now=NOW)[1] == datetime(2025, 3, 9, 23, tzinfo=UTC)
    start, end = parse_window(None, "2025-03-01", "2025-03-03", now=NOW)
    assert (start, end) == (datetime(2025, 3, 1, tzinfo=UTC), datetime(2025, 3, 3, tzinfo=UTC))
    for args, match in [
        (("7", None, None), "positive duration"),
        (("0d", None, None), "positive duration"),
        ((None, "2025-03-01T00:00:00", None), "with a zone"),
        ((None, "yesterday", None), "RFC 3339"),
        ((None, "2025-03-05", "2025-03-01"), "window is empty"),
    ]:
        with pytest.raises(CommandError, match=match) as e:
            parse_window(*args, now=NOW)
        assert e.value.exit_code == ExitCode.USAGE


def test_monitor_and_export_commands_on_the_only_champion(champion, tmp_path):
    recorder = recorder_for(champion["store"], sample_rate=1.0)
    serve_texts(recorder, champion, split_frame(champion["snapshot"], "test")["text"].tolist(), at=NOW)
    recorder.flush()
    settings = champion["settings"]
    doc = monitor_command(None, since="1d", until="2025-03-11", settings=settings)  # the only champion: sms_spam
    assert doc["policy"] == "sms_spam" and doc["status"] == "ok" and doc["exit_code"] == 0
    assert doc["verdict"].startswith(str(champion["home"])) and doc["report"].endswith("report.html")

    out = tmp_path / "queue.jsonl"
    exported = review_queue_export_command("sms_spam", output=str(out), n=20, seed=0, settings=settings)
    assert exported["picked"] == 20 and out.is_file()
    with pytest.raises(CommandError, match="exists") as e:
        review_queue_export_command("sms_spam", output=str(out), n=20, settings=settings)
    assert e.value.exit_code == ExitCode.USAGE
    with pytest.raises(CommandError, match="unknown policy") as e:
        monitor_command("no_such_policy", settings=settings)
    assert e.value.exit_code == ExitCode.USAGE
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: Bad Name\n")
    with pytest.raises(CommandError, match="invalid") as e:
        traffic_purge_command(str(bad), settings=settings)
    assert e.value.exit_code == ExitCode.INVALID_INPUT


def test_without_a_champion_the_command_asks_for_a_policy(settings):
    with pytest.raises(CommandError, match="give --policy: 0 policies") as e:
        monitor_command(None, settings=settings)
    assert e.value.exit_code == ExitCode.USAGE


def _record_days(store, days: list[int], now: datetime) -> None:
    recorder = recorder_for(store, sample_rate=1.0)
    for d in days:
        recorder.record(policy="sms_spam", version="sms_spam/1", thresholds_version="tv", texts=[f"text {d}"] * 3,
                        scores=np.zeros((3, 1)), decisions=np.zeros((3, 1), bool), categories=["spam"],
                        at=now - timedelta(days=d))  # fmt: skip
    recorder.flush()


def test_purge_deletes_review_texts_past_retention_keeps_the_traffic_record_and_compacts(tmp_path):
    store = LocalStore(tmp_path / "home")
    _record_days(store, [40, 31, 30, 29, 0], NOW)
    _record_days(store, [29, 0], NOW)  # a second flush on day 29 (finished) and today (still being written)
    policy = load_policy("sms_spam")  # retention 30 days
    planned = purge_review(store, policy, now=NOW, dry_run=True)
    assert [k.split("/")[2] for k in planned["deleted"]] == ["dt=2025-01-29", "dt=2025-02-07"]
    assert len(store.list(REVIEW)) == 7 and planned["compacted"] == {"traffic": 0, "review": 0}  # nothing done
    done = purge_review(store, policy, now=NOW)
    assert done["deleted"] == planned["deleted"] and done["oldest_kept"] == "2025-02-08"
    assert done["compacted"] == {"traffic": 1, "review": 1}  # day 29's two parts became one; today is left alone
    days = sorted(k.split("/")[2] for k in live_parts(store, REVIEW, "sms_spam"))
    assert days == ["dt=2025-02-08", "dt=2025-02-09", "dt=2025-03-10", "dt=2025-03-10"]
    assert len(live_parts(store, TRAFFIC, "sms_spam")) == 6  # the traffic record has no text and stays
    week = read_traffic(store, "sms_spam", NOW - timedelta(days=41), NOW + timedelta(days=1))
    assert week is not None and week.num_rows == 7 * 3
    assert purge_review(store, policy, now=NOW)["deleted"] == []


def test_a_gs_home_records_reads_and_purges(tmp_path, monkeypatch):
    with fake_gcs_server(tmp_path / "gcs") as url:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", url)
        make_client().create_bucket("monitoring")
        store = GCSStore(f"gs://monitoring/h-{uuid.uuid4().hex[:8]}", cache_dir=tmp_path / "cache")
        _record_days(store, [45, 0], NOW)
        table = read_traffic(store, "sms_spam", NOW - timedelta(days=50), NOW + timedelta(days=1))
        assert table is not None and table.num_rows == 6 and "text" not in table.column_names
        done = purge_review(store, load_policy("sms_spam"), now=NOW)
        assert len(done["deleted"]) == 1 and [k.split("/")[2] for k in store.list(REVIEW)] == ["dt=2025-03-10"]
        _record_days(store, [3], NOW)
        _record_days(store, [3], NOW)  # two flushes on a finished day: compacted through the gs:// store
        assert purge_review(store, load_policy("sms_spam"), now=NOW)["compacted"] == {"traffic": 1, "review": 1}
        assert read_traffic(store, "sms_spam", NOW - timedelta(days=4), NOW).num_rows == 6
        assert len(live_parts(store, TRAFFIC, "sms_spam")) == 3  # days 45, 3 (compacted) and today
        assert sum(k.endswith(".json") for k in store.list(TRAFFIC)) == 1  # day 3's manifest; its parts deleted
