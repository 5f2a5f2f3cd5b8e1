"""The traffic record: no text in it, keyed item ids, a bounded buffer, whole parts even when the writer is killed."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harmguard.data.snapshot import normalize_text, split_frame
from harmguard.monitoring.keys import (
    KEY_ENV,
    KEY_FILE_ENV,
    LOCAL_KEY,
    ItemKey,
    ItemKeyError,
    item_id_for_text,
    load_item_key,
)
from harmguard.monitoring.parts import REVIEW, TRAFFIC, read_traffic, traffic_schema
from harmguard.monitoring.traffic import DisabledRecorder, RecorderConfig, TrafficRecorder, open_recorder
from harmguard.settings import Settings
from harmguard.storage import LocalStore
from tests.conftest import ROOT
from tests.monitoring.helpers import KEY, recorder_for, serve_texts

DAY = timedelta(days=1)


def _window() -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    return now - DAY, now + DAY


def _strings(table: pa.Table) -> set[str]:
    """Every string value of every string column."""
    out: set[str] = set()
    for name in table.column_names:
        col = table.column(name)
        if pa.types.is_string(col.type) or pa.types.is_dictionary(col.type):
            out |= {v for v in col.cast(pa.string()).to_pylist() if v is not None}
    return out


def test_the_traffic_record_holds_no_text_and_the_review_share_is_kept_apart(champion):
    store = champion["store"]
    texts = split_frame(champion["snapshot"], "test")["text"].tolist()[:400]
    recorder = recorder_for(store, sample_rate=0.25)
    serve_texts(recorder, champion, texts)
    assert recorder.flush() == len(texts)

    traffic = read_traffic(store, "sms_spam", *_window())
    assert traffic is not None and traffic.num_rows == len(texts)
    for key in store.list(TRAFFIC):  # each part has exactly the traffic schema: no text column
        assert pq.read_schema(store.path(key)).equals(traffic_schema(["spam"]), check_metadata=False)
    values = _strings(traffic)
    for text in texts:  # no text, whole or normalized, in any column of any traffic part
        assert text not in values and normalize_text(text) not in values
    long_texts = [t for t in texts if len(t) > 20]
    assert not any(t in v for v in values for t in long_texts)  # nor a text inside another value
    assert traffic.column("text_length").to_pylist() == [len(t) for t in texts]
    assert set(traffic.column("source").to_pylist()) == {"serve"}

    review = pq.read_table([store.path(k) for k in store.list(REVIEW)])  # the sampled share, with texts
    assert 0.15 * len(texts) < review.num_rows < 0.35 * len(texts)
    assert set(review.column("text").to_pylist()) <= set(texts)
    ids = dict(zip(traffic.column("item_id").to_pylist(), texts, strict=True))
    assert all(
        ids[i] == t
        for i, t in zip(review.column("item_id").to_pylist(), review.column("text").to_pylist(), strict=True)
    )


def test_item_ids_are_keyed_hashes_unless_the_caller_gives_ids(tmp_path):
    text = "WINNER!! Claim your free prize now"
    hashed = item_id_for_text(KEY, text)
    # not reversible with a dictionary of texts: no plain hash of the text or of its normalized form
    plain = {hashlib.sha256(t.encode()).hexdigest() for t in (text, normalize_text(text))}
    assert hashed.startswith("hmac:") and not any(hashed[5:] in p for p in plain)
    assert item_id_for_text(ItemKey(b"another-key-another-key-another-key", "t"), text) != hashed
    assert item_id_for_text(KEY, "  winner!!   CLAIM your free prize now ") == hashed  # a re-post shares its id

    recorder = recorder_for(LocalStore(tmp_path))
    recorder.record(policy="p", version="p/1", thresholds_version="tv", texts=["a", "b", text],
                    ids=["id-1", "", "x" * 300], scores=np.zeros((3, 1)), decisions=np.zeros((3, 1), bool),
                    categories=["c"])  # fmt: skip
    recorder.flush()
    table = read_traffic(LocalStore(tmp_path), "p", *_window())
    assert table.column("id_source").to_pylist() == ["caller", "hmac", "hmac"]  # blank or oversized: hashed
    assert table.column("item_id").to_pylist()[::2] == ["id-1", hashed]


def test_the_buffer_is_bounded_and_counts_what_it_drops(tmp_path):
    dropped: list[int] = []
    recorder = TrafficRecorder(
        LocalStore(tmp_path), KEY, RecorderConfig(capacity=100, flush_records=10**6, flush_seconds=3600),
        on_drop=dropped.append, start=False,
    )  # fmt: skip
    for _ in range(5):
        recorder.record(policy="p", version="p/1", thresholds_version="tv", texts=["t"] * 50,
                        scores=np.full((50, 1), 0.5), decisions=np.ones((50, 1), bool), categories=["c"])  # fmt: skip
    stats = recorder.stats()
    assert stats["pending"] == 100 and stats["recorded"] == 100
    assert recorder.dropped == 150 and sum(dropped) == 150
    assert recorder.flush() == 100
    assert read_traffic(LocalStore(tmp_path), "p", *_window()).num_rows == 100
    recorder.record(policy="p", version="p/1", thresholds_version="tv", texts=["t"] * 50,
                    scores=np.full((50, 1), 0.5), decisions=np.ones((50, 1), bool), categories=["c"])  # fmt: skip
    assert recorder.stats()["pending"] == 50  # room again after the flush


class SlowStore(LocalStore):
    """A real local store whose writes wait (a slow bucket) or fail (an outage)."""

    def __init__(self, root: Path, *, delay: float = 0.0, fail: bool = False) -> None:
        super().__init__(root)
        self.delay, self.fail = delay, fail

    def create_only(self, key: str, data: bytes) -> bool:
        time.sleep(self.delay)
        if self.fail:
            raise OSError("bucket unavailable")
        return super().create_only(key, data)


def _record(recorder: Any, n: int = 64) -> float:
    start = time.perf_counter()
    recorder.record(policy="p", version="p/1", thresholds_version="tv", texts=["some text"] * n,
                    scores=np.random.rand(n, 2), decisions=np.zeros((n, 2), bool), categories=["a", "b"])  # fmt: skip
    return time.perf_counter() - start


def test_recording_never_waits_for_storage_nor_raises(tmp_path):
    slow = TrafficRecorder(SlowStore(tmp_path / "slow", delay=1.0), KEY,
                           RecorderConfig(flush_records=64, flush_seconds=3600))  # fmt: skip
    _record(slow)  # wakes the flusher, whose write now takes a second
    time.sleep(0.1)
    assert max(_record(slow) for _ in range(20)) < 0.2  # the request path never waits for the write
    slow.close()
    assert slow.stats()["written"] == 21 * 64

    broken = TrafficRecorder(SlowStore(tmp_path / "down", fail=True), KEY, RecorderConfig(), start=False)
    _record(broken)
    assert broken.flush() == 0 and broken.dropped == 64 and broken.stats()["errors"] == 1
    # malformed calls are counted, never raised into the request
    broken.record(policy="p", version="p/1", thresholds_version="tv", texts=["a", "b"], scores=np.zeros((3, 1)),
                  decisions=np.zeros((3, 1), bool), categories=["c"])  # fmt: skip
    broken.record(policy="p", version="p/1", thresholds_version="tv", texts=["a"], scores=[{"c": 0.1}],
                  decisions=[{"c": False}], source="elsewhere")  # fmt: skip
    assert broken.stats()["errors"] == 3 and broken.stats()["pending"] == 0


_WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from harmguard.monitoring.keys import ItemKey
    from harmguard.monitoring.traffic import RecorderConfig, TrafficRecorder
    from harmguard.storage import LocalStore

    config = RecorderConfig(capacity=600_000, flush_records=150_000, flush_seconds=0.05, sample_rate=0.0)
    recorder = TrafficRecorder(LocalStore(sys.argv[1]), ItemKey(b"k" * 32, "test"), config)
    n = 2000
    ids = [f"item-{i}" for i in range(n)]
    scores = np.random.default_rng(0).random((n, 2))
    print("recording", flush=True)
    while True:
        recorder.record(policy="p", version="p/1", thresholds_version="tv", texts=["text"] * n, ids=ids,
                        scores=scores, decisions=scores > 0.5, categories=["a", "b"])
    """
)


def _kill_mid_flush(home: Path) -> bool:
    """Run the writer until a part is being written (its temporary file exists), then SIGKILL it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(home)], env=env, stdout=subprocess.PIPE)
    caught = False
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"recording"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not caught:
            for folder in (home / TRAFFIC / "p").glob("dt=*"):
                if any(e.name.startswith(".part-") for e in os.scandir(folder)):
                    proc.send_signal(signal.SIGKILL)
                    caught = True
                    break
            time.sleep(0.0005)
    finally:
        proc.kill()
        proc.wait()
    return caught


def test_a_writer_killed_mid_flush_leaves_only_whole_parts_and_a_restart_goes_on(tmp_path):
    home = tmp_path / "home"
    assert any(_kill_mid_flush(home) for _ in range(3)), "never saw a part being written"
    leftovers = [p for p in home.rglob(".part-*")]
    assert leftovers, "the kill should have interrupted a write"  # its temporary file stays behind, unlisted
    store = LocalStore(home)
    parts = store.list(TRAFFIC)
    for key in parts:  # every listed part is a whole Parquet file with its rows
        table = pq.read_table(store.path(key))
        assert table.num_rows > 0 and table.num_rows % 2000 == 0
    before = read_traffic(store, "p", *_window())
    rows_before = 0 if before is None else before.num_rows

    restarted = recorder_for(store)
    restarted.record(policy="p", version="p/1", thresholds_version="tv", texts=["x"] * 10, scores=np.zeros((10, 2)),
                     decisions=np.zeros((10, 2), bool), categories=["a", "b"])  # fmt: skip
    assert restarted.flush() == 10
    assert read_traffic(store, "p", *_window()).num_rows == rows_before + 10


def _settings(home: Path) -> Settings:
    return Settings(home=str(home), cache=home / "cache", mlflow_tracking_uri="sqlite://")


def test_the_local_key_is_created_private_and_a_readable_key_is_refused(tmp_path):
    settings = _settings(tmp_path / "home")
    key = load_item_key(settings, environ={})
    path = tmp_path / "home" / LOCAL_KEY
    assert key is not None and len(key.secret) == 32 and (path.stat().st_mode & 0o777) == 0o600
    assert key.secret.hex() not in repr(key) and str(key.secret) not in repr(key)  # never printed
    assert load_item_key(settings, environ={}) == key  # the same key on every start

    path.chmod(0o644)  # readable by others: anyone could then reverse the ids
    with pytest.raises(ItemKeyError, match="can be read by others"):
        load_item_key(settings, environ={})
    recorder = open_recorder(settings, sample_rate=0.01, environ={})
    assert isinstance(recorder, DisabledRecorder) and "read by others" in recorder.stats()["disabled"]


def test_on_a_cluster_the_key_comes_from_the_secret_or_nothing_is_recorded(tmp_path, caplog):
    settings = _settings(tmp_path / "home")
    cluster = {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}
    assert load_item_key(settings, environ=cluster) is None
    assert not (tmp_path / "home" / LOCAL_KEY).exists()  # no key invented on a cluster
    with caplog.at_level("WARNING", logger="harmguard.monitoring"):
        recorder = open_recorder(settings, sample_rate=0.01, environ=cluster)
    assert isinstance(recorder, DisabledRecorder) and "no item-id key" in caplog.text
    assert sum("traffic record off" in r.message for r in caplog.records) == 1  # said once, at start-up
    recorder.record(policy="p", version="p/1", thresholds_version="tv", texts=["a"], scores=[{"c": 0.1}],
                    decisions=[{"c": False}])  # fmt: skip
    assert not (tmp_path / "home" / TRAFFIC).exists()

    secret = tmp_path / "secret" / "item-id-key"
    secret.parent.mkdir()
    secret.write_bytes(os.urandom(32).hex().encode() + b"\n")
    secret.chmod(0o400)
    key = load_item_key(settings, environ=cluster | {KEY_FILE_ENV: str(secret)})
    assert key is not None and key.secret == secret.read_bytes().strip()
    assert load_item_key(settings, environ=cluster | {KEY_ENV: "z" * 40}).secret == b"z" * 40
    with pytest.raises(ItemKeyError, match="at least 32"):
        load_item_key(settings, environ=cluster | {KEY_ENV: "short"})
    recorder = open_recorder(settings, sample_rate=0.5, environ=cluster | {KEY_FILE_ENV: str(secret)},
                             store=LocalStore(tmp_path / "home"))  # fmt: skip
    assert isinstance(recorder, TrafficRecorder) and recorder.config.sample_rate == 0.5
    recorder.close()


def test_records_are_written_in_the_background_per_day(tmp_path):
    store = LocalStore(tmp_path)
    recorder = TrafficRecorder(store, KEY, RecorderConfig(flush_records=10**6, flush_seconds=0.1))
    yesterday = datetime.now(UTC) - DAY
    for at in (yesterday, None):
        recorder.record(policy="p", version="p/1", thresholds_version="tv", texts=["a", "b"], scores=np.zeros((2, 1)),
                        decisions=np.zeros((2, 1), bool), categories=["c"], source="batch", at=at)  # fmt: skip
    deadline = time.monotonic() + 10
    while recorder.stats()["written"] < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert recorder.stats()["written"] == 4
    days = {k.split("/")[2] for k in store.list(TRAFFIC)}
    assert days == {f"dt={yesterday.date()}", f"dt={datetime.now(UTC).date()}"}
    recorder.close()


def _secret_volume(root: Path, mode: int) -> Path:
    """The layout a Kubernetes Secret volume mounts: the key a symlink into a timestamped ..data folder."""
    data = root / "..2026_11_28_12_00_00.000000001"
    data.mkdir(parents=True)
    (data / "item-id.key").write_bytes(os.urandom(32).hex().encode())
    (data / "item-id.key").chmod(mode)
    (root / "..data").symlink_to(data.name)
    (root / "item-id.key").symlink_to("..data/item-id.key")
    return root / "item-id.key"


def test_a_mounted_secret_may_be_group_readable_as_fsgroup_makes_it_but_never_by_others(tmp_path):
    # In a pod with an fsGroup the kubelet mounts a Secret's file 0440 whatever defaultMode says (root-owned, the
    # pod's group): the key must load, or the record would be off on every cluster.
    settings = _settings(tmp_path / "home")
    cluster = {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}
    for mode in (0o400, 0o440):
        path = _secret_volume(tmp_path / f"ok-{mode:o}", mode)
        key = load_item_key(settings, environ=cluster | {KEY_FILE_ENV: str(path)})
        assert key is not None and key.secret == path.read_bytes().strip()
    for mode, problem in ((0o444, "can be read by others"), (0o460, "can be changed by its group")):
        path = _secret_volume(tmp_path / f"bad-{mode:o}", mode)
        with pytest.raises(ItemKeyError, match=problem):
            load_item_key(settings, environ=cluster | {KEY_FILE_ENV: str(path)})


@pytest.mark.skipif(not hasattr(os, "getuid") or os.getuid() != 0, reason="giving a file away needs root")
def test_a_mounted_secret_of_another_group_or_user_is_refused(tmp_path):
    settings = _settings(tmp_path / "home")
    cluster = {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}
    path = _secret_volume(tmp_path / "foreign-group", 0o440)
    foreign = max({os.getgid(), *os.getgroups()}) + 4242
    os.chown(path.resolve(), -1, foreign)
    with pytest.raises(ItemKeyError, match=f"group {foreign}, which is not this process's"):
        load_item_key(settings, environ=cluster | {KEY_FILE_ENV: str(path)})
    os.chown(path.resolve(), os.getuid() + 4242, os.getgid())  # another user's file, readable by our group
    with pytest.raises(ItemKeyError, match="belongs to another user"):
        load_item_key(settings, environ=cluster | {KEY_FILE_ENV: str(path)})
