"""The audit log as a chain: numbered by a counter under CAS, tamper-evident, and alias moves bracketed by intents."""

from __future__ import annotations

import json
import re
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from harmguard.registry import (
    AuditChainBroken,
    append_audit,
    read_alias,
    read_audit,
    register_version,
    registry_status,
    verify_audit,
)
from harmguard.registry import core as registry_core
from harmguard.registry.models import publish_model
from harmguard.settings import Settings
from harmguard.storage import LocalStore

WRITERS = 8
EVENTS_EACH = 5


@pytest.fixture
def settings(tmp_path: Path, mlflow_uri: str) -> Settings:
    return Settings(home=str(tmp_path / "home"), cache=tmp_path / "cache", mlflow_tracking_uri=mlflow_uri)


@pytest.fixture
def policy() -> str:
    return f"aud-{uuid.uuid4().hex[:8]}"


def bless(store: LocalStore, policy: str, n: int) -> list[str]:
    return [append_audit(store, policy, {"event": "bless", "who": "gate", "why": f"e{i}"}) for i in range(n)]


def chain_path(store: LocalStore, policy: str, seq: int) -> Path:
    return store.path(f"registry/{policy}/audit/chain/{seq:012d}.json")


def test_concurrent_writers_get_distinct_consecutive_numbers(store: LocalStore, policy: str) -> None:
    start = threading.Barrier(WRITERS)
    errors: list[BaseException] = []

    def writer(w: int) -> None:
        try:
            start.wait()
            for i in range(EVENTS_EACH):
                append_audit(store, policy, {"event": "bless", "who": f"writer-{w}", "why": str(i)})
        except BaseException as e:  # reported below, failing the test
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    events = read_audit(store, policy)
    assert [e["seq"] for e in events] == list(range(1, WRITERS * EVENTS_EACH + 1))
    # each writer's own events keep its order, and nothing was lost or duplicated
    for w in range(WRITERS):
        assert [e["why"] for e in events if e["who"] == f"writer-{w}"] == [str(i) for i in range(EVENTS_EACH)]
    assert verify_audit(store, policy) == []


def test_order_is_the_counter_not_the_writers_clock(store: LocalStore, policy: str) -> None:
    append_audit(store, policy, {"event": "approve", "who": "a", "when": "2030-01-01T00:00:00+00:00"})
    append_audit(store, policy, {"event": "reject", "who": "b", "when": "2020-01-01T00:00:00+00:00"})
    assert [e["event"] for e in read_audit(store, policy)] == ["approve", "reject"]  # the reject came later


@pytest.mark.parametrize("attack", ["edit", "remove-middle", "remove-last", "edit-last", "renumber", "drop-head"])
def test_a_tampered_or_removed_event_is_detected(store: LocalStore, settings: Settings, policy: str, attack: str):
    bless(store, policy, 4)
    assert verify_audit(store, policy) == []
    if attack == "edit":
        doc = json.loads(chain_path(store, policy, 2).read_text())
        chain_path(store, policy, 2).write_text(json.dumps(doc | {"why": "nothing to see"}))
    elif attack == "remove-middle":
        chain_path(store, policy, 2).unlink()
    elif attack == "remove-last":
        chain_path(store, policy, 4).unlink()
    elif attack == "edit-last":
        doc = json.loads(chain_path(store, policy, 4).read_text())
        chain_path(store, policy, 4).write_text(json.dumps(doc | {"who": "someone else"}))
    elif attack == "renumber":  # the last event replaced by a copy of the first
        chain_path(store, policy, 4).write_bytes(chain_path(store, policy, 1).read_bytes())
    else:
        store.path(f"registry/{policy}/audit/head.json").unlink()
    problems = verify_audit(store, policy)
    expected = {
        "edit": "event 2 .* was changed",
        "remove-middle": "event\\(s\\) 2 .* missing",
        "remove-last": "events 4-4 .* missing",
        "edit-last": "event 4 .* was changed",
        "renumber": "event 4 .* says it is event 1",
        "drop-head": "head .* is missing",
    }[attack]
    assert any(re.search(expected, p) for p in problems), problems
    assert registry_status(store, settings)["policies"][policy]["audit"] == problems


def test_appending_after_a_changed_head_event_is_refused(store: LocalStore, policy: str) -> None:
    bless(store, policy, 2)
    # a forged event slipped in at the next number, not following the chain
    chain_path(store, policy, 3).write_text(json.dumps({"event": "approve", "who": "eve", "seq": 3, "prev": "f" * 64}))
    with pytest.raises(AuditChainBroken, match="does not follow event 2"):
        append_audit(store, policy, {"event": "bless", "who": "gate"})


def test_a_crash_between_event_and_head_swap_is_repaired_by_the_next_writer(store: LocalStore, policy: str) -> None:
    bless(store, policy, 2)
    head = store.path(f"registry/{policy}/audit/head.json")
    stale = head.read_bytes()
    bless(store, policy, 1)
    head.write_bytes(stale)  # as if the writer of event 3 died before moving the head
    assert verify_audit(store, policy) == []  # a lagging head is not tampering
    key = append_audit(store, policy, {"event": "bless", "who": "gate", "why": "after the crash"})
    assert key.endswith("/000000000004.json")
    assert [e["seq"] for e in read_audit(store, policy)] == [1, 2, 3, 4] and verify_audit(store, policy) == []


def test_events_from_before_the_chain_are_read_first(store: LocalStore, policy: str) -> None:
    legacy = store.path(f"registry/{policy}/audit/20240101T000000.000000Z-{'a' * 32}.json")
    legacy.parent.mkdir(parents=True)
    legacy.write_text(json.dumps({"event": "approve", "who": "old", "when": "2024-01-01T00:00:00+00:00"}))
    bless(store, policy, 1)
    assert [e["who"] for e in read_audit(store, policy)] == ["old", "gate"]
    assert verify_audit(store, policy) == []


def _digest(store: LocalStore, tmp_path: Path) -> str:
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "model.json").write_text('{"family": "baseline"}')
    return publish_model(store, folder)


def _register(store: LocalStore, settings: Settings, policy: str, digest: str) -> str:
    return register_version(
        store, settings, policy=policy, model_digest=digest, thresholds={"spam": 0.5},
        blessing={"blessed": True, "reasons": []}, metrics={}, lineage={}, run_id="r1", mlflow_run_id=None,
        family="baseline", by="trainer", principal="test:trainer",
    ).version  # fmt: skip


def test_a_crash_after_the_champion_swap_shows_in_status(
    store: LocalStore, settings: Settings, policy: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    digest = _digest(store, tmp_path)
    v1 = _register(store, settings, policy, digest)
    real_append = registry_core.append_audit

    def crash_on_completion(store_: Any, policy_: str, event: dict[str, Any]) -> str:
        if event["event"] == "promote":
            raise SystemExit("killed between the swap and the audit write")
        return real_append(store_, policy_, event)

    monkeypatch.setattr(registry_core, "append_audit", crash_on_completion)
    with pytest.raises(SystemExit):
        registry_core.move_alias(store, settings, policy=policy, alias="champion", to_version=v1,
                                 expected_version=None, by="releaser", reason="ok", event="promote")  # fmt: skip
    monkeypatch.undo()
    pointer, _ = read_alias(store, policy, "champion")
    assert pointer is not None and pointer.version == v1  # the swap happened
    assert not [e for e in read_audit(store, policy) if e["event"] == "promote"]  # its audit event did not
    unfinished = registry_status(store, settings)["policies"][policy]["unfinished"]
    assert len(unfinished) == 1 and f"promote of champion – → {v1}" in unfinished[0]
    assert "the swap happened" in unfinished[0]

    # a completed move closes its intent; a move that loses its race is closed by an abandon event
    v2 = _register(store, settings, policy, digest)
    registry_core.move_alias(store, settings, policy=policy, alias="challenger", to_version=v2,
                             expected_version=None, by="trainer", reason="blessed")  # fmt: skip
    assert len(registry_status(store, settings)["policies"][policy]["unfinished"]) == 1
    events = read_audit(store, policy)
    intent, move = events[-2], events[-1]
    assert (intent["event"], move["event"]) == ("intent", "move") and intent["intent"] == move["intent"]


def test_a_move_that_loses_its_race_abandons_its_intent(
    store: LocalStore, settings: Settings, policy: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harmguard.storage import LostRace

    digest = _digest(store, tmp_path)
    v1 = _register(store, settings, policy, digest)

    real_swap = store.compare_and_swap

    def lose(key: str, data: bytes, token: str | None) -> str:
        if key.endswith("/champion.json"):  # another promotion swaps between this one's check and its swap
            raise LostRace("someone else moved it")
        return real_swap(key, data, token)

    monkeypatch.setattr(store, "compare_and_swap", lose)
    with pytest.raises(LostRace):
        registry_core.move_alias(store, settings, policy=policy, alias="champion", to_version=v1,
                                 expected_version=None, by="releaser", reason="ok", event="promote")  # fmt: skip
    monkeypatch.undo()
    assert [e["event"] for e in read_audit(store, policy)][-2:] == ["intent", "abandon"]
    assert registry_status(store, settings)["policies"][policy]["unfinished"] == []
