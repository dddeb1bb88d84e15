"""One run per output folder: an exclusive ``flock`` on ``OUTPUT/.autolabel.lock``.

The kernel drops the lock when its holder dies, however it dies (``kill -9`` included), so a lock left behind by a
killed run is simply taken over — the file's content (pid, host, start time) only serves the messages. The file
is never deleted: deleting a lock file lets two processes hold locks on two different files.
Local filesystems only: ``flock`` over NFS is not reliable across hosts.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from .errors import AutolabelError, ExitCode
from .util import iso_utc

LOCK_NAME = ".autolabel.lock"


class LockedError(AutolabelError):
    """Another process holds the output folder."""

    exit_code = ExitCode.LOCKED


class RunLock:
    """``with RunLock(folder, purpose):`` — raises :class:`LockedError` naming the holder if the folder is busy."""

    def __init__(self, folder: str | Path, purpose: str = "run"):
        self.path = Path(folder) / LOCK_NAME
        self.purpose = purpose
        self.previous: dict[str, Any] | None = None  # a stale holder we took over from, if any
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            raise LockedError(
                f"{self.path.parent}: locked by {describe(holder)}; wait for it to finish or stop it"
            ) from None
        self.previous = _read(fd) or None  # content left by a holder that died without releasing
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), "purpose": self.purpose}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)  # an empty file means: released cleanly
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def holder(folder: str | Path) -> dict[str, Any] | None:
    """What the process holding ``folder``'s lock wrote about itself (``{}`` if nothing), or None when no process
    holds it. Takes nothing: a shared, non-blocking ``flock`` on a read-only handle, released at once (so it works
    in a read-only folder too)."""
    try:
        fd = os.open(Path(folder) / LOCK_NAME, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None  # no lock file: no run ever held this folder
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read(fd)
    except OSError:
        return None
    finally:
        os.close(fd)  # closing drops the shared lock, if it was taken
    return None


def _read(fd: int) -> dict[str, Any]:
    try:
        raw = os.pread(fd, 4096, 0)
        return json.loads(raw) if raw.strip() else {}
    except (OSError, ValueError):
        return {}


def describe(holder: dict[str, Any]) -> str:
    """``pid 123 on host web-1 (a run started 2026-11-25T02:00:00+00:00)``, from whatever the holder wrote."""
    if not holder:
        return "another process (no details recorded)"
    started = holder.get("started")
    when = iso_utc(started) if started else "?"
    who = f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}"
    return f"{who} ({holder.get('purpose', 'run')} started {when})"
