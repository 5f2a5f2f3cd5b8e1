"""gs:// artifact roots against fake-gcs-server: preconditions, the store protocol, racing CAS, faults, a full run."""

from __future__ import annotations

import json
import multiprocessing as mp
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harmguard import registry
from harmguard.digests import model_digest
from harmguard.registry import core as registry_core
from harmguard.registry.models import download_model
from harmguard.settings import Settings
from harmguard.storage import LostRace, StoreError, open_store
from harmguard.storage.gcs import MANIFEST, PENDING, GCSStore, make_client, open_uri
from tests.support.gcs_emulator import FaultProxy, fake_gcs_server, move_champion_worker

BUCKET = "harmguard-test"
RACERS = 8
JOIN_TIMEOUT_S = 120
FAST_RETRY = {"initial_backoff_s": 0.01, "max_backoff_s": 0.05, "deadline_s": 30.0, "timeout_s": 10.0}


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """fake-gcs-server on a free loopback port, STORAGE_EMULATOR_HOST pointing at it, one bucket."""
    with fake_gcs_server(tmp_path_factory.mktemp("fake-gcs")) as url, pytest.MonkeyPatch.context() as mp_env:
        mp_env.setenv("STORAGE_EMULATOR_HOST", url)
        make_client().create_bucket(BUCKET)
        yield url


@pytest.fixture
def home(emulator: str) -> str:
    return f"gs://{BUCKET}/t-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def store(home: str, tmp_path: Path) -> GCSStore:
    return GCSStore(home, cache_dir=tmp_path / "cache", **FAST_RETRY)  # type: ignore[arg-type]


@pytest.fixture
def no_mlflow(monkeypatch: pytest.MonkeyPatch) -> None:
    # The MLflow mirror is covered by test_registry (and by the full run below); these tests are about the store.
    monkeypatch.setattr(registry_core, "mirror_version", lambda *a, **k: "1")
    monkeypatch.setattr(registry_core, "sync_alias", lambda *a, **k: None)


def make_model(folder: Path, weights: str = "w0") -> Path:
    (folder / "tokenizer").mkdir(parents=True)
    (folder / "config.json").write_text('{"family": "baseline"}')
    (folder / "weights.npy").write_text(weights * 1000)
    (folder / "tokenizer" / "vocab.txt").write_text("a\nb\n")
    return folder


def gcs_settings(home: str, tmp_path: Path) -> Settings:
    return Settings(home=home, cache=tmp_path / "cache", mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")


def register(store: Any, settings: Settings, policy: str, digest: str) -> registry.VersionRecord:
    return registry.register_version(
        store,
        settings,
        policy=policy,
        model_digest=digest,
        thresholds={"spam": 0.5},
        blessing={"blessed": True, "reasons": []},
        metrics={},
        lineage={"data_version": "d" * 64},
        run_id="r1",
        mlflow_run_id=None,
        family="baseline",
        by="trainer",
    )


# --- the emulator itself ----------------------------------------------------------------------------------------


def test_emulator_honours_generation_preconditions(emulator: str) -> None:
    """What harmguard relies on: a multipart upload with a stale ifGenerationMatch is refused with 412."""
    from google.api_core.exceptions import PreconditionFailed

    bucket = make_client().bucket(BUCKET)
    name = f"selftest/{uuid.uuid4().hex}"
    blob = bucket.blob(name)
    blob.chunk_size = None  # multipart: the upload kind GCSStore uses
    blob.upload_from_string(b"1", if_generation_match=0)
    first = blob.generation
    with pytest.raises(PreconditionFailed):  # create-only on an existing name
        bucket.blob(name).upload_from_string(b"2", if_generation_match=0)
    second = bucket.blob(name)
    second.upload_from_string(b"2", if_generation_match=first)  # the current generation: accepted
    assert second.generation != first
    with pytest.raises(PreconditionFailed):  # a stale generation: refused
        bucket.blob(name).upload_from_string(b"3", if_generation_match=first)
    assert bucket.blob(name).download_as_bytes() == b"2"

    # Documented, not relied on: this emulator ignores preconditions on DELETE and on copy (rewrite). If these
    # start failing, the emulator got stricter; harmguard never issues conditional deletes or copies.
    bucket.blob(f"{name}-copy").upload_from_string(b"c", if_generation_match=0)
    bucket.copy_blob(bucket.blob(name), bucket, f"{name}-copy", if_generation_match=0)
    assert bucket.blob(f"{name}-copy").download_as_bytes() == b"2"
    bucket.blob(name).delete(if_generation_match=first)  # stale generation, deleted all the same
    assert not bucket.blob(name).exists()


# --- the store protocol (mirrors tests/storage/test_storage.py) ----------------------------------------------


def test_open_store_and_uris(home: str) -> None:
    store = open_store(home)
    assert isinstance(store, GCSStore) and store.uri == home
    assert store.uri_for("models/x/a.json") == f"{home}/models/x/a.json"
    with pytest.raises(StoreError, match="plain relative path"):
        store.write_atomic("../outside", b"x")


def test_atomic_write_create_only_and_cas(store: GCSStore) -> None:
    store.write_atomic("a/b.json", b"1")
    store.write_atomic("a/b.json", b"2")
    assert store.read_bytes("a/b.json") == b"2"
    assert store.create_only("a/c", b"x") is True
    assert store.create_only("a/c", b"y") is False
    assert store.read_bytes("a/c") == b"x"
    assert store.exists("a/c") and store.exists("a") and not store.exists("nothing")
    assert store.list("a") == ["a/b.json", "a/c"]
    with pytest.raises(FileNotFoundError):
        store.read_bytes("a/missing")

    assert store.read_versioned("ptr.json") == (None, None)
    t1 = store.compare_and_swap("ptr.json", b"v1", None)
    with pytest.raises(LostRace):
        store.compare_and_swap("ptr.json", b"v2", None)  # someone already created it
    t2 = store.compare_and_swap("ptr.json", b"v2", t1)
    with pytest.raises(LostRace):
        store.compare_and_swap("ptr.json", b"v3", t1)  # stale token
    assert store.read_versioned("ptr.json") == (b"v2", t2)


def test_put_tree_create_only_and_verify(store: GCSStore, tmp_path: Path) -> None:
    src = make_model(tmp_path / "src")
    digest = model_digest(src)
    assert store.put_tree_create_only(src, f"models/{digest}") is True
    (src / "config.json").write_text('{"changed": 1}')
    assert store.put_tree_create_only(src, f"models/{digest}") is False  # never rewritten
    assert store.list("models") == [
        f"models/{digest}/config.json",
        f"models/{digest}/tokenizer/vocab.txt",
        f"models/{digest}/weights.npy",
    ]
    folder = registry.verify_model(store, digest)
    assert model_digest(folder) == digest and (folder / "config.json").read_text() == '{"family": "baseline"}'
    assert registry.verify_model(store, digest) == folder  # the verified cache is reused
    # what serving uses for a gs:// model URI
    from harmguard.models.loading import verify_model_dir

    served = download_model(store.uri_for(f"models/{digest}"), tmp_path / "serve-cache")
    assert model_digest(served) == digest
    assert model_digest(verify_model_dir(store.uri_for(f"models/{digest}"), digest)) == digest

    # tampering in the bucket is refused, even with a cached copy present
    bucket = make_client().bucket(BUCKET)
    bucket.blob(f"{store.prefix}/models/{digest}/weights.npy").upload_from_string(b"swapped")
    with pytest.raises(registry.TamperedModelError, match="modified"):
        registry.verify_model(store, digest)
    with pytest.raises(FileNotFoundError):
        registry.verify_model(store, "0" * 64)


def test_a_partial_tree_is_never_trusted(store: GCSStore, settings_home: Any, tmp_path: Path) -> None:
    # A writer that died after some files: pending marker and a file, no manifest.
    src = make_model(tmp_path / "src")
    digest = model_digest(src)
    store.create_only(f"models/{digest}/{PENDING}", b"")
    store.create_only(f"models/{digest}/config.json", (src / "config.json").read_bytes())
    assert not store.exists(f"models/{digest}")
    with pytest.raises(FileNotFoundError):
        registry.verify_model(store, digest)
    with pytest.raises(ValueError, match="not published"):
        register(store, settings_home, "pol", digest)
    # publishing again completes it (files already there with the same bytes are accepted)
    assert registry.publish_model(store, src) == digest
    assert store.exists(f"models/{digest}") and store.exists(f"models/{digest}/{MANIFEST}")
    assert registry.verify_model(store, digest).is_dir()


@pytest.fixture
def settings_home(home: str, tmp_path: Path, no_mlflow: None) -> Settings:
    return gcs_settings(home, tmp_path)


def test_read_table_from_gs(store: GCSStore, tmp_path: Path) -> None:
    from harmguard.storage.readers import read_table

    store.write_atomic("data/t.csv", b'id,text\n1,"a, quoted\nnewline"\n2,b\n')
    frame = read_table(store.uri_for("data/t.csv"), string_columns=["id"])
    assert frame["text"].tolist() == ["a, quoted\nnewline", "b"] and frame["id"].tolist() == ["1", "2"]
    assert open_uri(store.uri_for("data/t.csv")).read(2) == b"id"
    with pytest.raises(ValueError, match="not found"):
        read_table(store.uri_for("data/missing.csv"))


def test_no_credentials_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    with pytest.raises(StoreError, match="Application Default Credentials"):
        GCSStore("gs://bucket/prefix")


# --- racing alias moves -----------------------------------------------------------------------------------------


def test_racing_champion_moves_on_gcs_have_exactly_one_winner(
    home: str, store: GCSStore, settings_home: Settings, tmp_path: Path
) -> None:
    policy = "race"
    digest = registry.publish_model(store, make_model(tmp_path / "export"))
    versions = [register(store, settings_home, policy, digest).version for _ in range(RACERS)]
    ctx = mp.get_context("spawn")
    start, out = ctx.Barrier(RACERS), ctx.Queue()
    procs = [
        ctx.Process(target=move_champion_worker, args=(home, settings_home, policy, v, start, out)) for v in versions
    ]
    for p in procs:
        p.start()
    results = [out.get(timeout=JOIN_TIMEOUT_S) for _ in procs]
    for p in procs:
        p.join(JOIN_TIMEOUT_S)

    winners = [v for v, outcome, _ in results if outcome == "won"]
    losers = [msg for _, outcome, msg in results if outcome == "lost"]
    assert len(winners) == 1 and len(losers) == RACERS - 1, results
    assert all(f"points to {winners[0]}" in msg for msg in losers)  # each loser is told who holds it
    pointer, token = registry.read_alias(store, policy, "champion")
    assert pointer is not None and pointer.version == winners[0] and pointer.by == f"racer-{winners[0]}"
    assert token is not None and token.isdigit()  # the generation
    moves = [e for e in registry.read_audit(store, policy) if e["event"] == "move"]
    assert len(moves) == 1 and moves[0]["to"] == winners[0] and moves[0]["from"] is None
    assert len([e for e in registry.read_audit(store, policy) if e["event"] == "register"]) == RACERS
    # racers that got past the first check wrote an intent, the losers among them an abandon, all into one chain
    # numbered 1..n by GCS preconditions; no intent is left open
    events = registry.read_audit(store, policy)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1)) and registry.verify_audit(store, policy) == []
    kinds = [e["event"] for e in events]
    assert kinds.count("intent") == kinds.count("abandon") + 1 and registry.unfinished_moves(store, policy) == []


# --- faults -----------------------------------------------------------------------------------------------------


def test_writes_survive_503s_and_resets_and_never_register_a_partial_model(
    emulator: str, home: str, settings_home: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean = GCSStore(home, cache_dir=tmp_path / "clean-cache", **FAST_RETRY)  # type: ignore[arg-type]
    with FaultProxy(emulator, p503=0.15, p_reset=0.1, p_lost=0.1, seed=7) as proxy:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
        faulty = GCSStore(home, cache_dir=tmp_path / "cache", **FAST_RETRY)  # type: ignore[arg-type]

        # create-only and CAS under faults: a lost response followed by a 412 on retry is still this writer's win
        created = [faulty.create_only(f"objs/{i}", f"content {i}".encode()) for i in range(20)]
        assert created == [True] * 20
        token = None
        for i in range(10):
            token = faulty.compare_and_swap("ptr.json", f"v{i}".encode(), token)
        assert clean.read_versioned("ptr.json") == (b"v9", token)

        # publish and register several models: retries carry every one through the faults, and none is half-made
        outcomes = []
        for i in range(4):
            src = make_model(tmp_path / f"m{i}", weights=f"w{i}")
            digest = registry.publish_model(faulty, src)
            outcomes.append(("ok", register(faulty, settings_home, "faults", digest).version))
        assert min(proxy.counts[k] for k in ("503", "reset", "lost")) >= 2, proxy.counts  # every fault kind hit

    for record in registry.list_versions(clean, "faults"):
        # every registered version names a complete model whose files hash to its digest
        assert model_digest(registry.verify_model(clean, record.model_digest)) == record.model_digest
    assert (
        [v for _, v in outcomes]
        == [r.version for r in registry.list_versions(clean, "faults")]
        == [f"faults/{n}" for n in range(1, 5)]
    ), outcomes
    for key in clean.list("objs"):
        assert clean.read_bytes(key) == f"content {key.rsplit('/', 1)[1]}".encode()


def test_a_failed_write_is_clean_when_the_server_stays_down(
    emulator: str, home: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from google.api_core.exceptions import RetryError

    clean = GCSStore(home, **FAST_RETRY)  # type: ignore[arg-type]
    with FaultProxy(emulator, p503=1.0, p_reset=0, p_lost=0) as proxy:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
        faulty = GCSStore(home, initial_backoff_s=0.01, max_backoff_s=0.02, deadline_s=1.0, timeout_s=5.0)
        src = make_model(tmp_path / "m")
        with pytest.raises(RetryError, match="Timeout of 1.0s exceeded") as failed:
            registry.publish_model(faulty, src)
        assert "503" in str(failed.value.cause)  # the server's answer, retried until the deadline
        assert proxy.counts["503"] >= 2
    assert not clean.exists(f"models/{model_digest(src)}")  # nothing that looks published


# --- a full run on gs:// ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_full_run_on_gcs_registers_a_model(emulator: str, home: str, tmp_path: Path, mirror: Path) -> None:
    from tests.conftest import run_cli

    env = {
        **__import__("os").environ,
        "HARMGUARD_HOME": home,
        "HARMGUARD_CACHE": str(tmp_path / "cache"),
        "HARMGUARD_DATA_MIRROR": str(mirror),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "STORAGE_EMULATOR_HOST": emulator,
        "GX_ANALYTICS_ENABLED": "False",
    }
    result = run_cli(["run", "--policy", "sms_spam", "--sample", "1500", "--json"], env)
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["version"] == "sms_spam/1" and summary["report"].startswith(f"{home}/runs/")
    store = GCSStore(home, cache_dir=tmp_path / "verify")
    record = registry.get_version(store, "sms_spam/1")
    assert record.model_uri == f"{home}/models/{record.model_digest}"
    assert model_digest(registry.verify_model(store, record.model_digest)) == record.model_digest
    challenger, _ = registry.read_alias(store, "sms_spam", "challenger")
    assert challenger is not None and challenger.version == "sms_spam/1"
    assert store.exists(f"snapshots/{summary['data_version']}")
    # the version's MLflow model (MLmodel + pointer) lands in the bucket beside the experiment's artifacts
    assert store.exists("mlflow-artifacts/sms_spam/versions/1/MLmodel")
    assert store.exists("mlflow-artifacts/sms_spam/versions/1/harmguard.json")
