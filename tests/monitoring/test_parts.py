"""Compaction of finished days: the same rows, read once, whatever a reader or a dying compaction sees."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow.parquet as pq

from harmguard.monitoring.parts import (
    COMPACTED,
    TRAFFIC,
    compact,
    compact_day,
    live_parts,
    parquet_bytes,
    partition_prefix,
    read_traffic,
)
from harmguard.storage import LocalStore
from tests.monitoring.helpers import recorder_for

TODAY = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
YESTERDAY = TODAY - timedelta(days=1)
WINDOW = (TODAY - timedelta(days=3), TODAY + timedelta(days=1))


def _serve(store: LocalStore, at: datetime, flushes: int, start: int = 0) -> None:
    """``flushes`` flushes of 10 records each (serving writes a part per flush)."""
    recorder = recorder_for(store)
    for f in range(flushes):
        ids = [f"item-{start + f * 10 + i}" for i in range(10)]
        recorder.record(policy="p", version="p/1", thresholds_version="tv", texts=["t"] * 10, ids=ids,
                        scores=np.full((10, 1), 0.25), decisions=np.zeros((10, 1), bool), categories=["c"],
                        at=at + timedelta(minutes=f))  # fmt: skip
        recorder.flush()


def _ids(store: LocalStore) -> list[str]:
    return sorted(read_traffic(store, "p", *WINDOW).column("item_id").to_pylist())


def test_finished_days_are_compacted_into_one_part_with_the_same_rows(tmp_path):
    store = LocalStore(tmp_path)
    _serve(store, YESTERDAY, 12)
    _serve(store, TODAY, 3, start=1000)
    before = _ids(store)
    assert len(live_parts(store, TRAFFIC, "p")) == 15

    manifests = compact(store, TRAFFIC, "p", before=TODAY.date())
    assert len(manifests) == 1 and manifests[0]["rows"] == 120 and len(manifests[0]["sources"]) == 12
    assert _ids(store) == before  # every row, once
    yesterday = store.list(partition_prefix(TRAFFIC, "p", YESTERDAY.date()))
    assert [k.rsplit("/", 1)[1][: len(COMPACTED) + 6] for k in yesterday] == ["compacted-000001"] * 2  # part+manifest
    assert len(live_parts(store, TRAFFIC, "p")) == 4  # today is still being written: left alone

    _serve(store, YESTERDAY + timedelta(hours=5), 2, start=500)  # a late flush into the compacted day
    again = compact_day(store, TRAFFIC, "p", YESTERDAY.date())
    assert again is not None and again["rows"] == 140 and manifests[0]["part"] in again["sources"]
    assert len(store.list(partition_prefix(TRAFFIC, "p", YESTERDAY.date()))) == 2  # generation 2 only
    assert len(_ids(store)) == len(before) + 20 and len(set(_ids(store))) == len(_ids(store))
    assert compact_day(store, TRAFFIC, "p", YESTERDAY.date()) is None  # one part: nothing to do


def test_a_compaction_that_died_before_its_manifest_is_never_read(tmp_path):
    store = LocalStore(tmp_path)
    _serve(store, YESTERDAY, 4)
    keys = live_parts(store, TRAFFIC, "p")
    merged = pq.read_table([store.path(k) for k in keys])
    day = partition_prefix(TRAFFIC, "p", YESTERDAY.date())
    store.create_only(f"{day}/{COMPACTED}000001-deadbeef0000.parquet", parquet_bytes(merged))  # no manifest
    assert len(_ids(store)) == 40  # not 80: the orphan is not read
    manifest = compact_day(store, TRAFFIC, "p", YESTERDAY.date())
    assert manifest is not None and manifest["rows"] == 40 and len(_ids(store)) == 40


class CompactingStore(LocalStore):
    """A real store where a compaction finishes between a reader's listing and its first read."""

    def __init__(self, root, day) -> None:
        super().__init__(root)
        self.day, self.raced = day, False

    def read_bytes(self, key: str) -> bytes:
        if not self.raced and key.endswith(".parquet"):
            self.raced = True
            assert compact_day(LocalStore(self.root), TRAFFIC, "p", self.day) is not None
        return super().read_bytes(key)


def test_a_reader_racing_a_compaction_starts_over_and_counts_each_row_once(tmp_path):
    _serve(LocalStore(tmp_path), YESTERDAY, 5)
    store = CompactingStore(tmp_path, YESTERDAY.date())
    table = read_traffic(store, "p", *WINDOW)
    assert store.raced and table is not None and table.num_rows == 50
    assert len(set(table.column("item_id").to_pylist())) == 50
