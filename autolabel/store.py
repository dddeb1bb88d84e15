"""The run store: one SQLite database (WAL) in the output folder, the single source of truth.

Each batch's results are committed in one transaction, so a ``kill -9`` loses at most the batch in flight and
never leaves a half-written row. Images keep stable ids (rows are updated in place, never replaced), which the
exports use. Labels are kept as JSON (the record of :mod:`autolabel.records`).

What can go wrong with the file itself is said in one line (:class:`StoreError`) naming the fix, and nothing
already committed is lost (docs/how-to/recover-a-store.md):

* at open: a store that is not one, or damaged (``PRAGMA quick_check`` when ``check=True``, as a run opens it),
  or written by a newer autolabel; a 0-byte store where runs are recorded (truncated: never silently recreated);
* a row whose labels cannot be read back (invalid JSON, not the record's shape: :func:`autolabel.records.problem`)
  is not "done" for the next run, and :meth:`Store.images` skips it and keeps it in :attr:`Store.bad_rows`;
* the write-ahead log deleted or replaced while a run writes (another program "cleaning up"): the commits it
  held are checkpointed into the database file from the handle still open, the run stops and says how many of
  its results the store holds (:meth:`Store._rescue`);
* a folder that cannot be written (an archived run): opened read-only, so every reading command works.

Threads: the main connection belongs to the thread that opened the store (it commits); :meth:`Store.is_done`
gives each calling thread (the decode workers) a connection of its own; :meth:`Store.images` streams through a
connection of its own that may be closed from any thread (a generator is often finalised by another thread).
Every connection is closed by :meth:`Store.close`.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import quote

from .errors import AutolabelError, ImageStatus, RunStatus, one_line
from .names import from_key, shown, to_key
from .records import SCHEMA_VERSION as RECORD_VERSION
from .records import problem

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
    path TEXT NOT NULL UNIQUE,       -- absolute path of the source (a name that is not UTF-8: its bytes, a BLOB)
    rel_path TEXT NOT NULL,          -- relative to its input root: the name exports use (the same)
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


#: the tables and columns every reader relies on: a store without them is not one (checked at open)
_REQUIRED = {
    "meta": {"key", "value"},
    "runs": {"id", "started", "ended", "status", "pipeline_hash", "pipeline", "summary"},
    "images": {"id", "path", "rel_path", "sha256", "width", "height", "status", "reason", "pipeline_hash", "run_id",
               "labels", "updated"},
}
_IMAGE_COLUMNS = ["id", "path", "rel_path", "sha256", "width", "height", "status", "reason"]


class StoreError(AutolabelError):
    """The run store cannot be used as it is (damaged, not a store, truncated, its log deleted): one line."""


def recovery(folder: str | Path) -> str:
    """The fix a message about a damaged store names."""
    return f"recover what it holds with `autolabel recover {folder}` (see docs/how-to/recover-a-store.md)"


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
    """Open (or create) the store of an output folder.

    ``readonly``: None (the default) opens it read-only when the folder or the file cannot be written (an archived
    run), so that reading commands work there; writes then fail with one line. ``check``: run SQLite's
    ``quick_check`` first (what a run does: hours of labeling are not spent on a damaged file).
    """

    def __init__(self, folder: str | Path, readonly: bool | None = None, check: bool = False):
        self.folder = Path(folder)
        self.path = self.folder / DB_NAME
        self.readonly = _cannot_write(self.folder, self.path) if readonly is None else readonly
        self.bad_rows: dict[int, tuple[str, str]] = {}  #: id → (rel_path, problem) of rows images() skipped
        self._local = threading.local()
        self._others: list[sqlite3.Connection] = []  # the per-thread and streaming connections, closed by close()
        self._others_lock = threading.Lock()
        self._runs: list[int] = []  # the runs this Store began, and how many results it committed for them
        self._committed = 0
        self._wal: tuple[int, int] | None = None
        self._closed = False
        if self.path.is_dir():
            raise StoreError(f"{self.path}: a folder where the run store belongs; move it away")
        if not self.readonly:
            _refuse_truncated(self.path, self.folder)
        try:
            if not self.readonly:
                self.folder.mkdir(parents=True, exist_ok=True)
            self._conn = self._connect()
        except sqlite3.Error as err:
            raise self._error(err, "open the run store") from None
        except OSError as err:
            raise StoreError(f"{self.path}: cannot open the run store ({one_line(err)})") from None
        try:
            if check:
                self._quick_check()
            self._check_structure(existing_only=True)  # before anything is created in someone else's database
            if not self.readonly:
                with self._conn:
                    self._conn.executescript(_SCHEMA)
                    self._conn.executemany(
                        "INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)",
                        [("schema_version", str(SCHEMA_VERSION)), ("record_version", str(RECORD_VERSION))],
                    )
            self._check_structure()
            versions = [(ours, what, self.meta(key)) for key, ours, what in (
                ("schema_version", SCHEMA_VERSION, "store schema"), ("record_version", RECORD_VERSION,
                                                                     "label record version"))]
        except sqlite3.Error as err:
            self._conn.close()
            raise self._error(err, "open the run store") from None
        except StoreError:
            self._conn.close()
            raise
        for ours, what, value in versions:
            version = int(value) if value and value.isdigit() else ours
            if version > ours:
                self._conn.close()
                raise StoreError(f"{self.path}: written by a newer autolabel ({what} {version}); upgrade autolabel")
        self._wal = self._wal_identity()

    # -- connections --------------------------------------------------------------------------------------------
    def _connect(self, any_thread: bool = False) -> sqlite3.Connection:
        """A connection; ``any_thread``: usable (and closable) from a thread other than the one opening it."""
        if self.readonly:
            return sqlite3.connect(self._uri(), uri=True, timeout=30, check_same_thread=not any_thread)
        conn = sqlite3.connect(self.path, timeout=30, check_same_thread=not any_thread)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # with WAL: durable across process crashes, fast commits
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    def _uri(self) -> str:
        """A read-only connection's URI: ``mode=ro``, or ``immutable=1`` where SQLite could not create the shared
        memory file a WAL reader needs (a read-only folder) — refused when a log there holds unread commits."""
        base = "file:" + quote(os.fsencode(self.path.resolve()))
        wal = Path(f"{self.path}-wal")
        if os.access(self.folder, os.W_OK) or Path(f"{self.path}-shm").is_file():
            return base + "?mode=ro"
        if wal.is_file() and wal.stat().st_size > 0:
            raise StoreError(
                f"{self.path}: the folder is read-only and its write-ahead log {wal.name} holds commits not yet in "
                f"the store, which SQLite cannot read there; copy the folder somewhere writable and read that copy"
            )
        return base + "?immutable=1"

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

    def _quick_check(self) -> None:
        rows = [r[0] for r in self._conn.execute("PRAGMA quick_check(3)")]
        if rows != ["ok"]:
            raise StoreError(f"{self.path}: the run store is damaged (quick_check: {'; '.join(map(one_line, rows))}); "
                             f"it was not changed: {recovery(self.folder)}")

    def _check_structure(self, existing_only: bool = False) -> None:
        """Every table a reader needs, with its columns; ``existing_only``: the tables there are (a new store has
        none; a database with tables but no ``meta`` is someone else's)."""
        tables = {row[0] for row in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if existing_only and tables and "meta" not in tables:
            raise StoreError(f"{self.path}: not a run store of autolabel (no table meta, but tables "
                             f"{', '.join(sorted(tables)[:5])}); pass the output folder of a run, or move this file "
                             "away")
        for table, needed in _REQUIRED.items():
            if existing_only and table not in tables:
                continue
            have = {row[1] for row in self._conn.execute(f"PRAGMA table_info({table})")}
            missing = sorted(needed - have)
            if missing:
                what = "no table " + table if not have else f"table {table} lacks {', '.join(missing)}"
                raise StoreError(f"{self.path}: not a run store of autolabel ({what}); pass the output folder of a "
                                 f"run, or move this file away")

    def _error(self, err: sqlite3.Error, what: str) -> StoreError:
        """One line for an SQLite failure: a damaged file names the recovery; a deleted log says so."""
        lost = self._wal_problem()
        if lost is not None:
            return StoreError(f"{self.path}-wal: {lost} while autolabel had the store open (by another program?); "
                              f"cannot {what}: run again (it labels what the store does not hold)")
        if _is_damage(err):
            return StoreError(f"{self.path}: the run store is damaged ({one_line(err)}); cannot {what}: "
                              f"{recovery(self.folder)}")
        hint = ": the folder is read-only" if self.readonly else ""
        return StoreError(f"{self.path}: cannot {what} ({one_line(err)}){hint}")

    @contextmanager
    def _reading(self, what: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.ProgrammingError:
            raise  # a connection used from the wrong thread, or after close: a bug, not the file's fault
        except sqlite3.Error as err:
            raise self._error(err, what) from None

    @contextmanager
    def _writing(self, what: str) -> Iterator[None]:
        """A write transaction on the main connection; SQLite's failures (a full disk, a read-only or locked file)
        become one line naming the store. The transaction is rolled back: what was committed before stays.
        The write-ahead log is checked before and after: see :meth:`_rescue`."""
        self._check_wal()
        try:
            with self._conn:
                yield
        except sqlite3.Error as err:
            if self._wal_problem() is None and not _is_damage(err):
                readonly = " (the store was opened read-only: its folder cannot be written)" if self.readonly else ""
                raise StoreError(
                    f"{self.path}: cannot {what} ({one_line(err)}){readonly}; what was committed before is kept: "
                    "free space or fix the folder's permissions, then run again"
                ) from None
            self._check_wal()
            raise self._error(err, what) from None
        self._check_wal()

    # -- the write-ahead log --------------------------------------------------------------------------------------
    def _wal_identity(self) -> tuple[int, int] | None:
        if self.readonly:
            return None
        try:
            st = os.stat(f"{self.path}-wal")
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def _wal_problem(self) -> str | None:
        """How the log this store writes to was taken away (deleted, replaced), or None."""
        if self._wal is None:
            return None
        now = self._wal_identity()
        if now is None:
            return "deleted"
        return None if now == self._wal else "replaced by another file"

    def _check_wal(self) -> None:
        problem = self._wal_problem()
        if problem is not None:
            self._rescue(problem)

    def _rescue(self, problem: str) -> None:
        """The log was deleted or replaced: what this store committed since the last checkpoint lives only in the
        old log, which the main connection still holds open. Checkpoint it into the database file from there,
        reopen every connection, count what the store holds of this store's runs, and stop with that count: a run
        must not claim labels are kept when they are not."""
        with suppress(sqlite3.Error):  # what it could not copy is lost: the count below says how much
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        self._close_connections()
        try:
            self._conn = self._connect()
            marks = ",".join("?" * len(self._runs))
            held = self._conn.execute(
                f"SELECT COUNT(*) FROM images WHERE run_id IN ({marks})", self._runs
            ).fetchone()[0] if self._runs else 0
        except sqlite3.Error as err:
            self._wal = None
            raise StoreError(f"{self.path}-wal: {problem} during the run (by another program?), and the store cannot "
                             f"be reopened ({one_line(err)}): {recovery(self.folder)}") from None
        self._wal = self._wal_identity()
        kept = (f"all {held} results committed by this run were saved into {self.path.name} from the open log"
                if held >= self._committed else
                f"{held} of the {self._committed} results committed by this run are in the store, the rest is lost")
        raise StoreError(f"{self.path}-wal: {problem} during the run (by another program?); the run stopped: {kept}; "
                         "run again to label the rest")

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
        if self._wal_problem() is not None:  # save what the open log holds before the last handle on it goes
            with suppress(sqlite3.Error):
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        self._close_connections()
        self._wal = None  # SQLite deletes the log as the last connection closes
        self._closed = True

    def _close_connections(self) -> None:
        with self._others_lock:
            others, self._others = self._others, []
        for conn in others:
            conn.close()
        self._local = threading.local()
        self._conn.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- meta ---------------------------------------------------------------------------------------------------
    def meta(self, key: str) -> str | None:
        with self._reading("read the store's meta table"):
            row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    # -- runs ---------------------------------------------------------------------------------------------------
    def begin_run(self, pipeline_hash: str, pipeline: dict[str, Any]) -> int:
        """Record a run's start; its id goes on after every run recorded here or in ``runs/`` (a store started
        anew beside an old history never reuses a run's number)."""
        from .history import last_recorded

        with self._writing("record the start of a run"):
            last = self._conn.execute("SELECT MAX(id) FROM runs").fetchone()[0] or 0
            cur = self._conn.execute(
                "INSERT INTO runs (id, started, status, pipeline_hash, pipeline) VALUES (?, ?, ?, ?, ?)",
                (max(last, last_recorded(self.folder)) + 1, time.time(), RunStatus.RUNNING.value, pipeline_hash,
                 json.dumps(pipeline, default=str)),
            )
        self._runs.append(int(cur.lastrowid))
        return int(cur.lastrowid)

    def end_run(self, run_id: int, status: RunStatus | str, summary: dict[str, Any]) -> None:
        with self._writing(f"record the end of run {run_id}"):
            self._conn.execute(
                "UPDATE runs SET ended = ?, status = ?, summary = ? WHERE id = ?",
                (time.time(), RunStatus(status).value, json.dumps(summary, default=str), run_id),
            )

    def end_stale_runs(self, note: str) -> list[int]:
        """Mark every run still ``running`` as ``interrupted`` (call it holding the folder's lock: none of them
        can be alive); return their ids."""
        with self._writing("mark runs that never ended as interrupted"):
            ids = [r[0] for r in self._conn.execute("SELECT id FROM runs WHERE status = ?", (RunStatus.RUNNING.value,))]
            self._conn.executemany(
                "UPDATE runs SET status = ?, summary = ? WHERE id = ?",
                [(RunStatus.INTERRUPTED.value, json.dumps({"run_id": i, "status": "interrupted", "error": note}), i)
                 for i in ids],
            )
        return ids

    def runs(self) -> list[dict[str, Any]]:
        """Every run, oldest first; a summary that cannot be parsed reads as ``{"error": why}``."""
        with self._reading("read the runs"):
            rows = list(self._conn.execute(
                "SELECT id, started, ended, status, pipeline_hash, summary FROM runs ORDER BY id"))
        keys = ("id", "started", "ended", "status", "pipeline_hash", "summary")
        return [dict(zip(keys, r)) | {"summary": _summary(r[5])} for r in rows]

    def last_pipeline(self) -> dict[str, Any] | None:
        """The pipeline (as validated, JSON) of the most recent run, or None."""
        with self._reading("read the last run's pipeline"):
            row = self._conn.execute("SELECT id, pipeline FROM runs ORDER BY id DESC LIMIT 1").fetchone()
        if row is None:
            return None
        try:
            pipeline = json.loads(row[1])
        except (ValueError, TypeError, RecursionError) as err:
            pipeline, why = None, f"invalid JSON ({one_line(err)})"
        else:
            why = None if isinstance(pipeline, dict) else "not a mapping"
        if why is not None:
            raise StoreError(f"{self.path}: the pipeline recorded by run {row[0]} cannot be read ({why}); "
                             "pass --pipeline FILE")
        return pipeline

    # -- images -------------------------------------------------------------------------------------------------
    def is_done(self, path: str, sha256: str, pipeline_hash: str) -> bool:
        """Whether this exact content was already labeled by this pipeline, with labels that read back (a row
        that does not is labeled again). Safe to call from any thread; a failing read says "not done" (the
        image is labeled again, and the commit that follows reports the store's problem)."""
        if self._closed:  # a decode thread still busy after the run ended: its answer is not needed
            return False
        try:
            conn = getattr(self._local, "conn", None)
            if conn is None:
                conn = self._local.conn = self._connect_other()  # closed by close(), from the main thread
            row = conn.execute(
                "SELECT labels, width, height FROM images WHERE path = ? AND sha256 = ? AND pipeline_hash = ? "
                "AND status = ?", (to_key(path), sha256, pipeline_hash, ImageStatus.DONE.value),
            ).fetchone()
        except (sqlite3.Error, StoreError):
            return False
        return row is not None and read_labels(*row)[1] is None

    def cached(self, sha256: str, keys: list[str]) -> dict[str, dict[str, Any]]:
        """The cached stage outputs of this content among ``keys`` (key → labels record); see autolabel.cache.
        An output that does not read back counts as not cached."""
        if not keys:
            return {}
        marks = ",".join("?" * len(keys))
        with self._reading("read cached stage outputs"):
            rows = list(self._conn.execute(
                f"SELECT key, labels FROM stage_outputs WHERE sha256 = ? AND key IN ({marks})", (sha256, *keys)))
        out = {}
        for key, text in rows:
            record, _ = read_labels(text, 1, 1)
            if record is not None:
                out[key] = record
        return out

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
                to_key(r.path), to_key(r.rel_path), r.sha256, r.width, r.height, ImageStatus(r.status).value, r.reason,
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
        self._committed += len(rows)

    def count(self, status: ImageStatus | str | None = None) -> int:
        with self._reading("count images"):
            if status is None:
                return int(self._conn.execute("SELECT COUNT(*) FROM images").fetchone()[0])
            query = "SELECT COUNT(*) FROM images WHERE status = ?"
            return int(self._conn.execute(query, (ImageStatus(status).value,)).fetchone()[0])

    def images(self, status: ImageStatus | str = ImageStatus.DONE, labels: bool = True) -> Iterator[dict[str, Any]]:
        """Stream image rows in id order without loading them all (``labels`` parsed unless ``labels=False``).

        A done row whose labels do not read back (invalid JSON, not the record's shape) is skipped and kept in
        :attr:`bad_rows` (id → (rel_path, problem)), for the caller to report; the next run labels it again.
        Uses a connection of its own, so that the caller may commit on the main one while iterating. The stream
        may be closed (or garbage-collected) from any thread: its connection allows that.
        """
        keys = _IMAGE_COLUMNS + (["labels"] if labels else [])
        with self._reading("read images"):
            conn = self._connect_other()
        try:
            query = f"SELECT {', '.join(keys)} FROM images WHERE status = ? ORDER BY id"
            with self._reading("read images"):
                for row in conn.execute(query, (ImageStatus(status).value,)):
                    item = dict(zip(keys, row))
                    item["path"], item["rel_path"] = from_key(item["path"]), from_key(item["rel_path"])
                    if labels:
                        text = item["labels"]
                        if text is None and status != ImageStatus.DONE:
                            item["labels"] = None
                        else:
                            item["labels"], why = read_labels(text, item["width"], item["height"])
                            if why is not None:
                                self.bad_rows[item["id"]] = (item["rel_path"], why)
                                continue
                    yield item
        finally:
            self._release(conn)

    def bad_rows_line(self, limit: int = 3) -> str | None:
        """One line about the rows :meth:`images` skipped (the first few by name and why), or None."""
        if not self.bad_rows:
            return None
        first = "; ".join(f"{shown(name)}: {why}" for name, why in list(self.bad_rows.values())[:limit])
        more = f" (and {len(self.bad_rows) - limit} more)" if len(self.bad_rows) > limit else ""
        return (f"{len(self.bad_rows)} labeled images left out: their stored labels cannot be read ({first}{more}); "
                "run the pipeline again on them to label them again")


def read_labels(text: Any, width: Any, height: Any) -> tuple[dict[str, Any] | None, str | None]:
    """A stored row's labels parsed and checked: ``(record, None)``, or ``(None, why)`` when they do not read back.

    >>> read_labels('{"width": 2', 2, 1)[1]
    "invalid JSON (Expecting ',' delimiter: line 1 column 12 (char 11))"
    """
    if type(width) is not int or type(height) is not int:
        return None, "the image's size is not recorded"
    if text is None:
        return None, "no labels recorded"
    try:
        record = json.loads(text)
    except (ValueError, TypeError, RecursionError) as err:
        return None, f"invalid JSON ({one_line(err)})"
    why = problem(record)
    return (record, None) if why is None else (None, why)


def _summary(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        summary = json.loads(text)
    except (ValueError, RecursionError) as err:
        return {"error": f"the stored summary cannot be read (invalid JSON: {one_line(err)})"}
    return summary if isinstance(summary, dict) else {"error": "the stored summary is not a mapping"}


def _is_damage(err: sqlite3.Error) -> bool:
    """SQLITE_CORRUPT / SQLITE_NOTADB: the file's content is wrong (not a lock, a full disk, a permission)."""
    name = getattr(err, "sqlite_errorname", "") or ""
    text = str(err)
    return name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or "malformed" in text or "not a database" in text


def _cannot_write(folder: Path, path: Path) -> bool:
    """Whether an existing store must be opened read-only: its folder or its file cannot be written."""
    return path.is_file() and not (os.access(folder, os.W_OK) and os.access(path, os.W_OK))


def _refuse_truncated(path: Path, folder: Path) -> None:
    """A 0-byte store where runs are recorded was truncated (a full disk while copying, a bad restore): SQLite
    would take it for a new, empty one, and the next run would relabel everything. Refuse, naming the fix."""
    from .history import last_recorded

    try:
        if path.stat().st_size:
            return
    except FileNotFoundError:
        return
    wal = Path(f"{path}-wal")
    if wal.is_file() and wal.stat().st_size:
        return  # a store created and killed before its first checkpoint: the log holds it
    recorded = last_recorded(folder)
    if recorded:
        raise StoreError(
            f"{path}: the run store is empty (0 bytes) but {folder / 'runs'} records runs up to run {recorded}: it "
            f"was truncated; restore it from a backup, or start a new one that keeps the history: "
            f"{recovery(folder)}"
        )
