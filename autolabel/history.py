"""Run history: ``runs/run-NNNNN.json`` files (never overwritten) and ``autolabel runs``, for people (a table) and
machines (JSON lines).

A run killed without a chance to record its end (``kill -9``, a power cut) stays ``running`` in the store; it is
shown as ``interrupted`` once no process holds the folder's lock (and marked so by the next run).
"""

from __future__ import annotations

import errno
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from .errors import AutolabelError, ExitCode, RunStatus
from .lock import holder
from .names import shown
from .util import atomic_open, iso_utc

RUNS_DIR = "runs"
_RECORD = re.compile(r"run-(\d+)(?:~\d+)?\.json")
#: what a run that never recorded its end is said to have met
NEVER_ENDED = "the process ended without recording the run's end (killed, or the machine stopped)"


def last_recorded(output: str | Path) -> int:
    """The highest run number with a file in ``output/runs`` (0 when none): a new store's runs go on after it."""
    try:
        names = os.listdir(Path(output) / RUNS_DIR)
    except OSError:
        return 0
    return max((int(m.group(1)) for m in map(_RECORD.fullmatch, names) if m), default=0)


def write_record(output: str | Path, run_id: int, text: str) -> Path:
    """Write ``runs/run-NNNNN.json`` without ever replacing one (a run's record is history): when the name is
    taken (a store replaced by hand), ``run-NNNNN~2.json``, ``~3``... Returns the path written."""
    folder = Path(output) / RUNS_DIR
    with atomic_open(folder / f".run-{run_id:05d}.json") as f:  # a complete temp file, then linked into place
        f.write(text)
    temp = folder / f".run-{run_id:05d}.json"
    try:
        for n in range(1, 1000):
            target = folder / (f"run-{run_id:05d}.json" if n == 1 else f"run-{run_id:05d}~{n}.json")
            try:
                os.link(temp, target)  # fails if the name exists: never replaces
                return target
            except FileExistsError:
                continue
        raise OSError(errno.EEXIST, f"run-{run_id:05d}.json and 998 alternatives exist")
    finally:
        temp.unlink(missing_ok=True)


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
