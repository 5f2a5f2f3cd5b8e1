"""Serving on this machine: pick the version, run the Serve app on loopback, serve pushed champions, stop it.

``harmguard serve`` runs ``run_local_server`` in the foreground. It announces itself in
``HARMGUARD_HOME/serve/endpoint.json`` (``url``, ``user_config_url``, ``pid``, ``policy``, ``version``...). After a
promotion or rollback moves ``champion``, ``harmguard.promotion.deploy`` POSTs the version id to ``user_config_url``,
the admin route (``harmguard.serving.admin``: 127.0.0.1 only, a per-start token from an owner-only file); the server
takes model, digest and thresholds from the registry, serves the version only while ``champion`` names it, verifies
the model digest and redeploys the application with the new ``user_config``, which Serve applies to the running
replicas through ``reconfigure``. A process that is itself the Ray driver (tests, notebooks) calls
``apply_user_config`` directly.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from harmguard.models.base import read_model_meta
from harmguard.models.decide import check_thresholds
from harmguard.models.loading import ModelDigestMismatch, verify_model_dir
from harmguard.registry import VersionRecord, get_version, read_alias
from harmguard.serving.admin import AdminServer, NotChampion, admin_token_path, champion_user_config, create_admin_token
from harmguard.serving.config import (
    ENDPOINT_KEY,
    MODEL_DEPLOYMENT,
    ServeArgs,
    Traffic,
    UserConfig,
    build_serve_config,
)
from harmguard.storage import ArtifactStore, LocalStore

logger = logging.getLogger("harmguard.serving")


class ServeError(RuntimeError):
    """Serving cannot start or a user_config cannot be applied (the message says why)."""


def _policies(store: ArtifactStore) -> list[str]:
    return sorted({key.split("/")[1] for key in store.list("registry") if key.count("/") >= 2})


def resolve_version(store: ArtifactStore, policy: str | None, version: str | None) -> tuple[VersionRecord, str]:
    """The version to serve and a note on how it was chosen.

    ``version`` wins; else the policy's champion; while no champion exists yet, its challenger (with a warning in
    the note). Without a policy: the only policy with a champion (or the only policy at all).
    """
    if version:
        return get_version(store, version), f"serving {version} as asked"
    if policy is None:
        known = _policies(store)
        with_champion = [p for p in known if read_alias(store, p, "champion")[0] is not None]
        candidates = with_champion or known
        if len(candidates) != 1:
            raise ServeError(f"choose a policy with --policy (registered: {known or 'none'})")
        policy = candidates[0]
    champion, _ = read_alias(store, policy, "champion")
    if champion is not None and champion.version:
        return get_version(store, champion.version), f"serving the champion {champion.version}"
    challenger, _ = read_alias(store, policy, "challenger")
    if challenger is not None and challenger.version:
        note = f"WARNING: {policy} has no champion yet; serving its challenger {challenger.version} (not approved)"
        return get_version(store, challenger.version), note
    raise ServeError(f"{policy} has neither a champion nor a challenger: run training first or pass --version")


def recorded_traffic(store: ArtifactStore, record: VersionRecord) -> Traffic:
    """The traffic record settings of the policy file ``record`` was registered with (its ``monitoring``)."""
    import yaml

    from harmguard.policy import Policy
    from harmguard.registry import read_policy_file

    digest = record.lineage.get("policy_digest")
    try:
        doc = yaml.safe_load(read_policy_file(store, digest)) if isinstance(digest, str) and digest else None
        policy = Policy.model_validate(doc) if doc else None
    except (FileNotFoundError, ValueError, yaml.YAMLError):
        policy = None  # registered before policy files were kept: the default sample rate
    return Traffic(sample_rate=policy.monitoring.sample_rate) if policy is not None else Traffic()


def verify_user_config(cfg: UserConfig) -> None:
    """What a replica will check, done first by the caller: digests match and thresholds fit the categories."""
    for spec in (cfg, cfg.shadow) if cfg.shadow else (cfg,):
        folder = verify_model_dir(spec.model_uri, spec.model_digest)
        check_thresholds(read_model_meta(folder)["categories"], spec.thresholds)


_APPLY_TIMEOUT_S = 120.0


def deploy_app(args: ServeArgs, *, app_name: str = "harmguard", verify: bool = True) -> None:
    """Apply the declarative config to the running Serve instance and wait until the replica serves it.

    Args:
        args: Application arguments with the ``user_config`` to serve.
        app_name: Serve application name.
        verify: Check the digest and thresholds here first (``False`` only to test the replica's own refusal).

    Raises:
        ServeError: When the replica refused the config (it keeps serving the previous one) or did not apply it in
            time.
    """
    from ray import serve
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    cfg = args.user_config
    if cfg is None:
        raise ServeError("no user_config: nothing to serve")
    if verify:
        verify_user_config(cfg)
    # The declarative path a RayService takes; serve.run would redeploy replicas on every call.
    client = _get_global_client()
    if client is None:
        raise ServeError("Serve is not running (call start_app first)")
    client.deploy_apps(ServeDeploySchema.model_validate(build_serve_config(args, app_name=app_name)), _blocking=True)
    handle = serve.get_deployment_handle(MODEL_DEPLOYMENT, app_name)
    deadline = time.monotonic() + _APPLY_TIMEOUT_S
    while time.monotonic() < deadline:
        info = handle.info.remote().result()
        if info.get("model_digest") == cfg.model_digest and info.get("thresholds_version") == cfg.thresholds_version:
            if (info.get("shadow_version") is None) == (cfg.shadow is None):
                return
        if info.get("last_refusal") and info.get("refused_version") == cfg.version:
            raise ServeError(f"the replica refused {cfg.version}: {info['last_refusal']}")
        time.sleep(0.2)
    raise ServeError(f"{cfg.version} was not applied within {_APPLY_TIMEOUT_S} s")


def start_app(args: ServeArgs, *, port: int, app_name: str = "harmguard") -> str:
    """Start Ray (if needed) and Serve on 127.0.0.1:``port`` and deploy the app; returns its base URL."""
    import ray
    from ray import serve

    if args.user_config is None:
        raise ServeError("no user_config: nothing to serve")
    verify_user_config(args.user_config)
    if not ray.is_initialized():
        ray.init(include_dashboard=False, logging_level=logging.WARNING)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    deploy_app(args, app_name=app_name)
    return f"http://127.0.0.1:{port}"


def apply_user_config(args: ServeArgs, new: UserConfig | dict[str, Any], *, app_name: str = "harmguard") -> ServeArgs:
    """Verify a new user_config and apply it: Serve calls ``reconfigure`` on the live replicas (no restart).

    Returns:
        The new application arguments. Raises ModelDigestMismatch, ThresholdsError, ValidationError or
        FileNotFoundError, and changes nothing, when the config is refused.
    """
    cfg = UserConfig.model_validate(new)
    verify_user_config(cfg)
    updated = args.model_copy(update={"user_config": cfg})
    deploy_app(updated, app_name=app_name)
    return updated


def serve_push(
    store: ArtifactStore, args: ServeArgs, version: str, *, app_name: str = "harmguard"
) -> tuple[int, dict[str, Any], ServeArgs]:
    """Apply one authenticated push: serve ``version`` if it is the champion now (``admin.champion_user_config``).

    Returns:
        ``(HTTP status, answer, the application arguments now served)``; on a refusal the arguments are unchanged.
    """
    assert args.user_config is not None  # a running server always serves one
    try:
        cfg = champion_user_config(store, args.user_config.policy, version)
        updated = apply_user_config(args, cfg, app_name=app_name)
    except NotChampion as e:
        return 409, {"error": str(e), "applied": False}, args
    except ModelDigestMismatch as e:
        return 409, {"error": str(e), "applied": False}, args
    except (ValidationError, ValueError, LookupError, FileNotFoundError, NotImplementedError) as e:
        return 422, {"error": str(e), "applied": False}, args
    except Exception as e:
        return 500, {"error": f"{type(e).__name__}: {e}", "applied": False}, args
    return 200, {"applied": True, "version": cfg.version, "thresholds_version": cfg.thresholds_version}, updated


def run_local_server(store: ArtifactStore, args: ServeArgs, *, port: int, on_ready: Any = None) -> None:
    """Serve in the foreground until SIGTERM/SIGINT; serves the champion versions pushed to the admin route."""
    from ray import serve

    url = start_app(args, port=port)
    token_path = admin_token_path(store)
    admin = AdminServer(create_admin_token(token_path)).start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    assert args.user_config is not None  # start_app refused otherwise
    endpoint = {
        "url": url,
        "user_config_url": admin.url,
        "pid": os.getpid(),
        "policy": args.user_config.policy,
        "version": args.user_config.version,
        "model_digest": args.user_config.model_digest,
        "thresholds_version": args.user_config.thresholds_version,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    store.write_atomic(ENDPOINT_KEY, json.dumps(endpoint, indent=2).encode())
    if on_ready:
        on_ready(endpoint)
    try:
        while not stop.is_set():
            push = admin.next_push(timeout=0.5)
            if push is None:
                continue
            version, reply = push
            status, answer, args = serve_push(store, args, version)
            if status == 200:
                assert args.user_config is not None
                cfg = args.user_config
                endpoint.update(
                    version=cfg.version, model_digest=cfg.model_digest, thresholds_version=cfg.thresholds_version
                )
                store.write_atomic(ENDPOINT_KEY, json.dumps(endpoint, indent=2).encode())
            reply.put((status, answer))
    finally:
        admin.close()
        token_path.unlink(missing_ok=True)
        _remove_endpoint(store)
        serve.shutdown()


def _remove_endpoint(store: ArtifactStore) -> None:
    if isinstance(store, LocalStore):
        store.path(ENDPOINT_KEY).unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_local_server(store: ArtifactStore, timeout_s: float = 60.0) -> dict[str, Any] | None:
    """Stop the server announced in the endpoint file (SIGTERM, then wait); None when none was running."""
    try:
        doc = json.loads(store.read_bytes(ENDPOINT_KEY))
    except FileNotFoundError:
        return None
    pid = doc.get("pid")
    if not isinstance(pid, int) or not _alive(pid):
        _remove_endpoint(store)
        return None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while _alive(pid):
        if time.monotonic() > deadline:
            raise ServeError(f"server pid {pid} did not stop within {timeout_s} s")
        time.sleep(0.2)
    _remove_endpoint(store)
    return dict(doc)


def find_local_server(store: ArtifactStore) -> dict[str, Any] | None:
    """The running local server's endpoint document, or None when none is announced or its process is gone."""
    try:
        doc = json.loads(store.read_bytes(ENDPOINT_KEY))
    except FileNotFoundError:
        return None
    if not doc.get("user_config_url"):
        return None
    pid = doc.get("pid")
    if isinstance(pid, int) and not _alive(pid):
        return None
    return doc
