"""The run store as an answer book: an image already labeled there (same content hash) is answered from it, and
images the backend labels can be written back, so the next run (or the next request) needs no model.

Lookups use a connection per request thread (SQLite in WAL mode: reads never wait on a writer) and an index on
``sha256`` that is added to the store once (``CREATE INDEX IF NOT EXISTS``: invisible to everything else).
Write-back goes through :class:`autolabel.store.Store` itself, on a writer thread of its own (a SQLite
connection belongs to its thread), as one run of kind ``serve`` that stays open while the server runs and is
closed with its counts at shutdown. An image that came over HTTP (or through Label Studio) is kept as a file in
the output folder (``serve-images/``, named by its content hash): the store's path of every image must be a file
the exports can read again — a URL behind a token or gone tomorrow is not.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..errors import AutolabelError
from ..store import DB_NAME, ImageResult, Store

#: where write-back keeps the images that are not local files, under the output folder
IMAGES_DIR = "serve-images"
_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,5}$")
_COLUMNS = ("id", "path", "rel_path", "sha256", "width", "height", "status", "reason", "labels")


class StoreAnswers:
    """Read (and optionally write) labels of the run store in ``folder``."""

    def __init__(self, folder: str | Path, write_back: bool = False):
        self.folder = Path(folder)
        self.path = self.folder / DB_NAME
        if not self.path.is_file() and not write_back:
            raise AutolabelError(f"{self.folder}: no run store ({DB_NAME}) here; pass the output folder of a run "
                                 "(autolabel run ... --output DIR), or add --write-back to start one")
        self.write_back = write_back
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="autolabel-store") if write_back else None
        self._store: Store | None = None
        if self._writer is not None:
            self._writer.submit(self._open).result()  # creates the store when new
        self._local = threading.local()
        self.run_id: int | None = None
        self.written = 0
        try:
            conn = sqlite3.connect(self.path, timeout=30)
            with conn:
                conn.execute("CREATE INDEX IF NOT EXISTS images_sha256 ON images (sha256)")
            conn.close()
        except sqlite3.DatabaseError:
            pass  # a read-only store: lookups scan instead

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=30000")
        return conn

    def find(self, sha256: str) -> dict[str, Any] | None:
        """The most recent labeled row of this content (``Store.images()``'s shape), or None."""
        try:
            row = self._conn().execute(
                f"SELECT {', '.join(_COLUMNS)} FROM images WHERE sha256 = ? AND status = 'done' "
                "ORDER BY updated DESC LIMIT 1", (sha256,),
            ).fetchone()
        except sqlite3.DatabaseError as err:
            raise AutolabelError(f"{self.path}: cannot read the run store ({err})") from None
        if row is None:
            return None
        item = dict(zip(_COLUMNS, row))
        item["labels"] = json.loads(item["labels"]) if item["labels"] else None
        return item

    def image_path(self, digest: str, data: bytes, rel_path: str, local: str | None) -> str:
        """The path the store records for an image: the local file it was read from, else a copy of its bytes
        kept under ``serve-images/`` (written once per content, atomically)."""
        if local is not None:
            return local
        suffix = _SUFFIX.search(rel_path)
        path = self.folder / IMAGES_DIR / digest[:2] / (digest + (suffix.group(0).lower() if suffix else ""))
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{threading.get_ident()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        return str(path)

    def _open(self) -> None:
        self._store = Store(self.folder)

    def write(self, results: list[ImageResult], pipeline_hash: str, pipeline: dict[str, Any],
              cache: list[tuple[str, str, dict[str, Any]]]) -> None:
        """Commit labeled images (and their stage outputs, so a later run reuses them) in one transaction."""
        if self._writer is None or not results:
            return
        self._writer.submit(self._commit, results, pipeline_hash, pipeline, cache).result()

    def _commit(self, results: list[ImageResult], pipeline_hash: str, pipeline: dict[str, Any],
                cache: list[tuple[str, str, dict[str, Any]]]) -> None:
        assert self._store is not None
        if self.run_id is None:
            self.run_id = self._store.begin_run(pipeline_hash, pipeline)
            self._started = time.time()
        self._store.commit(results, self.run_id, pipeline_hash, cache)
        self.written += len(results)

    def close(self, stats: dict[str, Any]) -> None:
        """End the serve run (if anything was written) with the server's counts as its summary."""
        if self._writer is None:
            return
        self._writer.submit(self._close, stats).result()
        self._writer.shutdown()
        self._writer = None

    def _close(self, stats: dict[str, Any]) -> None:
        assert self._store is not None
        if self.run_id is not None:
            summary = {"run_id": self.run_id, "status": "ok", "kind": "serve", "counts": {
                "seen": self.written, "labeled": self.written, "skipped": 0, "failed": 0},
                "seconds": round(time.time() - self._started, 3), "serve": stats}
            self._store.end_run(self.run_id, "ok", summary)
        self._store.close()
