"""Registry of record: create-only models, numbered versions, CAS alias pointers, audit log, MLflow mirror."""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import uuid
from pathlib import Path
from typing import Any

import pytest

from harmguard import registry
from harmguard.digests import model_digest, thresholds_version
from harmguard.registry import (
    VersionNotFound,
    append_audit,
    get_version,
    list_versions,
    mlflow_version_of,
    move_alias,
    read_alias,
    read_audit,
    register_version,
    registry_status,
    sync_mlflow,
    tracking,
)
from harmguard.registry.mlflow_model import mlflow_model_key
from harmguard.registry.models import TamperedModelError, publish_model, verify_model
from harmguard.settings import Settings
from harmguard.storage import LocalStore, LostRace
from tests.promotion.helpers import race_champion_move

RACERS = 4  # processes racing one alias move
JOIN_TIMEOUT_S = 120


@pytest.fixture
def settings(tmp_path: Path, mlflow_uri: str) -> Settings:
    return Settings(home=str(tmp_path / "home"), cache=tmp_path / "cache", mlflow_tracking_uri=mlflow_uri)


@pytest.fixture
def policy() -> str:
    return f"pol-{uuid.uuid4().hex[:8]}"


def make_model(folder: Path, weights: str = "w0") -> Path:
    (folder / "tokenizer").mkdir(parents=True)
    (folder / "config.json").write_text('{"family": "baseline"}')
    (folder / "weights.safetensors").write_text(weights)
    (folder / "tokenizer" / "vocab.txt").write_text("a\nb\n")
    return folder


def register(
    store: LocalStore, settings: Settings, policy: str, digest: str, *, blessed: bool = True, run: str = "r1"
) -> registry.VersionRecord:
    return register_version(
        store,
        settings,
        policy=policy,
        model_digest=digest,
        thresholds={"hate": 0.7, "offensive": 0.5},
        blessing={"blessed": blessed, "reasons": [] if blessed else ["macro_f1 below gate"]},
        metrics={"reference": {"test": {"macro_f1": 0.71}}},
        lineage={"data_version": "d" * 64, "git_commit": "abc123", "seeds": {"train": 13}, "parent_run": None},
        run_id=run,
        mlflow_run_id=None,
        family="baseline",
        by="trainer",
    )


@pytest.fixture
def digest(tmp_path: Path, store: LocalStore) -> str:
    return publish_model(store, make_model(tmp_path / "export"))


# --- models -----------------------------------------------------------------------------------------------------


def test_publish_is_create_only_and_reuses_existing_digest(tmp_path: Path, store: LocalStore) -> None:
    first = make_model(tmp_path / "a")
    digest = publish_model(store, first)
    assert digest == model_digest(first)
    published = store.path(f"models/{digest}")
    assert sorted(p.name for p in published.rglob("*")) == [
        "config.json",
        "tokenizer",
        "vocab.txt",
        "weights.safetensors",
    ]
    inode = (published / "weights.safetensors").stat().st_ino

    # same content from another folder: same digest, the published copy is reused untouched
    assert publish_model(store, make_model(tmp_path / "b")) == digest
    assert (published / "weights.safetensors").stat().st_ino == inode
    # different content: a different model
    assert publish_model(store, make_model(tmp_path / "c", weights="w1")) != digest


def test_verify_model_detects_tampering(digest: str, store: LocalStore) -> None:
    folder = verify_model(store, digest)
    assert folder == store.path(f"models/{digest}")
    (folder / "weights.safetensors").write_text("swapped weights")
    with pytest.raises(TamperedModelError, match="modified"):
        verify_model(store, digest)
    with pytest.raises(FileNotFoundError):
        verify_model(store, "0" * 64)


# --- versions ---------------------------------------------------------------------------------------------------


def test_versions_increase_and_are_mirrored(store: LocalStore, settings: Settings, policy: str, digest: str) -> None:
    records = [register(store, settings, policy, digest, run=f"r{i}") for i in range(3)]
    assert [r.version for r in records] == [f"{policy}/1", f"{policy}/2", f"{policy}/3"]
    first = records[0]
    assert first.model_uri == store.uri_for(f"models/{digest}")
    assert first.thresholds_version == thresholds_version({"hate": 0.7, "offensive": 0.5})
    assert first.blessed and len(first.blessing_digest) == 64
    assert first.lineage["seeds"] == {"train": 13}
    assert get_version(store, f"{policy}/2") == records[1]
    assert list_versions(store, policy) == records

    client = tracking.mlflow_client(settings.mlflow_tracking_uri)
    mv = client.get_model_version(policy, mlflow_version_of(store, f"{policy}/3"))
    # MLflow's source is the version's MLflow model folder (an MLmodel beside, never inside, models/<digest>/)
    assert mv.source == store.uri_for(mlflow_model_key(policy, 3)) and mv.tags["model_uri"] == first.model_uri
    assert mv.tags["harmguard_version"] == f"{policy}/3"
    assert mv.tags["model_digest"] == digest and mv.tags["blessed"] == "true" and mv.tags["git_commit"] == "abc123"
    assert [e["event"] for e in read_audit(store, policy)] == ["register"] * 3

    with pytest.raises(VersionNotFound):
        get_version(store, f"{policy}/9")
    with pytest.raises(ValueError, match="not published"):
        register(store, settings, policy, "f" * 64)


def _register_worker(store: LocalStore, settings: Settings, policy: str, digest: str, start: Any, out: Any) -> None:
    start.wait()
    try:
        record = register(store, settings, policy, digest)
        out.put(("ok", record.version, mlflow_version_of(store, record.version)))
    except Exception as e:  # reported to the parent, which fails the test with it
        out.put(("error", repr(e), None))


def test_concurrent_registrations_on_a_fresh_home_get_distinct_numbers(tmp_path: Path, policy: str) -> None:
    # A new home: its MLflow SQLite file is created by the racers themselves, so this also covers concurrent
    # first-time database initialization.
    home = tmp_path / "fresh"
    settings = Settings(home=str(home), cache=tmp_path / "cache", mlflow_tracking_uri=f"sqlite:///{home}/mlflow.db")
    store = LocalStore(home)
    digest = publish_model(store, make_model(tmp_path / "export"))
    ctx = mp.get_context("spawn")
    racers = 2  # each racer imports mlflow (seconds of CPU): two are enough to race allocation and DB creation
    start, out = ctx.Barrier(racers), ctx.Queue()
    procs = [
        ctx.Process(target=_register_worker, args=(store, settings, policy, digest, start, out)) for _ in range(racers)
    ]
    for p in procs:
        p.start()
    results = [out.get(timeout=JOIN_TIMEOUT_S) for _ in procs]
    for p in procs:
        p.join(JOIN_TIMEOUT_S)
    assert all(status == "ok" for status, _, _ in results), results
    assert sorted(version for _, version, _ in results) == [f"{policy}/{n}" for n in range(1, racers + 1)]
    assert len({mlflow_version for _, _, mlflow_version in results}) == racers  # each mirrored once
    assert None not in {mlflow_version for _, _, mlflow_version in results}


def test_mlflow_failure_leaves_registry_of_record_intact(
    store: LocalStore,
    settings: Settings,
    policy: str,
    digest: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(*args: Any, **kwargs: Any) -> str:
        raise RuntimeError("tracking server down")

    with monkeypatch.context() as m:
        m.setattr(tracking, "create_model_version", broken)
        with caplog.at_level(logging.WARNING, logger="harmguard.registry"):
            record = register(store, settings, policy, digest)
    assert get_version(store, record.version) == record  # written and readable
    assert mlflow_version_of(store, record.version) is None
    assert "sync_mlflow repairs it" in caplog.text
    mismatches = registry_status(store, settings)["policies"][policy]["mismatches"]
    assert f"{record.version} has no MLflow model version" in mismatches
    assert sync_mlflow(store, settings, policy) == []
    assert mlflow_version_of(store, record.version) is not None


# --- aliases ----------------------------------------------------------------------------------------------------


def test_move_alias_is_compare_and_swap_and_mirrored(
    store: LocalStore, settings: Settings, policy: str, digest: str
) -> None:
    v1, v2 = (register(store, settings, policy, digest).version for _ in range(2))
    assert read_alias(store, policy, "champion") == (None, None)

    pointer = move_alias(
        store,
        settings,
        policy=policy,
        alias="champion",
        to_version=v1,
        expected_version=None,
        by="alice",
        reason="first",
    )
    assert (pointer.version, pointer.previous, pointer.by) == (v1, None, "alice")
    pointer = move_alias(
        store, settings, policy=policy, alias="champion", to_version=v2, expected_version=v1, by="bob", reason="better"
    )
    assert (pointer.version, pointer.previous) == (v2, v1)
    stored, token = read_alias(store, policy, "champion")
    assert stored == pointer and token is not None

    # a stale expectation is refused and says who holds the alias now
    with pytest.raises(LostRace, match=rf"points to {v2} \(moved by bob"):
        move_alias(
            store, settings, policy=policy, alias="champion", to_version=v1, expected_version=v1, by="eve", reason="x"
        )
    assert read_alias(store, policy, "champion")[0] == pointer

    client = tracking.mlflow_client(settings.mlflow_tracking_uri)
    assert client.get_registered_model(policy).aliases["champion"] == int(mlflow_version_of(store, v2) or 0)

    moves = [e for e in read_audit(store, policy) if e["event"] == "move"]
    assert [(e["who"], e["from"], e["to"], e["alias"], e["why"]) for e in moves] == [
        ("alice", None, v1, "champion", "first"),
        ("bob", v1, v2, "champion", "better"),
    ]
    assert moves[1]["blessing_digest"] == get_version(store, v2).blessing_digest

    # clearing an alias removes the MLflow alias too
    move_alias(
        store, settings, policy=policy, alias="champion", to_version=None, expected_version=v2, by="bob", reason="x"
    )
    assert read_alias(store, policy, "champion")[0] is None
    assert "champion" not in client.get_registered_model(policy).aliases


def test_racing_alias_moves_have_exactly_one_winner(
    store: LocalStore, settings: Settings, policy: str, digest: str
) -> None:
    versions = [register(store, settings, policy, digest).version for _ in range(RACERS)]
    ctx = mp.get_context("spawn")
    start, out = ctx.Barrier(RACERS), ctx.Queue()
    procs = [ctx.Process(target=race_champion_move, args=(store, settings, policy, v, start, out)) for v in versions]
    for p in procs:
        p.start()
    results = [out.get(timeout=JOIN_TIMEOUT_S) for _ in procs]
    for p in procs:
        p.join(JOIN_TIMEOUT_S)

    winners = [v for v, outcome, _ in results if outcome == "won"]
    losers = [msg for _, outcome, msg in results if outcome == "lost"]
    assert len(winners) == 1 and len(losers) == RACERS - 1, results
    assert all(f"points to {winners[0]}" in msg for msg in losers)  # the loser is told who holds it
    pointer, _ = read_alias(store, policy, "champion")
    assert pointer is not None and pointer.version == winners[0] and pointer.by == f"racer-{winners[0]}"
    moves = [e for e in read_audit(store, policy) if e["event"] == "move"]
    assert len(moves) == 1 and moves[0]["to"] == winners[0]
    aliases = tracking.read_aliases(tracking.mlflow_client(settings.mlflow_tracking_uri), policy)
    assert aliases == {"champion": mlflow_version_of(store, winners[0])}


# --- audit and status -------------------------------------------------------------------------------------------


def test_audit_log_is_ordered_and_validated(store: LocalStore, policy: str) -> None:
    keys = [
        append_audit(store, policy, {"event": "bless", "who": "gate", "version": f"{policy}/{i}"}) for i in range(5)
    ]
    assert len(set(keys)) == 5 and all(k.startswith(f"registry/{policy}/audit/") for k in keys)
    events = read_audit(store, policy)
    assert [e["version"] for e in events] == [f"{policy}/{i}" for i in range(5)]
    assert {"event", "who", "when", "why", "version", "model_digest", "blessing_digest", "alias", "from", "to"} <= set(
        events[0]
    )
    with pytest.raises(ValueError, match="unknown audit event"):
        append_audit(store, policy, {"event": "delete", "who": "eve"})


def test_status_reports_pointers_pending_and_mlflow_mismatches(
    store: LocalStore, settings: Settings, policy: str, digest: str
) -> None:
    v1, v2 = register(store, settings, policy, digest).version, register(store, settings, policy, digest).version
    register(store, settings, policy, digest, blessed=False)  # v3: not blessed, never pending
    v4 = register(store, settings, policy, digest).version
    v5 = register(store, settings, policy, digest).version
    kw: dict[str, Any] = {"by": "tester", "reason": "setup"}
    move_alias(store, settings, policy=policy, alias="champion", to_version=v1, expected_version=None, **kw)
    move_alias(store, settings, policy=policy, alias="challenger", to_version=v2, expected_version=None, **kw)
    append_audit(store, policy, {"event": "reject", "who": "reviewer", "why": "bias slice", "version": v4})

    status = registry_status(store, settings)
    json.dumps(status)  # machine-readable as it is
    entry = status["policies"][policy]
    assert set(entry) == {"champion", "challenger", "pending", "mismatches", "unfinished", "audit"}
    assert entry["unfinished"] == [] and entry["audit"] == []
    record1 = get_version(store, v1)
    assert entry["champion"] == {
        "version": v1,
        "model_digest": record1.model_digest,
        "thresholds_version": record1.thresholds_version,
    }
    assert entry["challenger"]["version"] == v2
    assert entry["pending"] == [v2, v5]  # blessed, newer than the champion, not approved or rejected
    assert entry["mismatches"] == []

    # change MLflow behind the registry's back
    client = tracking.mlflow_client(settings.mlflow_tracking_uri)
    client.set_registered_model_alias(policy, "champion", mlflow_version_of(store, v5))
    client.delete_registered_model_alias(policy, "challenger")
    mismatches = registry_status(store, settings)["policies"][policy]["mismatches"]
    assert len(mismatches) == 2, mismatches
    assert any(m.startswith(f"champion -> {v1}") and "points to version" in m for m in mismatches)
    assert any(m.startswith(f"challenger -> {v2}") and "no alias" in m for m in mismatches)

    assert sync_mlflow(store, settings, policy) == []
    assert registry_status(store, settings)["policies"][policy]["mismatches"] == []


def test_status_of_an_empty_home(store: LocalStore, settings: Settings) -> None:
    assert registry_status(store, settings) == {"policies": {}}
