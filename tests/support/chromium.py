"""A real headless Chromium for tests, driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``).

No chromedriver, no websocket library, no port: Chromium reads JSON commands on fd 3 and answers on fd 4, each
message ending with a NUL byte. ``find_chromium`` installs Debian's ``chromium`` with apt-get when it is missing
and the tests run as root (a fresh CI machine), saying so on the terminal; elsewhere, or when
``AUTOLABEL_TEST_NO_INSTALL=1`` asks that nothing be installed, the browser tests are skipped with the reason.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

NO_INSTALL = "AUTOLABEL_TEST_NO_INSTALL"  # set to 1: install nothing; the browser tests skip when Chromium is missing
NAMES = ("chromium", "chromium-browser", "google-chrome")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--hide-scrollbars", "--mute-audio"]


def announce(line: str) -> None:
    """Tell the person running the tests (conftest.py routes this past pytest's output capture)."""
    print(line, file=sys.stderr, flush=True)


def no_install() -> bool:
    return os.environ.get(NO_INSTALL, "").strip() not in ("", "0")


def installed() -> str | None:
    """The Chromium executable on PATH, if there is one."""
    return next((found for found in map(shutil.which, NAMES) if found), None)


def can_install() -> bool:
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


def install_note() -> str:
    """One line for the test session's header: where the browser tests' Chromium comes from."""
    found = installed()
    if found:
        return f"Chromium: {found}"
    if no_install():
        return f"Chromium: missing; {NO_INSTALL} is set, so the browser tests skip"
    if can_install():
        return "Chromium: missing; installed with apt-get on first use (Debian's chromium, ~0.4 GB, once)"
    return "Chromium: missing and not root, so the browser tests skip (apt-get install -y chromium runs them)"


def find_chromium() -> str:
    """The Chromium executable; installed from Debian's archive when absent and we may (root + apt-get)."""
    found = installed()
    if found:
        return found
    if no_install():
        pytest.skip(f"no Chromium, and {NO_INSTALL} is set (unset it to install Debian's chromium with apt-get)")
    if can_install():
        announce("autolabel tests: installing Debian's chromium with apt-get (~0.4 GB, once; "
                 f"{NO_INSTALL}=1 skips the browser tests instead)")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update"], check=True, env=env, capture_output=True, timeout=900)
        subprocess.run(["apt-get", "install", "-y", "chromium"], check=True, env=env, capture_output=True, timeout=1800)
        found = shutil.which("chromium")
        if found:
            return found
    pytest.skip("no Chromium: install Debian's chromium (apt-get install -y chromium) to run the browser tests")


class Browser:
    """One headless Chromium process; ``open(url)`` loads a page in a fresh tab and reports what happened."""

    def __init__(self, executable: str | None = None, timeout: float = 60.0):
        self.timeout = timeout
        self._profile = tempfile.mkdtemp(prefix="autolabel-chromium-")
        cmd_r, cmd_w = os.pipe()  # we write commands, Chromium reads them on fd 3
        out_r, out_w = os.pipe()  # Chromium writes answers on fd 4

        def child_fds() -> None:  # dup first: dup2 onto the same number would keep close-on-exec
            a, b = os.dup(cmd_r), os.dup(out_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.process = subprocess.Popen(
            [executable or find_chromium(), *FLAGS, f"--user-data-dir={self._profile}", "--remote-debugging-pipe",
             "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=child_fds, close_fds=False,
        )
        os.close(cmd_r)
        os.close(out_w)
        self._write, self._read = cmd_w, out_r
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def close(self) -> None:
        for fd in (self._write, self._read):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the protocol -----------------------------------------------------------------------------------------
    def _receive(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._read], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._read, 1 << 20)
            if not chunk:
                raise RuntimeError(f"Chromium exited (code {self.process.poll()})")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> dict[str, Any]:
        """Send one command and wait for its answer (events that arrive meanwhile go to ``events``)."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            answer = self._receive(deadline)
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})
            self.events.append(answer)

    def wait_for(self, method: str, session: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        for event in self.events:
            if event.get("method") == method and event.get("sessionId") == session:
                return event
        while True:
            event = self._receive(deadline)
            self.events.append(event)
            if event.get("method") == method and event.get("sessionId") == session:
                return event

    # -- pages ------------------------------------------------------------------------------------------------
    def open(self, url: str, width: int = 1280, height: int = 900) -> Page:
        """Load ``url`` in a new tab of ``width`` x ``height`` CSS pixels and wait for its load event."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for method in ("Page.enable", "Runtime.enable", "Log.enable"):
            self.send(method, session=session)
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, session)
        self.send("Page.navigate", {"url": url}, session)
        self.wait_for("Page.loadEventFired", session)
        return Page(self, session)


class Page:
    """A loaded tab: evaluate JavaScript, list the errors it logged, take screenshots."""

    def __init__(self, browser: Browser, session: str):
        self.browser, self.session = browser, session

    def evaluate(self, expression: str) -> Any:
        """The JSON value of ``expression`` (promises awaited); a JavaScript exception raises."""
        result = self.browser.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                        "awaitPromise": True}, self.session)
        if "exceptionDetails" in result:
            raise RuntimeError(f"JavaScript error: {result['exceptionDetails']}")
        return result["result"].get("value")

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and failed loads the page has logged so far."""
        self.evaluate("0")  # flush: events sent before this answer are in
        out = []
        for e in self.browser.events:
            if e.get("sessionId") != self.session:
                continue
            method, params = e.get("method"), e.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                out.append("console: " + " ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
            elif method == "Runtime.exceptionThrown":
                out.append("exception: " + json.dumps(params.get("exceptionDetails", {}))[:500])
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                entry = params["entry"]
                out.append(f"log: {entry.get('text')} {entry.get('url', '')}")
        return out

    def screenshot(self, path: Path, full_page: bool = False) -> Path:
        self.browser.send("Page.bringToFront", session=self.session)  # a background tab paints no frame
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            params["captureBeyondViewport"] = True
            size = self.evaluate("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
            params["clip"] = {"x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1}
        data = self.browser.send("Page.captureScreenshot", params, self.session)["data"]
        path.write_bytes(base64.b64decode(data))
        return path
