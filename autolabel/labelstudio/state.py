"""Which Label Studio task holds which image: tables of their own in the run store's SQLite file.

``ls_tasks`` has one row per (project, image key): the task id, and the hash of the prediction last pushed to it,
so that pushing again adds only new images and replaces only predictions that changed. ``ls_uploads`` remembers
images uploaded to a project (``--images upload``), so none is uploaded twice.

A project is known by its id and creation time (:func:`project_uid`), not by the URL it was reached at: the same
server behind ``localhost`` or a proxy is the same project, and two servers' project 1 are not.

The project itself stays the source of truth: each push lists its tasks (they carry our key in
``data.autolabel_key``) and reconciles; this table tells it which of them are up to date.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Iterable

from ..store import Store

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ls_tasks (
    project TEXT NOT NULL,           -- project_uid(): "<id>@<created_at>"
    server TEXT NOT NULL,            -- the base URL of the last push (for people)
    project_id INTEGER NOT NULL,
    key TEXT NOT NULL,               -- data.autolabel_key of the task (the image's content hash)
    image_id INTEGER NOT NULL,       -- images.id in this store
    task_id INTEGER NOT NULL,
    prediction_hash TEXT NOT NULL,   -- media.input_hash: what the pushed prediction was built from
    model_version TEXT NOT NULL,
    pushed REAL NOT NULL,
    PRIMARY KEY (project, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ls_uploads (
    project TEXT NOT NULL,
    key TEXT NOT NULL,
    url TEXT NOT NULL,               -- what Label Studio serves the uploaded file as (/data/upload/...)
    PRIMARY KEY (project, key)
) WITHOUT ROWID;
"""


@dataclass(frozen=True)
class Recorded:
    """What the last push recorded for one image key."""

    task_id: int
    prediction_hash: str


def project_uid(project: Any, server: str) -> str:
    """``<id>@<created_at>``: a project's identity whatever URL reached it (``<id>@<server>`` if no time is given)."""
    created = getattr(project, "created_at", None)
    stamp = created.isoformat() if hasattr(created, "isoformat") else (str(created) if created else server)
    return f"{int(project.id)}@{stamp}"


class PushState:
    """The push records of one project, in ``store``'s database."""

    def __init__(self, store: Store, project: Any, server: str):
        self._conn = store._conn  # the store's own connection: same file, same transactions
        self.project, self.server, self.project_id = project_uid(project, server), server, int(project.id)
        with self._conn:
            self._conn.executescript(_SCHEMA)

    def recorded(self) -> dict[str, Recorded]:
        rows = self._conn.execute(
            "SELECT key, task_id, prediction_hash FROM ls_tasks WHERE project = ?", (self.project,)
        )
        return {key: Recorded(int(task), str(phash)) for key, task, phash in rows}

    def record(self, rows: Iterable[tuple[str, int, int, str, str]]) -> None:
        """Record (key, image_id, task_id, prediction_hash, model_version) rows, in one transaction."""
        now = time.time()
        with self._conn:
            self._conn.executemany(
                "INSERT OR REPLACE INTO ls_tasks (project, server, project_id, key, image_id, task_id, "
                "prediction_hash, model_version, pushed) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(self.project, self.server, self.project_id, k, i, t, h, m, now) for k, i, t, h, m in rows],
            )

    def uploads(self) -> dict[str, str]:
        rows = self._conn.execute(
            "SELECT key, url FROM ls_uploads WHERE project = ?", (self.project,)
        )
        return dict(rows.fetchall())

    def record_upload(self, key: str, url: str) -> None:
        with self._conn:
            self._conn.execute(
                "INSERT OR REPLACE INTO ls_uploads (project, key, url) VALUES (?, ?, ?)", (self.project, key, url),
            )
