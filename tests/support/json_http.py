"""A JSON-over-HTTP request handler for the API stand-ins (Kubernetes, KFP, Argo): one ``handle`` function answers."""

from __future__ import annotations

import json
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlparse

# handle(method, path, raw query string, parsed JSON body or None) -> (HTTP status, JSON document)
Handle = Callable[[str, str, str, Any], tuple[int, Any]]
# the same, with the request headers (lower-cased names) last: for stand-ins that check Content-Type or a token
HeadersHandle = Callable[[str, str, str, Any, dict[str, str]], tuple[int, Any]]


def json_handler(
    handle: Handle | HeadersHandle, *, bad_json: tuple[int, Any] | None = None, headers: bool = False
) -> type[BaseHTTPRequestHandler]:
    """A handler class that parses the request, calls ``handle`` and writes its answer as JSON.

    ``bad_json`` is the answer to a body that is not JSON (default: 400 with a plain message); with ``headers``,
    ``handle`` also gets the request's headers.
    """
    refusal = bad_json or (400, {"message": "request body is not JSON"})

    class Handler(BaseHTTPRequestHandler):
        def _serve(self, method: str) -> None:
            url = urlparse(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                status, doc = refusal
            else:
                if headers:
                    seen = {k.lower(): v for k, v in self.headers.items()}
                    status, doc = handle(method, url.path, url.query, body, seen)  # type: ignore[call-arg]
                else:
                    status, doc = handle(method, url.path, url.query, body)  # type: ignore[call-arg]
            out = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def do_PUT(self) -> None:
            self._serve("PUT")

        def do_PATCH(self) -> None:
            self._serve("PATCH")

        def do_DELETE(self) -> None:
            self._serve("DELETE")

        def log_message(self, *args: Any) -> None:  # keep pytest output clean
            pass

    return Handler
