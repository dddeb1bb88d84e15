"""The run loop: discover → decode in background threads → stages in batches → commit → exports → run.json.

One bad image costs one image: a batch that raises is retried image by image. Ctrl-C (or SIGTERM) lets the
batch in flight finish and be committed, then stops; running the same command again resumes.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import socket
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from tqdm import tqdm

from . import __version__
from .errors import AutolabelError, ConfigError, ExitCode, ExportError, NothingLabeledError, RunStatus, one_line
from .history import NEVER_ENDED, write_record
from .intake import IMAGE_EXTENSIONS, discover
from .lock import RunLock
from .names import shown
from .store import ImageResult, Store
from .util import atomic_write_text, iso_utc

if TYPE_CHECKING:
    from .cache import Row
    from .pipeline import Pipeline

MAX_FAILURES_LISTED = 1000


@dataclass
class RunSummary:
    """What a run did; ``exit_code`` is what the CLI exits with; ``data`` is what ``run.json`` holds.

    Only runs that ended ``ok``, ``partial`` or ``interrupted`` return one: a run that failed raises (an
    :class:`~autolabel.errors.ExportError` when only its exports failed), after it was recorded all the same.
    """

    run_id: int
    status: RunStatus  # ok | partial | interrupted (a failed run raises; its record is in the store and run.json)
    exit_code: ExitCode
    counts: dict[str, int]
    failures: list[dict[str, str]]
    output: Path
    exports: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # one line each: what the exports left out, and why


class _StopFlag:
    """First SIGINT/SIGTERM asks the loop to stop after the batch in flight; a second one stops at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print(
            "\nautolabel: stopping after the batch in flight (press Ctrl-C again to stop at once)",
            file=sys.stderr,
            flush=True,
        )

    def __enter__(self) -> "_StopFlag":
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def run(
    pipeline: "Pipeline",
    input: str | Path | Iterable[str | Path] | None = None,  # noqa: A002
    output: str | Path | None = None,
    progress: bool = False,
) -> RunSummary:
    """Label ``input`` into ``output`` (falling back to the pipeline file's ``input`` / ``output``)."""
    config = pipeline.config
    input = input if input is not None else config.input  # noqa: A001 — the parameter, resolved
    output = output if output is not None else config.output
    if input is None or (not isinstance(input, (str, Path)) and not list(input)):
        raise ConfigError("input: none given (pass --input PATH or set input: in the pipeline file)")
    if output is None:
        raise ConfigError("output: none given (pass --output DIR or set output: in the pipeline file)")
    output = Path(output)
    check_output(output)
    sources = discover(input)
    if not sources:
        inputs = [input] if isinstance(input, (str, Path)) else list(input)
        kinds = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise NothingLabeledError(f"input {', '.join(shown(str(i)) for i in inputs)}: no images found (an image is a "
                                  f"file named {kinds}, in any case); nothing was labeled")
    try:
        lock = RunLock(output, "run").acquire()
    except OSError as err:
        raise AutolabelError(f"output {output}: cannot take the run lock ({one_line(err)})") from None
    try:
        return _locked_run(pipeline, sources, output, progress, lock)
    finally:
        lock.release()


def check_output(output: Path) -> None:
    """The output folder must be a folder that can be written (or be creatable): one line otherwise."""
    if output.exists() and not output.is_dir():
        raise ConfigError(f"output {output}: a file, not a folder; pass a folder (it is created when missing)")
    existing = output
    while not existing.exists():
        if existing.is_symlink():  # a dangling link: mkdir would fail
            raise ConfigError(f"output {output}: {existing} is a link to nothing; pass a folder")
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"output {output}: lies below the file {existing}; pass a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "the folder" if existing == output else f"{existing}, where it would be created,"
        raise AutolabelError(f"output {output}: {what} cannot be written (read-only); pass a writable folder "
                             f"(an existing run's folder stays readable: `autolabel export {output} --path ELSEWHERE`)")


def _locked_run(pipeline: "Pipeline", sources: list, output: Path, progress: bool, lock: RunLock) -> RunSummary:
    store = Store(output, check=True)
    try:
        store.end_stale_runs(NEVER_ENDED)  # we hold the lock: a run still "running" is one that was killed
        started = time.time()
        run_id = store.begin_run(pipeline.spec.hash, pipeline.spec.raw)
    except BaseException:
        store.close()
        raise
    counts: Counter[str] = Counter(seen=0, labeled=0, skipped=0, failed=0)
    failures: list[dict[str, str]] = []
    clock: Counter[str] = Counter()
    decisions: Counter[tuple[str, str, str]] = Counter()  # (class, status, reason) of every box labeled
    executor_info: dict[str, Any] = {}  # what the executor reports for run.json
    status, error = RunStatus.FAILED, None
    exports: list[str] = []
    export_failures: list[str] = []
    warnings: list[str] = []
    try:
        with _StopFlag() as stop:
            interrupted = _loop(pipeline, store, run_id, sources, counts, failures, clock, decisions, stop, progress,
                                executor_info)
        status = RunStatus.INTERRUPTED if interrupted else (RunStatus.PARTIAL if counts["failed"] else RunStatus.OK)
        if status is not RunStatus.INTERRUPTED and counts["failed"] and not counts["labeled"] + counts["skipped"]:
            status = RunStatus.FAILED  # every input failed: no export (there is nothing new to write)
            error = NothingLabeledError(
                f"all {counts['failed']} inputs failed; nothing was labeled or exported ({_first_failure(failures)}; "
                f"every reason is in {output / 'run.json'})")
            error.failures = failures  # printed before the error line
        elif status is not RunStatus.INTERRUPTED:
            status = _deliver(pipeline, store, output, status, exports, export_failures)
            if export_failures:
                more = f" (and {len(export_failures) - 1} more: see run.json)" if len(export_failures) > 1 else ""
                error = ExportError(f"{export_failures[0]}{more}; the labels are kept in the store: fix the cause, "
                                    f"then run `autolabel export {output}` or run again (nothing is relabeled)")
            if store.bad_rows:
                warnings.append(store.bad_rows_line() or "")
                status = RunStatus.PARTIAL if status is RunStatus.OK else status
    except KeyboardInterrupt:
        status = RunStatus.INTERRUPTED
    except Exception as err:
        error = err
        raise
    finally:
        # Always reached, whatever failed above: the run is ended in the store and in run.json, so that
        # `autolabel runs` and alerting see it; the labels committed so far stay in the store.
        summary = _summary(pipeline, run_id, status, started, counts, failures, clock, sources, exports, error)
        summary["decisions"] = decision_summary(decisions)
        summary["export_failures"] = export_failures
        summary["executor"] = executor_info
        summary["lock_taken_over_from"] = lock.previous  # a killed run's stale lock, if there was one
        summary["bad_rows"] = [{"id": i, "rel_path": name, "problem": why} for i, (name, why) in store.bad_rows.items()]
        late = _record_end(store, output, run_id, status, summary)
        if late is not None and error is None:  # the first failure is the one reported
            raise late
    if isinstance(error, (ExportError, NothingLabeledError)):
        raise error
    return RunSummary(run_id, status, EXIT_CODES[status], dict(counts), failures, output, exports, summary, warnings)


def _first_failure(failures: list[dict[str, str]]) -> str:
    first = failures[0] if failures else {"path": "?", "reason": "?"}
    return f"the first: {shown(first['path'])}: {shown(first['reason'])}"


def _record_end(
    store: Store, output: Path, run_id: int, status: RunStatus, summary: dict[str, Any]
) -> AutolabelError | None:
    """End the run in the store and write run.json, each tried even if the other fails; close the store.

    Returns the first failure as a one-line :class:`AutolabelError` (None when both were written).
    """
    problem: AutolabelError | None = None
    try:
        store.end_run(run_id, status, summary)
    except AutolabelError as err:
        problem = err
    finally:
        store.close()
    text = json.dumps(summary, indent=2, default=str) + "\n"
    try:
        write_record(output, run_id, text)  # each run keeps its own, never overwritten
        atomic_write_text(output / "run.json", text)  # the latest, where people and alerting look
    except OSError as err:
        problem = problem or ExportError(f"{output / 'run.json'}: cannot write the run summary ({one_line(err)})")
    return problem


#: The exit code of each way a run can end (a FAILED run raises instead: its error carries the code).
EXIT_CODES = {
    RunStatus.OK: ExitCode.OK, RunStatus.PARTIAL: ExitCode.PARTIAL, RunStatus.INTERRUPTED: ExitCode.INTERRUPTED,
}


def _deliver(
    pipeline: "Pipeline", store: Store, output: Path, status: RunStatus, written: list[str], failed: list[str]
) -> RunStatus:
    """Write the pipeline's exports, then its push (paths into ``written``, failures into ``failed``).

    Every export is tried even when one fails (each is written to a temp file and renamed, so a failed one leaves
    nothing half-written), and the push goes ahead: what could be delivered is. A push that did not go through
    makes the run partial (run it again to resume); an export that could not be written fails the run, with the
    labels kept: the fix is to remove the cause and rewrite it with ``autolabel export`` (or run again).
    """
    from .exports import DEFAULT_PATHS, write_export

    for export in pipeline.spec.config.exports:
        try:
            written.extend(write_export(store, pipeline.spec, export, output))
        except Exception as err:  # noqa: BLE001 — any failure of one export is reported, the next one still runs
            target = output / (export.path or DEFAULT_PATHS[export.format])
            failed.append(f"export {export.format} to {target} failed: {one_line(err)}")
    if pipeline.config.push is not None:  # push: a live Label Studio (autolabel.labelstudio)
        from .labelstudio.push import push_after_run

        try:
            line, pushed = push_after_run(store, pipeline.spec, pipeline.config.push)
        except Exception as err:  # noqa: BLE001 — push_after_run reports server errors itself; this is the rest
            line, pushed = f"labelstudio push to {pipeline.config.push.url} failed: {one_line(err)}", False
        written.append(line)
        if not pushed and status is RunStatus.OK:
            status = RunStatus.PARTIAL
    return RunStatus.FAILED if failed else status


def _loop(pipeline, store, run_id, sources, counts, failures, clock, decisions, stop, progress, executor_info) -> bool:  # noqa: ANN001
    """Label every source on the pipeline's executor, committing each returned batch; True when stopped early.

    The executor (in-process or Ray) labels; this loop, on the driver, is the store's only writer: each batch is
    one transaction, upserted by image path with the pipeline hash, so a retried batch never duplicates a row.
    """
    from .executors import executor_for

    phash = pipeline.spec.hash
    executor = executor_for(pipeline.config.executor)
    bar = tqdm(total=len(sources), unit="img", disable=not progress, dynamic_ncols=True, file=sys.stderr)

    def commit(results: list[ImageResult], cache: list[Row], skipped: int = 0) -> None:
        if results or cache:
            t0 = time.perf_counter()
            store.commit(results, run_id, phash, cache)
            clock["commit"] += time.perf_counter() - t0
        counts["seen"] += len(results) + skipped
        counts["skipped"] += skipped
        for r in results:
            if r.status == "failed":
                counts["failed"] += 1
                if len(failures) < MAX_FAILURES_LISTED:
                    failures.append({"path": r.path, "reason": r.reason or ""})
            else:
                counts["labeled"] += 1
                tally_decisions(decisions, r.labels)
        bar.update(len(results) + skipped)

    def clip_done(outcome: ClipOutcome) -> None:
        """A clip counts as one input (labeled, skipped or failed); the frames it labeled are counted beside."""
        if outcome.status != "stopped":
            counts["seen"] += 1
            counts[outcome.status] += 1
            bar.update(1)
        counts["frames"] += outcome.frames
        if outcome.status == "failed" and len(failures) < MAX_FAILURES_LISTED:
            failures.append({"path": outcome.path, "reason": outcome.reason})
        decisions.update(outcome.decisions)

    from .video.loop import ClipOutcome, label_clips, split_sources

    images, clips = split_sources(sources)
    try:
        stopped = executor.run(pipeline, store, images, commit, stop, clock) if images or not clips else False
        if clips and not stopped:  # clips are labeled in this process, whatever the executor (docs/video.md)
            stopped = label_clips(pipeline, store, run_id, clips, stop, clock, clip_done)
        return stopped
    finally:
        bar.close()
        executor_info.update(executor.describe())


def tally_decisions(decisions: Counter[tuple[str, str, str]], record: dict[str, Any] | None) -> None:
    """Count one labeled image's boxes by (class, status, reason) — what the quality checks did."""
    if not record:
        return
    data = record["boxes"]["data"]
    decisions.update(zip(data["class_name"], data["status"], data["reason"]))
    texts = record["texts"]
    decisions.update(("<text:" + t["kind"] + ">", t.get("status", "kept"), t.get("reason", "")) for t in texts)


def decision_summary(decisions: Counter[tuple[str, str, str]]) -> dict[str, Any]:
    """``by_reason`` ("dropped/low_score": n) and ``by_class`` ({class: {kept, dropped, flagged}}) for run.json."""
    by_reason: Counter[str] = Counter()
    by_class: dict[str, Counter[str]] = {}
    for (name, status, reason), n in sorted(decisions.items()):
        if reason:
            by_reason[f"{status}/{reason}"] += n
        by_class.setdefault(name or "<no class>", Counter())[status] += n
    return {"by_reason": dict(by_reason), "by_class": {k: dict(v) for k, v in by_class.items()}}


def _summary(pipeline, run_id, status, started, counts, failures, clock, sources, exports, error) -> dict[str, Any]:  # noqa: ANN001
    ended = time.time()
    elapsed = max(ended - started, 1e-9)
    return {
        "run_id": run_id,
        "status": status,
        "error": f"{type(error).__name__}: {one_line(error)}" if error is not None else None,
        "started": iso_utc(started),
        "ended": iso_utc(ended),
        "seconds": round(elapsed, 3),
        "images_per_second": round((counts["labeled"] + counts["failed"]) / elapsed, 3),
        "counts": dict(counts) | {"inputs": len(sources)},
        "failures": failures,
        "failures_listed": len(failures),
        "stage_seconds": {k: round(v, 4) for k, v in pipeline.timings.items()},
        "stage_images": dict(pipeline.calls),  # images each stage processed (cached model outputs not counted)
        "vision_passes": {name: count.summary() for name, count in sorted(pipeline.vision.items())},
        "loop_seconds": {k: round(v, 4) for k, v in clock.items()},
        "pipeline": {"name": pipeline.config.name, "file": pipeline.source, "hash": pipeline.spec.hash},
        "exports": exports,
        "host": {"hostname": socket.gethostname(), "pid": os.getpid()},
        "versions": _versions(pipeline),
    }


def package_versions() -> dict[str, Any]:
    """Versions of autolabel, Python, torch and transformers (None where not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    versions: dict[str, Any] = {"autolabel": __version__, "python": platform.python_version()}
    for package in ("torch", "transformers"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    return versions


def _versions(pipeline: "Pipeline") -> dict[str, Any]:
    return package_versions() | {"models": pipeline.models.versions()}
