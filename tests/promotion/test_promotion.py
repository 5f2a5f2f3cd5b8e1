"""Promotion and rollback at the library level, plus one real `harmguard promote` through kfp.local via the CLI."""

from __future__ import annotations

import json
import multiprocessing as mp
import shutil
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from harmguard.promotion.approval import approve_version, reject_version
from harmguard.promotion.deploy import render_rayservice_patch
from harmguard.promotion.golden import MIN_AGREEMENT, meets, required_agreement
from harmguard.promotion.promote import PromotionRefused, promote_version, register_thresholds_change, rollback_champion
from harmguard.registry import move_alias, read_alias, read_audit
from harmguard.registry.models import publish_model
from harmguard.serving.config import ENDPOINT_KEY, Autoscaling, ServeArgs, build_serve_config, user_config_for
from harmguard.settings import Settings
from harmguard.storage import LocalStore
from tests.conftest import mirror_dir, run_cli
from tests.promotion.helpers import GOLDEN, golden_of, promote_worker, register, train_spam_model

RACERS = 8
JOIN_TIMEOUT_S = 180


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    mirror = mirror_dir()
    base = tmp_path_factory.mktemp("model")
    return train_spam_model(base / "export", base / "cache", mirror)


@pytest.fixture(scope="module")
def golden(model_dir: Path) -> dict[str, Any]:
    measured = golden_of(model_dir)
    assert measured is not None
    return measured


@pytest.fixture
def settings(tmp_path: Path, mlflow_uri: str) -> Settings:
    return Settings(home=str(tmp_path / "home"), cache=tmp_path / "cache", mlflow_tracking_uri=mlflow_uri)


@pytest.fixture
def policy() -> str:
    return f"spam-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def digest(store: LocalStore, model_dir: Path) -> str:
    return publish_model(store, model_dir)  # a fresh copy per home: tampering stays in the test


def promote(store: LocalStore, settings: Settings, version: str, **kw: Any) -> dict[str, Any]:
    return promote_version(store, settings, version, by="releaser", run_id=f"promote-{uuid.uuid4().hex[:6]}",
                           golden_path=GOLDEN, **kw)  # fmt: skip


def flat(text: str) -> str:
    return " ".join(text.split())  # rich wraps long lines


def champion_of(store: LocalStore, policy: str) -> str | None:
    pointer, _ = read_alias(store, policy, "champion")
    return pointer.version if pointer else None


def test_approved_version_is_promoted_and_rolled_back(store, settings, policy, digest, golden):
    v1 = register(store, settings, policy, digest, golden=golden)
    approve_version(store, v1.version, by="reviewer", principal="test:reviewer", reason="first champion")
    t0 = time.monotonic()
    result = promote(store, settings, v1.version)
    took = time.monotonic() - t0
    assert champion_of(store, policy) == v1.version and result["previous"] is None
    assert result["infra"]["agreement"] == pytest.approx(golden["agreement"]) and result["infra"]["rows"] >= 50
    assert result["infra"]["required_from"] == "measured at registration"
    assert "no local server" in result["deploy"]["note"] and not result["deploy"]["pushed"]
    patch = yaml.safe_load(Path(result["deploy"]["patch"]).read_text())
    serve = yaml.safe_load(patch["spec"]["serveConfigV2"])
    app = next(a for a in serve["applications"] if a["import_path"] == "harmguard.serving.app:build_app")
    assert next(d for d in app["deployments"] if d["name"] == "Classifier")["user_config"]["model_digest"] == digest
    print(f"library promotion wall time: {took:.2f} s")

    v2 = register(store, settings, policy, digest, champion=v1, thresholds={"spam": 0.6}, golden=golden_of(
        store.path(f"models/{digest}"), {"spam": 0.6}))  # fmt: skip
    with pytest.raises(PromotionRefused, match="already the champion"):
        promote(store, settings, v1.version)
    approve_version(store, v2.version, by="reviewer", principal="test:reviewer", reason="better")
    assert promote(store, settings, v2.version)["previous"] == v1.version
    pointer, _ = read_alias(store, policy, "champion")
    assert pointer is not None and (pointer.version, pointer.previous) == (v2.version, v1.version)

    restored = rollback_champion(store, settings, policy, by="oncall", reason="spike in appeals", run_id="rb-1")
    assert restored["version"] == v1.version and restored["previous"] == v2.version
    assert champion_of(store, policy) == v1.version
    events = [e for e in read_audit(store, policy) if e["event"] in ("promote", "rollback")]
    assert [(e["event"], e["from"], e["to"], e["who"]) for e in events] == [
        ("promote", None, v1.version, "releaser"),
        ("promote", v1.version, v2.version, "releaser"),
        ("rollback", v2.version, v1.version, "oncall"),
    ]
    assert events[-1]["why"] == "spike in appeals"
    assert Path(restored["deploy"]["patch"]).is_file()


def promoted_pair(store, settings, policy, digest, golden):
    """v1 approved and promoted, then v2 (blessed against v1) approved and promoted: champion v2, previous v1."""
    v1 = register(store, settings, policy, digest, golden=golden)
    approve_version(store, v1.version, by="reviewer", principal="test:reviewer", reason="first")
    promote(store, settings, v1.version)
    v2 = register(store, settings, policy, digest, champion=v1, golden=golden)
    approve_version(store, v2.version, by="reviewer", principal="test:reviewer", reason="second")
    promote(store, settings, v2.version)
    return v1, v2


def rollback(store, settings, policy, **kw):
    return rollback_champion(store, settings, policy, by="oncall", reason="appeals spiked", run_id="rb", **kw)


def test_rollback_to_a_version_rejected_since_is_refused_unless_overridden(store, settings, policy, digest, golden):
    v1, v2 = promoted_pair(store, settings, policy, digest, golden)
    reject_version(store, v1.version, by="lead", principal="test:lead", reason="found a bias regression")
    with pytest.raises(PromotionRefused, match=f"cannot roll back to {v1.version}: .*rejected by lead"):
        rollback(store, settings, policy)
    assert champion_of(store, policy) == v2.version
    assert not [e for e in read_audit(store, policy) if e["event"] == "rollback"]

    restored = rollback(store, settings, policy, override=True)
    assert restored["version"] == v1.version and restored["override"] is True
    events = read_audit(store, policy)
    override = next(e for e in events if e["event"] == "override")
    assert (override["action"], override["version"], override["why"]) == ("rollback", v1.version, "appeals spiked")
    assert "rejected by lead" in override["overridden"]
    done = next(e for e in events if e["event"] == "rollback")
    assert done["override"] is True and override["seq"] < done["seq"]  # the override is written before the swap


def test_rolling_back_twice_does_not_repromote_a_rejected_version(store, settings, policy, digest, golden):
    v1, v2 = promoted_pair(store, settings, policy, digest, golden)
    assert rollback(store, settings, policy)["version"] == v1.version  # v1's approval still holds
    reject_version(store, v2.version, by="lead", principal="test:lead", reason="the reason we rolled back")
    with pytest.raises(PromotionRefused, match=f"cannot roll back to {v2.version}: .*rejected"):
        rollback(store, settings, policy)  # the pointer's previous is v2 now
    assert champion_of(store, policy) == v1.version


def test_rollback_to_a_version_whose_approval_expired_is_refused(store, settings, policy, digest, golden):
    v1, v2 = promoted_pair(store, settings, policy, digest, golden)
    later = lambda: datetime.now(UTC) + timedelta(hours=25)  # noqa: E731 - past the 24 h approval TTL
    with pytest.raises(PromotionRefused, match=f"cannot roll back to {v1.version}: .*expired"):
        rollback(store, settings, policy, clock=later)
    assert champion_of(store, policy) == v2.version


@pytest.mark.parametrize("case", ["unapproved", "expired", "rejected", "tampered", "stale-champion", "golden"])
def test_refused_promotions_leave_the_champion_unchanged(store, settings, policy, digest, golden, case):
    champ = register(store, settings, policy, digest, golden=golden)
    move_alias(store, settings, policy=policy, alias="champion", to_version=champ.version, expected_version=None,
               by="setup", reason="setup")  # fmt: skip
    other = register(store, settings, policy, digest, golden=golden)  # a version unrelated to the candidate
    blessed_against = other if case == "stale-champion" else champ
    recorded = golden | {"agreement": 1.0} if case == "golden" else golden  # registration measured perfect agreement
    cand = register(store, settings, policy, digest, champion=blessed_against, golden=recorded)
    clock = None
    if case != "unapproved":
        approve_version(store, cand.version, by="reviewer", principal="test:reviewer", reason="ok")
    if case == "expired":
        clock = lambda: datetime.now(UTC) + timedelta(hours=25)  # noqa: E731 - past the 24 h approval TTL
    if case == "rejected":
        reject_version(store, cand.version, by="lead", principal="test:lead", reason="flipped decisions on short texts")
    if case == "tampered":
        victim = sorted(p for p in store.path(f"models/{digest}").iterdir() if p.suffix == ".npy")[0]
        data = bytearray(victim.read_bytes())
        data[-1] ^= 0x01  # one byte
        victim.write_bytes(bytes(data))
    expected = {
        "unapproved": "has no approval",
        "expired": "expired at",
        "rejected": "rejected by lead",
        "tampered": "was modified",
        "stale-champion": f"compared it against champion {other.version}",
        "golden": "needs 1.000",
    }[case]
    kwargs = {"clock": clock} if clock else {}
    with pytest.raises(PromotionRefused, match=expected):
        promote(store, settings, cand.version, **kwargs)
    assert champion_of(store, policy) == champ.version
    assert not [e for e in read_audit(store, policy) if e["event"] == "promote"]


def test_racing_promotions_have_exactly_one_winner(store, settings, policy, digest, golden):
    champ = register(store, settings, policy, digest, golden=golden)
    move_alias(store, settings, policy=policy, alias="champion", to_version=champ.version, expected_version=None,
               by="setup", reason="setup")  # fmt: skip
    versions = [register(store, settings, policy, digest, champion=champ, golden=golden).version for _ in range(RACERS)]
    for v in versions:
        approve_version(store, v, by="reviewer", principal="test:reviewer", reason="race")
    ctx = mp.get_context("spawn")
    start, out = ctx.Barrier(RACERS), ctx.Queue()
    procs = [ctx.Process(target=promote_worker, args=(store, settings, v, start, out)) for v in versions]
    for p in procs:
        p.start()
    results = [out.get(timeout=JOIN_TIMEOUT_S) for _ in procs]
    for p in procs:
        p.join(JOIN_TIMEOUT_S)
    winners = [v for v, outcome, _ in results if outcome == "won"]
    losers = [msg for _, outcome, msg in results if outcome == "lost"]
    assert len(winners) == 1 and len(losers) == RACERS - 1, results
    assert all(winners[0] in msg for msg in losers), losers  # each loser is told who holds the champion now
    pointer, _ = read_alias(store, policy, "champion")
    assert pointer is not None and (pointer.version, pointer.previous) == (winners[0], champ.version)
    promotes = [e for e in read_audit(store, policy) if e["event"] == "promote"]
    assert [(e["from"], e["to"]) for e in promotes] == [(champ.version, winners[0])]


def test_thresholds_only_change_goes_through_approval(store, settings, policy, digest, golden):
    v1 = register(store, settings, policy, digest, golden=golden)
    approve_version(store, v1.version, by="reviewer", principal="test:reviewer", reason="ok")
    promote(store, settings, v1.version)
    v2 = register_thresholds_change(store, settings, v1.version, {"spam": 0.7}, by="analyst", reason="fewer appeals",
                                    run_id="thr-1", golden_path=GOLDEN)  # fmt: skip
    assert v2.model_digest == v1.model_digest and v2.thresholds == {"spam": 0.7} and not v2.blessed
    assert v2.blessing["champion"] == {"version": v1.version, "model_digest": digest}
    assert v2.metrics["golden"]["golden_digest"] == golden["golden_digest"]
    with pytest.raises(PromotionRefused, match="has no approval"):
        promote(store, settings, v2.version)
    with pytest.raises(Exception, match="--override-gate"):
        approve_version(store, v2.version, by="reviewer", principal="test:reviewer", reason="ok")
    approve_version(
        store, v2.version, by="reviewer", principal="test:reviewer", reason="reviewed FPR", override_gate=True
    )
    result = promote(store, settings, v2.version)
    assert result["previous"] == v1.version
    assert [e["event"] for e in read_audit(store, policy)].count("thresholds") == 1


def test_required_agreement_and_rendering(store, settings, policy, digest, golden):
    assert required_agreement({"agreement": 0.95, "golden_digest": "a"}, "a") == (0.95, "measured at registration")
    assert required_agreement({"agreement": 0.95, "golden_digest": "a"}, "b")[0] == MIN_AGREEMENT
    assert required_agreement(None, "a")[0] == MIN_AGREEMENT
    assert meets(0.9, 0.9) and not meets(0.89, 0.9)
    rec = register(store, settings, policy, digest, golden=golden)
    assert user_config_for(rec).dump() == {
        "policy": policy,
        "version": rec.version,
        "model_uri": rec.model_uri,
        "model_digest": digest,
        "thresholds": {"spam": 0.5},
        "thresholds_version": rec.thresholds_version,
    }
    patch = render_rayservice_patch(rec)
    assert patch.startswith(f"# Promote {rec.version}")
    # The patch carries the whole Serve config the shipped RayService has (autoscaling, health checks), not a
    # user_config grafted onto a file of the source checkout.
    serve_config = yaml.safe_load(yaml.safe_load(patch)["spec"]["serveConfigV2"])
    assert serve_config == build_serve_config(ServeArgs(user_config=user_config_for(rec)), autoscaling=Autoscaling())
    model = serve_config["applications"][0]["deployments"][0]
    assert model["autoscaling_config"]["max_replicas"] >= 1 and model["health_check_period_s"] > 0


def test_promote_pushes_the_version_with_the_admin_token_to_a_running_local_server(
    store, settings, policy, digest, golden
):
    """The push names the version only (the server resolves the rest) and carries the server's per-start token."""
    import http.server
    import threading

    from harmguard.serving.admin import admin_token_path, create_admin_token

    received: list[tuple[str | None, dict[str, Any]]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            received.append((self.headers.get("Authorization"), body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    token = create_admin_token(admin_token_path(store))
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/admin/user-config"
        store.write_atomic(ENDPOINT_KEY, json.dumps({"user_config_url": url, "pid": None}).encode())
        v1 = register(store, settings, policy, digest, golden=golden)
        approve_version(store, v1.version, by="reviewer", principal="test:reviewer", reason="ok")
        result = promote(store, settings, v1.version)
    finally:
        server.shutdown()
    assert result["deploy"]["pushed"] and received == [(f"Bearer {token}", {"version": v1.version})]


def test_promote_cli_end_to_end_through_kfp_local(hg_env, settings, model_dir):
    """Register at the library level, then approve, promote, inspect and roll back through the CLI."""
    store = LocalStore(settings.home)
    home_model = Path(settings.home) / "export"
    shutil.copytree(model_dir, home_model)
    digest = publish_model(store, home_model)
    v1 = register(store, settings, "sms_spam", digest, by="trainer", golden=golden_of(home_model))

    refused = run_cli(["promote", v1.version, "--by", "releaser", "--json"], hg_env)
    assert refused.returncode == 3 and "has no approval" in flat(refused.stderr), refused.stderr[-2000:]
    assert champion_of(store, "sms_spam") is None

    ok = run_cli(["approve", v1.version, "--by", "reviewer", "--reason", "report reviewed"], hg_env)
    assert ok.returncode == 0, ok.stderr

    t0 = time.monotonic()
    proc = run_cli(["promote", v1.version, "--by", "releaser", "--json"], hg_env)
    took = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["ok"] and summary["champion"]["version"] == v1.version
    assert set(summary["steps"]) == {"verify-approval", "check-champion", "validate-infra", "move-champion", "deploy"}
    assert (Path(settings.home) / "runs" / summary["run_id"] / "rayservice-patch.yaml").is_file()
    print(f"CLI promotion wall time (kfp.local, incl. interpreter start): {took:.1f} s")

    status = run_cli(["status", "--json"], hg_env)
    pol = json.loads(status.stdout)["policies"]["sms_spam"]
    assert pol["champion"]["version"] == v1.version and pol["mismatches"] == []
    assert pol["overrides"] == [] and pol["last_events"][-1]["event"] == "promote"

    rollback = run_cli(["rollback", "--policy", "sms_spam", "--by", "oncall", "--reason", "test"], hg_env)
    assert rollback.returncode == 3 and "no previous version" in flat(rollback.stderr)
    assert champion_of(store, "sms_spam") == v1.version
