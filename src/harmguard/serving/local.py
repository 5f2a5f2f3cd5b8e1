"""Serving on this machine: pick the version, run the Serve app on loopback, push new user_configs, stop it.

``harmguard serve`` runs ``run_local_server`` in the foreground. It announces itself in
``HARMGUARD_HOME/serve/endpoint.json`` (``url``, ``user_config_url``, ``pid``, ``policy``, ``version``...). A new
``user_config`` (``harmguard.promotion.deploy`` POSTs it on promotion) goes to ``user_config_url``, a route of a small
admin server bound to 127.0.0.1 only (loopback is the authentication); the server verifies the model digest and
redeploys the application with the new ``user_config``, which Serve applies to the running replicas through
``reconfigure``. A process that is itself the Ray driver (tests, notebooks) calls ``apply_user_config`` directly.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pydantic import ValidationError

from harmguard.models.base import read_model_meta
from harmguard.models.decide import check_thresholds
from harmguard.models.loading import ModelDigestMismatch, verify_model_dir
from harmguard.registry import VersionRecord, get_version, read_alias
from harmguard.serving.config import (
    ENDPOINT_KEY,
    MODEL_DEPLOYMENT,
    ServeArgs,
    UserConfig,
    build_serve_config,
)
from harmguard.storage import ArtifactStore, LocalStore

logger = logging.getLogger("harmguard.serving")

ADMIN_PATH = "/user_config"
_MAX_ADMIN_BODY = 1 << 20


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


def _admin_server(requests: queue.Queue[tuple[dict[str, Any], queue.Queue[tuple[int, dict[str, Any]]]]]) -> Any:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server API
            if self.path != ADMIN_PATH:
                return self._answer(404, {"error": f"POST {ADMIN_PATH}"})
            n = int(self.headers.get("content-length") or 0)
            if n > _MAX_ADMIN_BODY:
                return self._answer(413, {"error": "user_config too large"})
            try:
                doc = json.loads(self.rfile.read(n))
            except (ValueError, UnicodeDecodeError):
                return self._answer(400, {"error": "body is not JSON"})
            reply: queue.Queue[tuple[int, dict[str, Any]]] = queue.Queue()
            requests.put((doc, reply))
            self._answer(*reply.get(timeout=300))

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the http.server API
            logger.info("admin: " + format, *args)

    return ThreadingHTTPServer(("127.0.0.1", 0), Handler)


def run_local_server(store: ArtifactStore, args: ServeArgs, *, port: int, on_ready: Any = None) -> None:
    """Serve in the foreground until SIGTERM/SIGINT; applies user_configs POSTed to the admin route meanwhile."""
    from ray import serve

    url = start_app(args, port=port)
    inbox: queue.Queue[tuple[dict[str, Any], queue.Queue[tuple[int, dict[str, Any]]]]] = queue.Queue()
    admin = _admin_server(inbox)
    threading.Thread(target=admin.serve_forever, daemon=True).start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    assert args.user_config is not None  # start_app refused otherwise
    endpoint = {
        "url": url,
        "user_config_url": f"http://127.0.0.1:{admin.server_address[1]}{ADMIN_PATH}",
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
            try:
                doc, reply = inbox.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                args = apply_user_config(args, doc)
            except (ValidationError, ValueError, FileNotFoundError, NotImplementedError) as e:
                status = 409 if isinstance(e, ModelDigestMismatch) else 422
                reply.put((status, {"error": str(e), "applied": False}))
                continue
            except Exception as e:
                reply.put((500, {"error": f"{type(e).__name__}: {e}", "applied": False}))
                continue
            assert args.user_config is not None
            cfg = args.user_config
            endpoint.update(
                version=cfg.version, model_digest=cfg.model_digest, thresholds_version=cfg.thresholds_version
            )
            store.write_atomic(ENDPOINT_KEY, json.dumps(endpoint, indent=2).encode())
            reply.put((200, {"applied": True, "version": cfg.version, "thresholds_version": cfg.thresholds_version}))
    finally:
        admin.shutdown()
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
