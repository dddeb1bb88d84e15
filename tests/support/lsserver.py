"""A real Label Studio server for the tests: installed from the package index into a virtualenv of its own (it pins
Django, pandas and numpy versions of its own), started on 127.0.0.1 with a known user and token, stoppable and
restartable, and a small fault-injecting HTTP proxy to put in front of it.

The install is cached across runs in ``$AUTOLABEL_TEST_CACHE`` (default ``~/.cache/autolabel-tests``) under
``label-studio-<version>`` (~1 GB; 1.5–6 minutes the first time, depending on the machine and the index); a line on
the terminal says when it starts and ends. A failed install raises :class:`InstallError` — the live tests then fail
with its message; they never skip, unless ``AUTOLABEL_TEST_NO_INSTALL=1`` asks that nothing be installed: then the
tests that need a server not installed yet are skipped, with that reason.

A new server's first start migrates its database (~40 s). So that each test module's fresh server does not pay it
again, the data folder of one server started once (migrated, with the test user and token) is kept beside the
install (:func:`ensure_template`) and copied into each new server's empty data folder: it then starts in seconds.
"""

from __future__ import annotations

import fcntl
import hashlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

LS_VERSION = "1.23.2"
USERNAME = "reviewer@example.com"
PASSWORD = "autolabel-test-pass"
TOKEN = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678"  # legacy token of USERNAME (fixed: set before first start)
NO_INSTALL = "AUTOLABEL_TEST_NO_INSTALL"  # set to 1: install nothing; tests needing an install not made yet skip


def announce(line: str) -> None:
    """Tell the person running the tests (conftest.py routes this past pytest's output capture)."""
    print(line, file=sys.stderr, flush=True)


def no_install() -> bool:
    return os.environ.get(NO_INSTALL, "").strip() not in ("", "0")


class InstallError(RuntimeError):
    """Label Studio could not be installed (no route to the package index?)."""


def cache_dir() -> Path:
    base = os.environ.get("AUTOLABEL_TEST_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "autolabel-tests")
    return Path(base) / f"label-studio-{LS_VERSION}"


def installed(venv: Path | None = None) -> bool:
    """Whether a complete install is in the cache already (nothing would be installed)."""
    venv = venv or cache_dir()
    return (venv / ".autolabel-installed").is_file() and (venv / "bin" / "label-studio").exists()


def install_note() -> str:
    """One line for the test session's header: where Label Studio comes from."""
    if installed():
        return f"Label Studio {LS_VERSION}: installed in {cache_dir()}"
    if no_install():
        return f"Label Studio {LS_VERSION}: not installed; {NO_INSTALL} is set, so the tests that need it skip"
    return (f"Label Studio {LS_VERSION}: installed with pip on first use into {cache_dir()} (~1 GB, a few minutes, "
            f"once; AUTOLABEL_TEST_CACHE moves it)")


def ensure_installed(venv: Path | None = None, timeout: float = 1800.0) -> Path:
    """The ``label-studio`` executable of a cached venv, installing ``label-studio==LS_VERSION`` if needed.

    A marker file written after a successful install tells a complete venv from a half-made one (which is
    removed and made again); a file lock keeps two test processes from installing at once.
    """
    venv = venv or cache_dir()
    exe = venv / "bin" / "label-studio"
    marker = venv / ".autolabel-installed"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f".{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.is_file() and exe.exists():
            return exe
        if no_install():
            import pytest

            pytest.skip(f"needs a Label Studio server, which is not installed in {venv}, and {NO_INSTALL} is set "
                        f"(unset it to install label-studio=={LS_VERSION} there, ~1 GB, once)")
        if venv.exists():
            shutil.rmtree(venv)
        started = time.monotonic()
        announce(f"autolabel tests: installing label-studio=={LS_VERSION} into {venv} (~1 GB, a few minutes, once; "
                 f"{NO_INSTALL}=1 skips the tests that need it instead)")
        steps = [[sys.executable, "-m", "venv", str(venv)],
                 [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q",
                  f"label-studio=={LS_VERSION}"]]
        for cmd in steps:
            try:
                done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
            except subprocess.TimeoutExpired:
                raise InstallError(
                    f"installing label-studio=={LS_VERSION} into {venv} took over {timeout:.0f} s"
                ) from None
            if done.returncode != 0:
                tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-5:])
                raise InstallError(
                    f"cannot install label-studio=={LS_VERSION} into {venv} ({' '.join(cmd[-3:])} exited "
                    f"{done.returncode}): {tail} — the live Label Studio tests need the package index (PyPI)"
                )
        marker.write_text(f"label-studio=={LS_VERSION} installed in {time.monotonic() - started:.0f} s\n")
        announce(f"autolabel tests: label-studio=={LS_VERSION} installed in {time.monotonic() - started:.0f} s")
        return exe


def template_dir() -> Path:
    """Where the migrated data folder is kept: per Label Studio version and test user (its token is in it)."""
    user = hashlib.sha256(f"{USERNAME}\0{PASSWORD}\0{TOKEN}".encode()).hexdigest()[:12]
    return cache_dir().parent / f"label-studio-{LS_VERSION}-data-{user}"


def ensure_template(exe: Path, timeout: float = 600.0) -> Path:
    """The migrated data folder of a server started once with the test user (made on first use, under a lock)."""
    target = template_dir()
    marker = target / ".autolabel-template"
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.is_file():
            return target
        work = Path(tempfile.mkdtemp(dir=target.parent, prefix=".template-"))
        try:
            server = LabelStudioServer(exe, work, template=None)
            server.start(timeout)
            server.stop()
            (server.data_dir / marker.name).write_text(f"label-studio=={LS_VERSION}, migrated, user {USERNAME}\n")
            shutil.rmtree(target, ignore_errors=True)
            server.data_dir.rename(target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return target


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LabelStudioServer:
    """One Label Studio process over a data folder of its own; ``stop()`` and ``start()`` again keep the data.

    ``template``: a migrated data folder copied into an empty one before the first start ("auto":
    :func:`ensure_template`; None: the server migrates its own).
    """

    def __init__(self, exe: Path, base: Path, port: int | None = None, template: Path | str | None = "auto"):
        self.exe, self.base, self.template = exe, Path(base), template
        self.port = port or free_port()
        self.data_dir = self.base / "data"
        self.document_root = self.base / "files"  # LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT
        self.log = self.base / "server.log"
        self.proc: subprocess.Popen | None = None
        self.watchdog: subprocess.Popen | None = None
        self.starts: list[float] = []  # seconds each start took

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """A clean environment: Label Studio also reads bare PORT, HOST, USERNAME... from it."""
        return {
            "PATH": f"{self.exe.parent}{os.pathsep}/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.base),
            "LANG": "C.UTF-8",
            "LABEL_STUDIO_BASE_DATA_DIR": str(self.data_dir),
            "LABEL_STUDIO_USERNAME": USERNAME,
            "LABEL_STUDIO_PASSWORD": PASSWORD,
            "LABEL_STUDIO_USER_TOKEN": TOKEN,
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
            "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
            "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(self.document_root),
            "LATEST_VERSION_CHECK": "false",
            "SENTRY_DSN": "",
            "FRONTEND_SENTRY_DSN": "",
            "COLLECT_ANALYTICS": "false",
        }

    def start(self, timeout: float = 600.0) -> None:
        if self.template is not None and not (self.data_dir.is_dir() and any(self.data_dir.iterdir())):
            template = ensure_template(self.exe, timeout) if self.template == "auto" else Path(self.template)
            shutil.copytree(template, self.data_dir, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns(".autolabel-template"))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.document_root.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [str(self.exe), "start", "--no-browser", "--internal-host", "127.0.0.1", "-p", str(self.port)],
                cwd=self.base, env=self.env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        # the server runs in a session of its own (stop() ends its whole group); should this process die without
        # stopping it (killed, e.g. a mutation-test timeout), a watchdog in a session of its own stops it
        self.watchdog = subprocess.Popen(
            ["sh", "-c", f"while kill -0 {os.getpid()} && kill -0 {self.proc.pid}; do sleep 1; done 2>/dev/null; "
                         f"kill -TERM -{self.proc.pid} 2>/dev/null"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Label Studio exited with {self.proc.returncode} while starting: {self.log_tail()}")
            if self.healthy():
                self.starts.append(round(time.monotonic() - t0, 1))
                return
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"Label Studio did not answer on {self.url} within {timeout:.0f} s: {self.log_tail()}")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the server's process group (ours: started in a session of its own) and wait for it."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        if self.watchdog is not None:
            self.watchdog.wait(timeout=10)  # it sees the server gone within a second

    def log_tail(self, lines: int = 15) -> str:
        try:
            return " | ".join(self.log.read_text(errors="replace").strip().splitlines()[-lines:])
        except OSError:
            return "(no log)"


class FaultProxy:
    """A threading HTTP proxy to ``upstream`` that can fail requests, the ways networks and servers do.

    ``fault(n, method, path)`` is asked for each request (n counts from 1) and returns one of:
    ``None`` (forward), ``"503"`` (answer 503 without forwarding), ``"400"`` (refuse it without forwarding, as a
    server refuses a request it finds invalid), ``"502-after"`` (forward, let the server do
    the work, answer 502), ``"hang-after"`` (forward, then hold the answer ``hang`` seconds: the client times out
    and never learns the outcome), ``"drop-after"`` (forward, then close the connection without an answer).
    ``after(n, method, path)`` runs once a request was forwarded and answered, before the answer is relayed
    (e.g. to stop the server right after it did the work).
    """

    def __init__(self, upstream: str, fault: Callable[[int, str, str], str | None] | None = None,
                 after: Callable[[int, str, str], None] | None = None, hang: float = 5.0):
        self.upstream = upstream.replace("http://", "").rstrip("/")
        self.fault, self.after, self.hang = fault, after, hang
        self.count = 0
        self.log: list[tuple[int, str, str, str | None]] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                return None

            def _handle(self) -> None:
                with proxy._lock:
                    proxy.count += 1
                    n = proxy.count
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                what = proxy.fault(n, self.command, self.path) if proxy.fault else None
                proxy.log.append((n, self.command, self.path, what))
                if what == "503":
                    return self._reply(503, b'{"detail": "injected 503"}')
                if what == "400":
                    return self._reply(400, b'{"detail": "injected 400"}')
                try:
                    status, headers, data = proxy._forward(self.command, self.path, dict(self.headers), body)
                except OSError:
                    self.close_connection = True
                    return self._reply(502, b'{"detail": "upstream unreachable"}')
                if proxy.after:
                    proxy.after(n, self.command, self.path)
                if what == "502-after":
                    return self._reply(502, b'{"detail": "injected 502 after the work was done"}')
                if what == "hang-after":
                    time.sleep(proxy.hang)
                    self.close_connection = True
                    return None
                if what == "drop-after":
                    self.close_connection = True
                    return None
                self.send_response(status)
                for k, v in headers:
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _reply(self, status: int, data: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _forward(self, method: str, path: str, headers: dict[str, str], body: bytes | None):
        conn = http.client.HTTPConnection(self.upstream, timeout=120)
        try:
            headers = {k: v for k, v in headers.items() if k.lower() not in ("host", "connection")}
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            conn.close()

    def __enter__(self) -> "FaultProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
