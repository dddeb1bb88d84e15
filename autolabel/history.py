"""Run history: ``autolabel runs``, for people (a table) and machines (JSON lines), from the store and the
``runs/run-NNNNN.json`` files (:mod:`autolabel.runlog` writes them, never overwritten).

A run killed without a chance to record its end (``kill -9``, a power cut) stays ``running`` in the store; it is
shown as ``interrupted`` once no process holds the folder's lock (and marked so by the next run).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from .errors import AutolabelError, ExitCode, RunStatus
from .lock import holder
from .names import shown
from .runlog import NEVER_ENDED, RUNS_DIR, last_recorded, write_record
from .util import iso_utc

__all__ = ["NEVER_ENDED", "RUNS_DIR", "last_recorded", "load_runs", "print_runs", "write_record"]


def load_runs(output: str | Path, last: int | None = None) -> list[dict[str, Any]]:
    """Every recorded run, oldest first: id, status, start, end, counts, per-stage seconds, failures."""
    from .store import DB_NAME, Store

    output = Path(output)
    if not (output / DB_NAME).is_file():
        raise AutolabelError(f"{output}: no run store ({DB_NAME}) here; pass the output folder of a run")
    with Store(output) as store:
        runs = store.runs()
    alive = holder(output) is not None
    running = [r["id"] for r in runs if r["status"] == RunStatus.RUNNING.value]
    rows = []
    for r in runs[-last:] if last else runs:
        summary = r["summary"] or {}
        status, error = r["status"], summary.get("error")
        if status == RunStatus.RUNNING.value and not (alive and r["id"] == running[-1]):
            status, error = RunStatus.INTERRUPTED.value, NEVER_ENDED  # only the newest can be the lock's holder
        rows.append({
            "id": r["id"],
            "status": status,
            "started": iso_utc(r["started"]),
            "ended": iso_utc(r["ended"]),
            "seconds": summary.get("seconds"),
            "counts": summary.get("counts", {}),
            "stage_seconds": summary.get("stage_seconds", {}),
            "failures": summary.get("failures", []),
            "pipeline_hash": r["pipeline_hash"],
            "error": error,
        })
    return rows


def print_runs(output: str | Path, as_json: bool = False, last: int | None = None) -> ExitCode:
    rows = load_runs(output, last)
    if as_json:
        for row in rows:
            print(json.dumps(row))
        return ExitCode.OK
    print(f"{'run':>4}  {'status':<11} {'started':<25} {'seconds':>8}  {'seen':>6} {'labeled':>7} {'skipped':>7} "
          f"{'failed':>6}  stages")
    for row in rows:
        c = row["counts"]
        stages = ", ".join(f"{k} {v:.1f}s" for k, v in row["stage_seconds"].items())
        seconds = "" if row["seconds"] is None else f"{row['seconds']:.1f}"
        print(f"{row['id']:>4}  {row['status']:<11} {row['started'] or '':<25} {seconds:>8}  {c.get('seen', ''):>6} "
              f"{c.get('labeled', ''):>7} {c.get('skipped', ''):>7} {c.get('failed', ''):>6}  {stages}")
        if row["error"]:
            print(f"      error: {shown(row['error'])}")
    if not rows:
        print("(no runs recorded)", file=sys.stderr)
    return ExitCode.OK
