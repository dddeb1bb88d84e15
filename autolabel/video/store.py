"""Clips and their frames in the run store (the same SQLite file as the images, two tables of their own).

A clip's row says how far it got: ``next_frame`` (the first sampled position not committed) and ``next_track``
(the next free track id). Each chunk's frames are committed in one transaction with that progress, so a killed
run resumes at the chunk in flight; a clip is ``done`` once its track filters ran over all its frames. A clip's
``plan_hash`` covers the pipeline and the sampling: when either changes, or the file's content does, the clip is
labeled again from its first frame.

Frame labels are the records of :mod:`autolabel.records` (one per sampled frame), with the box column ``track_id``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Any

from ..store import Store

_SCHEMA = """
CREATE TABLE IF NOT EXISTS clips (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL UNIQUE,       -- absolute path (or URL) of the source
    rel_path TEXT NOT NULL,          -- relative to its input root: the name exports use
    sha256 TEXT,
    width INTEGER,                   -- displayed frame size
    height INTEGER,
    fps REAL,                        -- the stream's average frame rate (None: unknown)
    duration REAL,                   -- seconds, as the container says
    status TEXT NOT NULL,            -- ClipStatus: running | done | failed
    reason TEXT,                     -- why it failed (one line)
    plan_hash TEXT,                  -- the pipeline's hash and the sampling (autolabel.video.loop.plan_hash)
    sampling TEXT,                   -- the sampling rule in words (fps=2, every=5, all)
    run_id INTEGER,
    next_frame INTEGER NOT NULL DEFAULT 0,   -- sampled frames committed (the first position not committed)
    next_track INTEGER NOT NULL DEFAULT 1,   -- the next free track id (ids start at 1)
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS frames (
    clip_id INTEGER NOT NULL,
    position INTEGER NOT NULL,       -- 0, 1, 2, ... among the clip's sampled frames
    frame_index INTEGER NOT NULL,    -- 0-based decode order in the file
    time REAL NOT NULL,              -- seconds since the stream's start
    labels TEXT NOT NULL,            -- records.to_record(...) as JSON
    PRIMARY KEY (clip_id, position)
) WITHOUT ROWID;
"""


class ClipStatus(str, Enum):
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class ClipRow:
    """A clip as the store holds it."""

    id: int
    path: str
    rel_path: str
    sha256: str | None
    width: int | None
    height: int | None
    fps: float | None
    duration: float | None
    status: str
    reason: str | None
    plan_hash: str | None
    sampling: str | None
    next_frame: int
    next_track: int


@dataclass(frozen=True)
class FrameRow:
    """One sampled frame of a clip and its labels record."""

    position: int
    index: int
    time: float
    labels: dict[str, Any]


_CLIP_COLUMNS = ("id, path, rel_path, sha256, width, height, fps, duration, status, reason, plan_hash, sampling, "
                 "next_frame, next_track")


def _dumps(record: dict[str, Any]) -> str:
    return json.dumps(record, separators=(",", ":"))


class ClipStore:
    """The clip tables of a run store (created on first use; older autolabel versions ignore them)."""

    def __init__(self, store: Store):
        self.store = store
        with store.transaction("create the clip tables") as conn:
            for statement in filter(str.strip, _SCHEMA.split(";")):
                conn.execute(statement)

    def get(self, path: str) -> ClipRow | None:
        row = self.store.query(f"SELECT {_CLIP_COLUMNS} FROM clips WHERE path = ?", (path,)).fetchone()
        return ClipRow(*row) if row else None

    def count(self, status: ClipStatus | str | None = None) -> int:
        if status is None:
            return int(self.store.query("SELECT COUNT(*) FROM clips").fetchone()[0])
        return int(self.store.query("SELECT COUNT(*) FROM clips WHERE status = ?", (str(status),)).fetchone()[0])

    def clips(self, status: ClipStatus | str = ClipStatus.DONE) -> list[ClipRow]:
        """The clips of a status in id order (a few rows each: a list is fine)."""
        rows = self.store.query(f"SELECT {_CLIP_COLUMNS} FROM clips WHERE status = ? ORDER BY id", (str(status),))
        return [ClipRow(*r) for r in rows]

    def begin(
        self, path: str, rel_path: str, sha256: str, info: dict[str, Any], plan_hash: str, sampling: str, run_id: int
    ) -> ClipRow:
        """Start labeling a clip, or carry on with it: a clip of the same content and plan keeps its committed
        frames and resumes at ``next_frame``; any other is emptied and starts again at frame 0."""
        old = self.get(path)
        keep = old is not None and old.sha256 == sha256 and old.plan_hash == plan_hash
        with self.store.transaction(f"start clip {rel_path}") as conn:
            if old is not None and not keep:
                conn.execute("DELETE FROM frames WHERE clip_id = ?", (old.id,))
            conn.execute(
                """INSERT INTO clips (path, rel_path, sha256, width, height, fps, duration, status, reason, plan_hash,
                                      sampling, run_id, next_frame, next_track, updated)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?, ?, 0, 1, ?)
                   ON CONFLICT (path) DO UPDATE SET
                     rel_path = excluded.rel_path, sha256 = excluded.sha256, width = excluded.width,
                     height = excluded.height, fps = excluded.fps, duration = excluded.duration,
                     status = excluded.status, reason = NULL, plan_hash = excluded.plan_hash,
                     sampling = excluded.sampling, run_id = excluded.run_id, updated = excluded.updated,
                     next_frame = CASE WHEN ? THEN clips.next_frame ELSE 0 END,
                     next_track = CASE WHEN ? THEN clips.next_track ELSE 1 END""",
                (path, rel_path, sha256, info.get("width"), info.get("height"), info.get("fps"), info.get("duration"),
                 str(ClipStatus.RUNNING), plan_hash, sampling, run_id, time.time(), keep, keep),
            )
        row = self.get(path)
        assert row is not None
        return row

    def commit_chunk(
        self, clip_id: int, frames: Iterable[tuple[int, int, float, dict[str, Any]]], next_frame: int,
        next_track: int, stage_outputs: Iterable[tuple[str, str, dict[str, Any]]] = (),
    ) -> None:
        """One chunk's new frames ``(position, index, time, record)``, the clip's progress and the chunk's stage
        outputs to cache (:class:`autolabel.cache.Row`), in one transaction."""
        rows = [(clip_id, p, i, t, _dumps(r)) for p, i, t, r in frames]
        with self.store.transaction(f"commit {len(rows)} frames") as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO frames (clip_id, position, frame_index, time, labels) VALUES (?, ?, ?, ?, ?)",
                rows,
            )
            conn.execute("UPDATE clips SET next_frame = ?, next_track = ?, updated = ? WHERE id = ?",
                         (next_frame, next_track, time.time(), clip_id))
            conn.executemany("INSERT OR REPLACE INTO stage_outputs (sha256, key, labels) VALUES (?, ?, ?)",
                             [(sha, key, _dumps(rec)) for sha, key, rec in stage_outputs])

    def frames(self, clip_id: int, start: int = 0, end: int | None = None, batch: int = 64) -> Iterator[FrameRow]:
        """The clip's committed frames with positions in ``[start, end)``, in order, read ``batch`` at a time (so
        the caller may write between reads, and memory stays flat in the clip's length)."""
        position = start
        while end is None or position < end:
            rows = self.store.query(
                "SELECT position, frame_index, time, labels FROM frames WHERE clip_id = ? AND position >= ? "
                "AND position < ? ORDER BY position LIMIT ?",
                (clip_id, position, end if end is not None else 2**62, batch),
            ).fetchall()
            if not rows:
                return
            for p, i, t, labels in rows:
                yield FrameRow(p, i, t, json.loads(labels))
            position = rows[-1][0] + 1

    def finish(self, clip_id: int, rewrite: Callable[[FrameRow], dict[str, Any] | None]) -> None:
        """Pass every frame of the clip to ``rewrite`` (a batch at a time), store the records it returns (None:
        unchanged), and mark the clip done, all in one transaction: a clip is done with all its decisions or not."""
        with self.store.transaction("finish a clip") as conn:
            for frame in self.frames(clip_id):
                record = rewrite(frame)
                if record is not None:
                    conn.execute("UPDATE frames SET labels = ? WHERE clip_id = ? AND position = ?",
                                 (_dumps(record), clip_id, frame.position))
            conn.execute("UPDATE clips SET status = ?, reason = NULL, updated = ? WHERE id = ?",
                         (str(ClipStatus.DONE), time.time(), clip_id))

    def fail(self, path: str, rel_path: str, sha256: str | None, reason: str, run_id: int) -> None:
        """Record why a clip could not be labeled (its committed frames, if any, stay for the next run)."""
        with self.store.transaction(f"record the failure of {rel_path}") as conn:
            conn.execute(
                """INSERT INTO clips (path, rel_path, sha256, status, reason, run_id, updated)
                   VALUES (?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (path) DO UPDATE SET status = excluded.status, reason = excluded.reason,
                     run_id = excluded.run_id, updated = excluded.updated,
                     sha256 = COALESCE(excluded.sha256, clips.sha256)""",
                (path, rel_path, sha256, str(ClipStatus.FAILED), reason, run_id, time.time()),
            )
