"""Small helpers shared by the store, the runner and the exports: atomic file writes, UTC timestamps."""

from __future__ import annotations

import contextlib
import os
import tempfile
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Iterator

_UMASK = os.umask(0o022)  # read the process umask once (setting it is the only way to read it) ...
os.umask(_UMASK)  # ... and put it back


@contextmanager
def atomic_open(
    path: str | Path, mode: str = "w", encoding: str | None = "utf-8", errors: str | None = None
) -> Iterator[IO]:
    """Write to a temp file beside ``path`` and rename it over ``path`` on success: never a half-written file.
    ``errors``: of the text encoding (JSON writers pass :data:`autolabel.names.JSON_ERRORS`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; the finished file gets what open() would give it
        text = "b" not in mode
        with os.fdopen(fd, mode, encoding=encoding if text else None, errors=errors if text else None) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_open(path) as f:
        f.write(text)


def iso_utc(ts: float | None) -> str | None:
    """A Unix time as ISO 8601 in UTC, to the second: how run.json and ``autolabel runs`` show times.

    >>> iso_utc(0)
    '1970-01-01T00:00:00+00:00'
    >>> iso_utc(None) is None
    True
    """
    return None if ts is None else datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="seconds")
