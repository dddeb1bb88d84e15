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
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from tqdm import tqdm

from . import __version__
from .errors import ConfigError, ExitCode
from .intake import discover
from .lock import RunLock
from .store import ImageResult, Store
from .util import atomic_write_text

if TYPE_CHECKING:
    from .pipeline import Pipeline

MAX_FAILURES_LISTED = 1000


@dataclass
class RunSummary:
    """What a run did; ``exit_code`` is what the CLI exits with. Also written as ``run.json``."""

    run_id: int
    status: str  # ok | partial | interrupted | failed
    exit_code: ExitCode
    counts: dict[str, int]
    failures: list[dict[str, str]]
    output: Path
    exports: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)


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
    input = input if input is not None else config.input
    output = output if output is not None else config.output
    if input is None or (not isinstance(input, (str, Path)) and not list(input)):
        raise ConfigError("input: none given (pass --input PATH or set input: in the pipeline file)")
    if output is None:
        raise ConfigError("output: none given (pass --output DIR or set output: in the pipeline file)")
    output = Path(output)
    sources = discover(input)
    with RunLock(output, "run") as lock:
        return _locked_run(pipeline, sources, output, progress, lock)


def _locked_run(pipeline: "Pipeline", sources: list, output: Path, progress: bool, lock: RunLock) -> RunSummary:
    store = Store(output)
    started = time.time()
    run_id = store.begin_run(pipeline.spec.hash, pipeline.spec.raw)
    counts: Counter[str] = Counter(seen=0, labeled=0, skipped=0, failed=0)
    failures: list[dict[str, str]] = []
    clock: Counter[str] = Counter()
    decisions: Counter[tuple[str, str, str]] = Counter()  # (class, status, reason) of every box labeled
    executor_info: dict[str, Any] = {}  # what the executor reports for run.json
    status, error = "failed", None
    try:
        with _StopFlag() as stop:
            interrupted = _loop(pipeline, store, run_id, sources, counts, failures, clock, decisions, stop, progress,
                                executor_info)
        status = "interrupted" if interrupted else ("partial" if counts["failed"] else "ok")
    except KeyboardInterrupt:
        status = "interrupted"
    except Exception as err:
        error = err
        raise
    finally:
        exports: list[str] = []
        if status in ("ok", "partial"):
            from .exports import write_exports

            exports = write_exports(store, pipeline.spec, output)
            if pipeline.config.push is not None:  # push: a live Label Studio (autolabel.labelstudio)
                from .labelstudio.push import push_after_run

                line, pushed = push_after_run(store, pipeline.spec, pipeline.config.push)
                exports.append(line)
                status = status if pushed else "partial"
        summary = _summary(pipeline, run_id, status, started, counts, failures, clock, sources, exports, error)
        summary["decisions"] = decision_summary(decisions)
        summary["executor"] = executor_info
        summary["lock_taken_over_from"] = lock.previous  # a killed run's stale lock, if there was one
        store.end_run(run_id, status, summary)
        text = json.dumps(summary, indent=2, default=str) + "\n"
        atomic_write_text(output / "runs" / f"run-{run_id:05d}.json", text)  # each run keeps its own
        atomic_write_text(output / "run.json", text)  # the latest, where people and alerting look
        store.close()
    exit_code = {"ok": ExitCode.OK, "partial": ExitCode.PARTIAL, "interrupted": ExitCode.INTERRUPTED}[status]
    return RunSummary(run_id, status, exit_code, dict(counts), failures, output, exports, summary)


def _loop(pipeline, store, run_id, sources, counts, failures, clock, decisions, stop, progress, executor_info) -> bool:  # noqa: ANN001
    """Label every source on the pipeline's executor, committing each returned batch; True when stopped early.

    The executor (in-process or Ray) labels; this loop, on the driver, is the store's only writer: each batch is
    one transaction, upserted by image path with the pipeline hash, so a retried batch never duplicates a row.
    """
    from .executors import executor_for

    phash = pipeline.spec.hash
    executor = executor_for(pipeline.config.executor)
    bar = tqdm(total=len(sources), unit="img", disable=not progress, dynamic_ncols=True, file=sys.stderr)

    def commit(results: list[ImageResult], cache: list[tuple[str, str, dict[str, Any]]], skipped: int = 0) -> None:
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

    try:
        return executor.run(pipeline, store, sources, commit, stop, clock)
    finally:
        bar.close()
        executor_info.update(executor.describe())


def tally_decisions(decisions: Counter[tuple[str, str, str]], record: dict[str, Any] | None) -> None:
    """Count one labeled image's boxes by (class, status, reason) — what the quality checks did."""
    if not record:
        return
    data = record["boxes"]["data"]
    decisions.update(zip(data["class_name"], data["status"], data["reason"]))
    decisions.update(("<text:" + t["kind"] + ">", t.get("status", "kept"), t.get("reason", "")) for t in record["texts"])


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
        "error": f"{type(error).__name__}: {error}" if error is not None else None,
        "started": _iso(started),
        "ended": _iso(ended),
        "seconds": round(elapsed, 3),
        "images_per_second": round((counts["labeled"] + counts["failed"]) / elapsed, 3),
        "counts": dict(counts) | {"inputs": len(sources)},
        "failures": failures,
        "failures_listed": len(failures),
        "stage_seconds": {k: round(v, 4) for k, v in pipeline.timings.items()},
        "stage_images": dict(pipeline.calls),  # images each stage processed (cached model outputs not counted)
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


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="seconds")
