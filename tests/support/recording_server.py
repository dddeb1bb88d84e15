"""A small HTTP server on 127.0.0.1 that records every request it receives and answers each path the way a test
scripts it: bytes, a redirect, a status, a body trickled a byte at a time, an endless stream.

The serve tests use it as every party the backend may talk to — an image host, an attacker's server, a stand-in
for Label Studio — and then assert from its record where each request went and what it carried (the
``Authorization`` header above all): no byte or token reaches the wrong place.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Seen:
    """One request as received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes = b""

    @property
    def authorization(self) -> str | None:
        return self.headers.get("authorization")


def body(data: bytes, content_type: str = "image/png") -> Callable[[BaseHTTPRequestHandler], None]:
    def answer(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    return answer


def redirect(location: str, status: int = 302) -> Callable[[BaseHTTPRequestHandler], None]:
    def answer(h: BaseHTTPRequestHandler) -> None:
        h.send_response(status)
        h.send_header("Location", location)
        h.send_header("Content-Length", "0")
        h.end_headers()

    return answer


def status(code: int) -> Callable[[BaseHTTPRequestHandler], None]:
    def answer(h: BaseHTTPRequestHandler) -> None:
        h.send_response(code)
        h.send_header("Content-Length", "0")
        h.end_headers()

    return answer


def trickle(every: float, total: int = 10_000) -> Callable[[BaseHTTPRequestHandler], None]:
    """A body of ``total`` bytes, one byte every ``every`` seconds (a source that never times out a read)."""

    def answer(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(total))
        h.end_headers()
        try:
            for _ in range(total):
                h.wfile.write(b"x")
                h.wfile.flush()
                time.sleep(every)
        except OSError:
            return

    return answer


def endless(chunk: int = 65536) -> Callable[[BaseHTTPRequestHandler], None]:
    """A chunked body that never ends (until the client hangs up)."""

    def answer(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        block = f"{chunk:x}\r\n".encode() + b"\0" * chunk + b"\r\n"
        try:
            while True:
                h.wfile.write(block)
        except OSError:
            return

    return answer


@dataclass
class Recorder:
    """``routes``: path (without query) → answer; anything else is a 404. ``seen``: every request, in order."""

    routes: dict[str, Callable[[BaseHTTPRequestHandler], None]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                return None

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(length) if length else b""
                recorder.seen.append(Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()},
                                          data))
                answer = recorder.routes.get(self.path.partition("?")[0], status(404))
                answer(self)

            do_GET = do_POST = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()

    def paths(self) -> list[str]:
        return [s.path for s in self.seen]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
