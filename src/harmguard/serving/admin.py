"""The local server's admin route: the promotion or rollback that just moved ``champion`` asks it to serve it.

The route takes a version id and nothing else. The server resolves model URI, digest and thresholds from the
registry itself and serves the version only while the ``champion`` pointer names it (promotion and rollback move
the pointer first, then push), so a caller can neither serve an unapproved version nor bend thresholds. It also
requires a per-start token: ``harmguard serve`` writes a fresh random one at start into a file only its owner can
read (``admin_token_path``: ``HARMGUARD_HOME/serve/admin.token`` for a local home, else under ``HARMGUARD_CACHE``)
and removes it when it stops; the promotion and rollback code read it (``read_admin_token``) and send it as
``Authorization: Bearer <token>``. Loopback alone is no authentication: every user of the machine reaches
127.0.0.1, and a web page can POST there by CSRF (it cannot set that header without a CORS preflight, which the
route never answers).

Requests: ``POST /user_config`` with ``{"version": "<policy>/<n>"}`` (other keys are ignored: the registry decides
the rest). 401 without the right token, 411 without a Content-Length, 400 for a malformed Content-Length, a chunked
body or non-JSON, 413 above ``MAX_ADMIN_BODY`` bytes, 422 without a version, 409 when the version is not the
champion of the served policy (or its record and the pointer disagree).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import queue
import secrets
import stat
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError

from harmguard.registry import get_version, parse_version, read_alias
from harmguard.serving.config import UserConfig, user_config_for
from harmguard.settings import default_cache
from harmguard.storage import ArtifactStore, LocalStore

logger = logging.getLogger("harmguard.serving")

ADMIN_PATH = "/user_config"
TOKEN_KEY = "serve/admin.token"
# A push is {"version": "<policy>/<n>"}: a few dozen bytes; anything near this is not one.
MAX_ADMIN_BODY = 4096
# Seconds the route waits for the body and for the server to apply a version.
_READ_TIMEOUT_S = 10.0
_APPLY_WAIT_S = 300.0

Reply = queue.Queue[tuple[int, dict[str, Any]]]


class AdminTokenError(RuntimeError):
    """The admin token file is missing or others could read or change it (the message says which)."""


class NotChampion(ValueError):
    """A pushed version is not what the ``champion`` pointer of the served policy names now."""


class PushRequest(BaseModel):
    """Body of ``POST /user_config``: the version to serve. Other keys are ignored, never applied."""

    model_config = ConfigDict(extra="ignore")

    version: StrictStr = Field(description="The version '<policy>/<n>' the champion pointer names now.")


def admin_token_path(store: ArtifactStore) -> Path:
    """Where a server of this home keeps its admin token: beside the endpoint file for a local home, else locally.

    A remote home (``gs://``) is shared between machines; the token never leaves this one, so it lives under
    ``HARMGUARD_CACHE/serve/<home hash>/``.
    """
    if isinstance(store, LocalStore):
        return store.path(TOKEN_KEY)
    home = hashlib.sha256(store.uri.encode()).hexdigest()[:16]
    return default_cache() / "serve" / home / "admin.token"


def create_admin_token(path: Path) -> str:
    """Write a fresh random token readable and writable by its owner only (0600); returns it.

    Any file already there (a previous server's, or a planted link) is removed first, and the new one is created
    exclusively without following links.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.unlink(missing_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token)
    return token


def read_admin_token(path: Path) -> str:
    """The token a running server wrote, after checking that only this user can read or change the file.

    Raises:
        AdminTokenError: When the file is missing, a link, someone else's, or open to group or others.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise AdminTokenError(f"no admin token at {path}: is `harmguard serve` running for this home?") from None
    except OSError as e:
        raise AdminTokenError(f"cannot open the admin token {path} ({e.strerror}); a link is refused") from None
    with os.fdopen(fd) as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
            raise AdminTokenError(
                f"refusing the admin token {path}: it must be a regular file of uid {os.getuid()} with mode 0600 "
                f"(found uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):o}); restart `harmguard serve`"
            )
        return f.read().strip()


def champion_user_config(store: ArtifactStore, policy: str, version: str) -> UserConfig:
    """The user_config of ``version``, from its registry record, when it is the champion of ``policy`` now.

    Raises:
        NotChampion: When it belongs to another policy, is not the champion, or its record disagrees with the pointer.
        ValueError: When ``version`` is not '<policy>/<n>'.
    """
    owner, _ = parse_version(version)
    if owner != policy:
        raise NotChampion(f"this server serves policy {policy}; {version} belongs to {owner}")
    champion, _ = read_alias(store, policy, "champion")
    if champion is None or champion.version != version:
        now = champion.version if champion else "not set"
        raise NotChampion(f"{version} is not the champion of {policy} (the champion is {now}); promote it first")
    record = get_version(store, version)
    if (record.model_digest, record.thresholds_version) != (champion.model_digest, champion.thresholds_version):
        raise NotChampion(f"the champion pointer of {policy} and the record of {version} disagree; not served")
    return user_config_for(record)


class AdminServer:
    """The admin route on 127.0.0.1 (a free port): authenticates and parses pushes, queues them for ``next_push``."""

    def __init__(self, token: str) -> None:
        """Bind the route; ``start`` serves it. Only a request with ``token`` reaches the queue."""
        self._inbox: queue.Queue[tuple[str, Reply]] = queue.Queue()
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _handler(token.encode(), self._inbox))
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}{ADMIN_PATH}"

    def start(self) -> AdminServer:
        """Serve the route on a daemon thread."""
        threading.Thread(target=self._http.serve_forever, daemon=True, name="harmguard-admin").start()
        return self

    def close(self) -> None:
        """Stop serving the route."""
        self._http.shutdown()
        self._http.server_close()

    def next_push(self, timeout: float) -> tuple[str, Reply] | None:
        """The next authenticated push (version, reply queue), or None after ``timeout`` seconds."""
        try:
            return self._inbox.get(timeout=timeout)
        except queue.Empty:
            return None


def _handler(token: bytes, inbox: queue.Queue[tuple[str, Reply]]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = _READ_TIMEOUT_S  # a client that declares more than it sends cannot hold a thread for ever

        def do_POST(self) -> None:  # noqa: N802 - the http.server API
            self.close_connection = True
            if self.path != ADMIN_PATH:
                return self._answer(404, {"error": f"POST {ADMIN_PATH}"})
            scheme, _, given = (self.headers.get("authorization") or "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token):
                return self._answer(401, {"error": "missing or wrong admin token"}, {"WWW-Authenticate": "Bearer"})
            if self.headers.get("transfer-encoding"):
                return self._answer(400, {"error": "chunked bodies are not accepted; send a Content-Length"})
            declared = self.headers.get("content-length")
            if declared is None:
                return self._answer(411, {"error": "Content-Length is required"})
            if not declared.strip().isdigit():  # a negative, signed or non-numeric length
                return self._answer(400, {"error": "Content-Length must be a non-negative integer"})
            n = int(declared)
            if n > MAX_ADMIN_BODY:
                return self._answer(413, {"error": f"body over {MAX_ADMIN_BODY} bytes"})
            try:
                body = self.rfile.read(n)
            except TimeoutError:
                return self._answer(400, {"error": "body shorter than its Content-Length"})
            if len(body) != n:
                return self._answer(400, {"error": "body shorter than its Content-Length"})
            try:
                doc = json.loads(body.decode("utf-8"))
            except (ValueError, UnicodeDecodeError, RecursionError):
                return self._answer(400, {"error": "body is not UTF-8 JSON"})
            try:
                version = PushRequest.model_validate(doc).version
            except ValidationError:
                return self._answer(422, {"error": 'expected {"version": "<policy>/<n>"}'})
            reply: Reply = queue.Queue()
            inbox.put((version, reply))
            try:
                self._answer(*reply.get(timeout=_APPLY_WAIT_S))
            except queue.Empty:
                self._answer(504, {"error": f"not applied within {_APPLY_WAIT_S} s", "applied": False})

        def _answer(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            headers = {"Content-Type": "application/json", "Content-Length": str(len(data)), **(headers or {})}
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            logger.info("admin route answered %s", code)  # never the request line: its path is the caller's text

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the http.server API
            pass  # http.server's own messages quote the caller's request line

    return Handler
