"""``autolabel schedule``: run a pipeline on a cron expression, in-process, for users without a scheduler.

The pipeline file is re-read before each run (edit it between runs; models are kept loaded while their
declarations do not change). Runs never overlap: the next fire time is computed after a run ends, so a run that
outlasts its slot skips the missed slots instead of queueing a burst. A run refused by another process's lock is
logged and the schedule goes on; Ctrl-C / SIGTERM stops it (during a run: after that run's batch in flight).
"""

from __future__ import annotations

import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Callable, Sequence

from .errors import AutolabelError, ConfigError, ExitCode
from .lock import LockedError


def next_fire(cron: str, after: datetime) -> datetime:
    """The first time strictly after ``after`` that matches ``cron`` (5 fields, or 6 with seconds last)."""
    from croniter import croniter

    return croniter(cron, after).get_next(datetime)


def check_cron(cron: str) -> None:
    from croniter import croniter

    if not croniter.is_valid(cron):
        raise ConfigError(
            f"--cron {cron!r}: not a cron expression (5 fields: minute hour day-of-month month day-of-week, "
            f"e.g. '0 2 * * *'; a 6th field for seconds, e.g. '* * * * * */10')"
        )


def schedule(
    pipeline_file: str | Path,
    cron: str,
    *,
    input: Sequence[str] | None = None,  # noqa: A002 — mirrors the CLI
    output: str | None = None,
    overrides: Sequence[str] = (),
    set_files: Sequence[str] = (),
    max_runs: int | None = None,
    progress: bool = False,
    log: Callable[[str], None] = lambda line: print(f"autolabel schedule: {line}", file=sys.stderr, flush=True),
) -> ExitCode:
    """Run the pipeline at each fire time of ``cron``; return the exit code of the last run (0 if none ran)."""
    from .overrides import collect_overrides
    from .pipeline import Pipeline
    from .runner import run

    check_cron(cron)
    Pipeline.from_yaml(pipeline_file, collect_overrides(set_files, overrides))  # a broken file fails now, not at 2 a.m.
    runs, last, models = 0, ExitCode.OK, None
    while max_runs is None or runs < max_runs:
        when = next_fire(cron, datetime.now().astimezone())
        log(f"next run at {when.isoformat(timespec='seconds')}")
        if not _sleep_until(when.timestamp()):
            log("stopped")
            return ExitCode.INTERRUPTED
        runs += 1
        try:
            # the --set-file is re-read too: thresholds calibrated since the last run apply to this one
            every = collect_overrides(set_files, overrides)
            pipeline = Pipeline.from_yaml(pipeline_file, every, models=models)  # loaded weights carry over
            models = pipeline.models
            summary = run(pipeline, input=input, output=output, progress=progress)
        except LockedError as err:
            log(f"run {runs} skipped: {err}")
            last = err.exit_code
            continue
        except AutolabelError as err:
            log(f"run {runs} failed: {err}")
            last = err.exit_code
            continue
        c = summary.counts
        log(f"run {runs}: {summary.status}: {c['labeled']} labeled, {c['skipped']} already done, {c['failed']} failed")
        last = summary.exit_code
        if summary.status == "interrupted":
            return last
    return last


def _sleep_until(deadline: float) -> bool:
    """Sleep until ``deadline`` in short steps; False if interrupted (Ctrl-C / SIGTERM)."""
    import signal

    stop = {"flag": False}

    def handle(signum, frame):  # noqa: ANN001, ANN202
        stop["flag"] = True

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop["flag"]:
            left = deadline - time.time()
            if left <= 0:
                return True
            time.sleep(min(left, 0.5))
        return False
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
