"""``autolabel runs``: the history of an output folder, for people (a table) and machines (JSON lines)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from .errors import AutolabelError, ExitCode
from .store import DB_NAME, Store
from .util import iso_utc


def load_runs(output: str | Path, last: int | None = None) -> list[dict[str, Any]]:
    """Every recorded run, oldest first: id, status, start, end, counts, per-stage seconds, failures."""
    output = Path(output)
    if not (output / DB_NAME).is_file():
        raise AutolabelError(f"{output}: no run store ({DB_NAME}) here; pass the output folder of a run")
    with Store(output) as store:
        runs = store.runs()
    rows = []
    for r in runs[-last:] if last else runs:
        summary = r["summary"] or {}
        rows.append({
            "id": r["id"],
            "status": r["status"],
            "started": iso_utc(r["started"]),
            "ended": iso_utc(r["ended"]),
            "seconds": summary.get("seconds"),
            "counts": summary.get("counts", {}),
            "stage_seconds": summary.get("stage_seconds", {}),
            "failures": summary.get("failures", []),
            "pipeline_hash": r["pipeline_hash"],
            "error": summary.get("error"),
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
            print(f"      error: {row['error']}")
    if not rows:
        print("(no runs recorded)", file=sys.stderr)
    return ExitCode.OK
