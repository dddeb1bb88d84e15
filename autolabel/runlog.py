"""The ``runs/`` folder of an output folder: each run's ``run-NNNNN.json``, written once and never replaced.

The runner writes a run's record here when the run ends; the store numbers a new store's runs after the last one
recorded; ``autolabel runs`` (:mod:`autolabel.history`) reads them back.
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

from .util import atomic_open

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
