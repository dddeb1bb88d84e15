"""The run store: one SQLite database (WAL) in the output folder, the single source of truth.

Each batch's results are committed in one transaction, so a ``kill -9`` loses at most the batch in flight and
never leaves a half-written row. Images keep stable ids (rows are updated in place, never replaced), which the
exports use. Labels are kept as JSON (the record of :mod:`autolabel.records`).

Threads: the main connection belongs to the thread that opened the store (it commits); :meth:`Store.is_done`
gives each calling thread (the decode workers) a connection of its own; :meth:`Store.images` streams through a
connection of its own that may be closed from any thread (a generator is often finalised by another thread).
Every connection is closed by :meth:`Store.close`.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from .errors import AutolabelError, ImageStatus, RunStatus, one_line
from .records import SCHEMA_VERSION as RECORD_VERSION

DB_NAME = "autolabel.db"
SCHEMA_VERSION = 1  #: the tables below; the labels JSON in them has its own version (records.SCHEMA_VERSION)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started REAL NOT NULL,
    ended REAL,
    status TEXT NOT NULL,            -- errors.RunStatus: running | ok | partial | interrupted | failed
    pipeline_hash TEXT NOT NULL,
    pipeline TEXT NOT NULL,          -- the validated pipeline, JSON
    summary TEXT                     -- run.json's content
);
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL UNIQUE,       -- absolute path of the source
    rel_path TEXT NOT NULL,          -- relative to its input root: the name exports use
    sha256 TEXT,
    width INTEGER,
    height INTEGER,
    status TEXT NOT NULL,            -- errors.ImageStatus: done | failed
    reason TEXT,                     -- why it failed (one line)
    pipeline_hash TEXT,
    run_id INTEGER,
    labels TEXT,                     -- records.to_record(...) as JSON (records.SCHEMA_VERSION), for done images
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS images_status ON images (status);
CREATE TABLE IF NOT EXISTS stage_outputs (  -- labels right after a model stage (autolabel.cache decides what)
    sha256 TEXT NOT NULL,
    key TEXT NOT NULL,               -- autolabel.cache.stage_keys
    labels TEXT NOT NULL,
    PRIMARY KEY (sha256, key)
) WITHOUT ROWID;
"""


@dataclass
class ImageResult:
    """One image's outcome, ready to commit."""

    path: str
    rel_path: str
    sha256: str | None
    status: ImageStatus | str  # done | failed
    width: int | None = None
    height: int | None = None
    reason: str | None = None
    labels: dict[str, Any] | None = None


class Store:
    """Open (or create) the store of an output folder."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.path = self.folder / DB_NAME
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._conn = self._connect()
            with self._conn:
                self._conn.executescript(_SCHEMA)
                self._conn.executemany(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)",
                    [("schema_version", str(SCHEMA_VERSION)), ("record_version", str(RECORD_VERSION))],
                )
        except (sqlite3.DatabaseError, OSError) as err:
            raise AutolabelError(f"{self.path}: cannot open the run store ({err})") from None
        for key, ours, what in (("schema_version", SCHEMA_VERSION, "store schema"),
                                ("record_version", RECORD_VERSION, "label record version")):
            version = int(self.meta(key) or ours)
            if version > ours:
                self._conn.close()
                raise AutolabelError(f"{self.path}: written by a newer autolabel ({what} {version}); upgrade autolabel")
        self._local = threading.local()
        self._others: list[sqlite3.Connection] = []  # the per-thread and streaming connections, closed by close()
        self._others_lock = threading.Lock()

    def _connect(self, any_thread: bool = False) -> sqlite3.Connection:
        """A connection; ``any_thread``: usable (and closable) from a thread other than the one opening it."""
        conn = sqlite3.connect(self.path, timeout=30, check_same_thread=not any_thread)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # with WAL: durable across process crashes, fast commits
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    def _connect_other(self) -> sqlite3.Connection:
        conn = self._connect(any_thread=True)
        with self._others_lock:
            self._others.append(conn)
        return conn

    def _release(self, conn: sqlite3.Connection) -> None:
        with self._others_lock:
            if conn in self._others:
                self._others.remove(conn)
        conn.close()

    @contextmanager
    def _writing(self, what: str) -> Iterator[None]:
        """A write transaction on the main connection; SQLite's failures (a full disk, a read-only or locked file)
        become one line naming the store. The transaction is rolled back: what was committed before stays."""
        try:
            with self._conn:
                yield
        except sqlite3.Error as err:
            raise AutolabelError(
                f"{self.path}: cannot {what} ({one_line(err)}); what was committed before is kept: free space or "
                "fix the folder's permissions, then run again"
            ) from None

    @contextmanager
    def transaction(self, what: str) -> Iterator[sqlite3.Connection]:
        """A write transaction on the main connection, for tables other modules keep in this database (the clips
        of :mod:`autolabel.video.store`); failures are one line, as for this class's own writes."""
        with self._writing(what):
            yield self._conn

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        """A read on the main connection (for tables other modules keep here)."""
        return self._conn.execute(sql, params)

    def close(self) -> None:
        """Close every connection of this store (the decode threads' and open streams' too)."""
        with self._others_lock:
            others, self._others = self._others, []
        for conn in others:
            conn.close()
        self._conn.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- meta ---------------------------------------------------------------------------------------------------
    def meta(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    # -- runs ---------------------------------------------------------------------------------------------------
    def begin_run(self, pipeline_hash: str, pipeline: dict[str, Any]) -> int:
        with self._writing("record the start of a run"):
            cur = self._conn.execute(
                "INSERT INTO runs (started, status, pipeline_hash, pipeline) VALUES (?, ?, ?, ?)",
                (time.time(), RunStatus.RUNNING.value, pipeline_hash, json.dumps(pipeline, default=str)),
            )
        return int(cur.lastrowid)

    def end_run(self, run_id: int, status: RunStatus | str, summary: dict[str, Any]) -> None:
        with self._writing(f"record the end of run {run_id}"):
            self._conn.execute(
                "UPDATE runs SET ended = ?, status = ?, summary = ? WHERE id = ?",
                (time.time(), RunStatus(status).value, json.dumps(summary, default=str), run_id),
            )

    def runs(self) -> list[dict[str, Any]]:
        rows = self._conn.execute("SELECT id, started, ended, status, pipeline_hash, summary FROM runs ORDER BY id")
        keys = ("id", "started", "ended", "status", "pipeline_hash", "summary")
        return [dict(zip(keys, r)) | {"summary": json.loads(r[5]) if r[5] else None} for r in rows]

    def last_pipeline(self) -> dict[str, Any] | None:
        """The pipeline (as validated, JSON) of the most recent run, or None."""
        row = self._conn.execute("SELECT pipeline FROM runs ORDER BY id DESC LIMIT 1").fetchone()
        return json.loads(row[0]) if row else None

    # -- images -------------------------------------------------------------------------------------------------
    def is_done(self, path: str, sha256: str, pipeline_hash: str) -> bool:
        """Whether this exact content was already labeled by this pipeline. Safe to call from any thread."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect_other()  # closed by close(), from the main thread
        row = conn.execute(
            "SELECT 1 FROM images WHERE path = ? AND sha256 = ? AND pipeline_hash = ? AND status = ?",
            (path, sha256, pipeline_hash, ImageStatus.DONE.value),
        ).fetchone()
        return row is not None

    def cached(self, sha256: str, keys: list[str]) -> dict[str, dict[str, Any]]:
        """The cached stage outputs of this content among ``keys`` (key → labels record); see autolabel.cache."""
        if not keys:
            return {}
        marks = ",".join("?" * len(keys))
        rows = self._conn.execute(
            f"SELECT key, labels FROM stage_outputs WHERE sha256 = ? AND key IN ({marks})", (sha256, *keys)
        )
        return {key: json.loads(labels) for key, labels in rows}

    def commit(
        self,
        results: list[ImageResult],
        run_id: int,
        pipeline_hash: str,
        stage_outputs: list[tuple[str, str, dict[str, Any]]] = (),  # type: ignore[assignment]
    ) -> None:
        """Write a batch of results, and the stage outputs to cache (``autolabel.cache.Row``), atomically."""
        now = time.time()
        rows = [
            (
                r.path, r.rel_path, r.sha256, r.width, r.height, ImageStatus(r.status).value, r.reason,
                pipeline_hash, run_id,
                json.dumps(r.labels, separators=(",", ":")) if r.labels is not None else None, now,
            )
            for r in results
        ]
        with self._writing(f"commit {len(rows)} results"):
            self._conn.executemany(
                """INSERT INTO images (path, rel_path, sha256, width, height, status, reason, pipeline_hash, run_id,
                                       labels, updated)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (path) DO UPDATE SET
                     rel_path = excluded.rel_path, sha256 = excluded.sha256, width = excluded.width,
                     height = excluded.height, status = excluded.status, reason = excluded.reason,
                     pipeline_hash = excluded.pipeline_hash, run_id = excluded.run_id, labels = excluded.labels,
                     updated = excluded.updated""",
                rows,
            )
            self._conn.executemany(
                "INSERT OR REPLACE INTO stage_outputs (sha256, key, labels) VALUES (?, ?, ?)",
                [(sha, key, json.dumps(rec, separators=(",", ":"))) for sha, key, rec in stage_outputs],
            )

    def count(self, status: ImageStatus | str | None = None) -> int:
        if status is None:
            return int(self._conn.execute("SELECT COUNT(*) FROM images").fetchone()[0])
        query = "SELECT COUNT(*) FROM images WHERE status = ?"
        return int(self._conn.execute(query, (ImageStatus(status).value,)).fetchone()[0])

    def images(self, status: ImageStatus | str = ImageStatus.DONE, labels: bool = True) -> Iterator[dict[str, Any]]:
        """Stream image rows in id order without loading them all (``labels`` parsed unless ``labels=False``).

        Uses a connection of its own, so that the caller may commit on the main one while iterating. The stream
        may be closed (or garbage-collected) from any thread: its connection allows that.
        """
        keys = ["id", "path", "rel_path", "sha256", "width", "height", "status", "reason"]
        keys += ["labels"] if labels else []
        conn = self._connect_other()
        try:
            query = f"SELECT {', '.join(keys)} FROM images WHERE status = ? ORDER BY id"
            for row in conn.execute(query, (ImageStatus(status).value,)):
                item = dict(zip(keys, row))
                if labels:
                    item["labels"] = json.loads(item["labels"]) if item["labels"] else None
                yield item
        finally:
            self._release(conn)
