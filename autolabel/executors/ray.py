"""The Ray executor: the same stages in Ray Data actors; the driver lists, commits and reports.

* The driver turns the sources into rows of ``(index, path, rel_path)`` — bytes, never pixels — in small blocks.
* ``map_batches`` runs :class:`LabelWorker`, a callable class: each actor builds the pipeline once (its model pool
  loads each model once, all stages in one actor) and, per batch, reads, hashes and decodes its images, runs the
  stages (:func:`~autolabel.executors.labeling.label_batch`: one bad image costs one image) and returns one
  record row per image, keyed by its index (Ray does not keep order). Decoding happens inside the actor, in
  threads: a separate CPU map would put every decoded image into the object store between the two operators,
  which is the memory the store of a large run cannot afford; here pixels never leave the process that uses them.
* Whether an image is already done, and its cached stage outputs (:func:`autolabel.cache.prefetch`, one call a
  batch), are read from the store by one :class:`StoreReader` actor pinned to the driver's node (SQLite in WAL
  mode: readers never block the writer).
* The driver streams the results (``iter_batches``) and commits each returned batch in one transaction, upserted
  by image path with the pipeline hash; a row already committed (Ray's at-least-once retries) is ignored.
* Actors that die are restarted and their batch retried (Ray Data's actor pools: ``max_restarts=-1``,
  ``max_task_retries=-1``).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from ..cache import Prefetched, Row, prefetch
from ..errors import AutolabelError, ConfigError
from ..intake import Decoded, Source, decode, read, sha256
from ..models.features import VisionCount
from ..store import ImageResult, Store
from .labeling import label_batch

if TYPE_CHECKING:
    from ..config import ExecutorSpec
    from ..pipeline import Pipeline
    from . import Commit, StopRequest

#: input blocks hold at most this many batches (and fewer on small runs, so every worker gets some): small tasks
#: spread the work and keep memory flat; a block's rows are paths, never pixels
MAX_BATCHES_PER_BLOCK = 16


class RayExecutor:
    """Run the stages on a Ray cluster: a local one started here, or an existing one (``executor.address``)."""

    def __init__(self, spec: ExecutorSpec):
        self.spec = spec
        self.address: str | None = spec.address
        self.per_worker: dict[str, Counter[str]] = {}
        self._t0, self._started = time.perf_counter(), time.time()
        self.first_result_s: float | None = None  # start-up: connecting, placing actors, the first batch labeled

    def run(
        self, pipeline: Pipeline, store: Store, sources: list[Source], commit: Commit, stop: StopRequest,
        clock: Counter[str],
    ) -> bool:
        ray = _import_ray()
        self._t0, self._started = time.perf_counter(), time.time()
        started_here = self._connect(ray)
        try:
            return self._run(ray, pipeline, store, sources, commit, stop, clock)
        finally:
            if started_here:
                ray.shutdown()

    def describe(self) -> dict[str, Any]:
        return {
            "type": "ray", "address": self.address, "workers": self.spec.workers,
            "cpus_per_worker": self.spec.cpus_per_worker, "gpus_per_worker": self.spec.gpus_per_worker,
            "first_result_seconds": None if self.first_result_s is None else round(self.first_result_s, 3),
            "per_worker": {w: {k: round(v, 4) if isinstance(v, float) else v for k, v in c.items()}
                           for w, c in sorted(self.per_worker.items())},
        }

    def _connect(self, ray: Any) -> bool:
        """Join the running Ray (tests, ``ray job submit``), the given address, or start a local one."""
        if ray.is_initialized():
            self.address = ray.get_runtime_context().gcs_address
            return False
        if self.spec.address and self.spec.address.startswith("ray://"):
            raise ConfigError(
                f"executor.address: {self.spec.address}: Ray Client is not supported (the driver writes the store); "
                "run autolabel on the cluster, e.g. with ray job submit, and use address: auto"
            )
        try:
            ray.init(address=self.spec.address, include_dashboard=False, logging_level=logging.WARNING,
                     log_to_driver=True)
        except Exception as err:  # noqa: BLE001 — connection problems come in many types; one line for all
            where = self.spec.address or "a local Ray"
            raise AutolabelError(
                f"executor.address: cannot start or join {where} ({_one_line(err)}); start a cluster with "
                "`ray start --head` and pass --ray-address auto, or leave the address out for a local Ray"
            ) from None
        self.address = ray.get_runtime_context().gcs_address
        return True

    def _check_resources(self, ray: Any) -> None:
        """On a local Ray, refuse worker counts it can never place (Ray Data would wait for them forever)."""
        if self.spec.address is not None:
            return  # an existing cluster may autoscale
        have = ray.cluster_resources()
        for resource, per in (("CPU", self.spec.cpus_per_worker), ("GPU", self.spec.gpus_per_worker)):
            need = per * self.spec.workers
            if need > have.get(resource, 0.0) + 1e-9:
                key = "cpus_per_worker" if resource == "CPU" else "gpus_per_worker"
                raise ConfigError(
                    f"executor.workers: {self.spec.workers} workers x {per:g} {resource} ({key}) need {need:g} "
                    f"{resource}s; this machine's Ray has {have.get(resource, 0.0):g} (lower workers or {key})"
                )

    def _run(
        self, ray: Any, pipeline: Pipeline, store: Store, sources: list[Source], commit: Commit,
        stop: StopRequest, clock: Counter[str],
    ) -> bool:
        if not sources:
            return False
        self._check_resources(ray)
        import ray.data
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the driver's own bar counts committed images
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        warnings.filterwarnings("ignore", message="The minimum number of concurrent actors")  # small runs: fine
        here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
        reader = (
            ray.remote(StoreReader)
            .options(num_cpus=0, scheduling_strategy=here, max_restarts=-1, max_task_retries=-1)
            .remote(str(store.folder), pipeline.spec.hash)
        )
        config = pipeline.config
        spread = len(sources) // (config.batch_size * self.spec.workers * 4)  # at least ~4 blocks per worker
        batches_per_block = max(1, min(MAX_BATCHES_PER_BLOCK, spread))
        per_block = config.batch_size * batches_per_block
        # names as bytes: Arrow strings must be UTF-8, a file name need not be (autolabel.names)
        rows = [{"index": i, "path": os.fsencode(s.path), "rel_path": os.fsencode(s.rel_path)}
                for i, s in enumerate(sources)]
        dataset = ray.data.from_items(rows, override_num_blocks=max(1, -(-len(rows) // per_block)))
        del rows
        labeled = dataset.map_batches(
            LabelWorker,
            fn_constructor_kwargs={"raw": pipeline.spec.raw, "reader": reader},
            batch_size=config.batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=self.spec.workers),
            num_cpus=self.spec.cpus_per_worker,
            num_gpus=self.spec.gpus_per_worker or None,
        )  # Ray Data's actor pools default to max_restarts=-1, max_task_retries=-1: a dead actor is replaced and
        # its batch retried on the replacement
        committed = bytearray(len(sources))  # 1 byte per image: a retried batch's rows are counted once
        batches = iter(labeled.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=1))
        try:
            while True:
                t0 = time.perf_counter()
                try:
                    table = next(batches, None)
                except Exception as err:  # noqa: BLE001 — surfaced as the autolabel error inside, or one line
                    raise _unwrap(err) from None
                clock["waiting for workers"] += time.perf_counter() - t0
                if table is None:
                    return False
                if self.first_result_s is None:
                    self.first_result_s = time.perf_counter() - self._t0
                self._commit(table.to_pylist(), sources, committed, pipeline, commit, clock)
                if stop.requested:
                    return True
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()  # stops the dataset's execution: its actors and tasks end
            ray.kill(reader)

    def _commit(
        self, rows: list[dict[str, Any]], sources: list[Source], committed: bytearray, pipeline: Pipeline,
        commit: Commit, clock: Counter[str],
    ) -> None:
        results: list[ImageResult] = []
        cache: list[Row] = []
        skipped = 0
        for row in rows:
            if row["status"] == "fatal":
                raise _fatal(json.loads(row["stats"]))
            if row["stats"]:
                self._add_stats(json.loads(row["stats"]), pipeline, clock)
            i = row["index"]
            if committed[i]:
                continue
            committed[i] = 1
            if row["status"] == "skipped":
                skipped += 1
                continue
            source = sources[i]
            results.append(ImageResult(
                path=source.path, rel_path=source.rel_path, sha256=row["sha256"] or None, status=row["status"],
                width=row["width"] if row["width"] >= 0 else None, height=row["height"] if row["height"] >= 0 else None,
                reason=row["reason"] or None, labels=json.loads(row["labels"]) if row["labels"] else None,
            ))
            cache.extend((row["sha256"], key, record) for key, record in json.loads(row["cache"]))
        commit(results, cache, skipped=skipped)

    def _add_stats(self, stats: dict[str, Any], pipeline: Pipeline, clock: Counter[str]) -> None:
        """Fold one worker batch's timings into run.json's stage_seconds, stage_images, vision_passes and per-worker
        figures."""
        for name, seconds in stats["stage_seconds"].items():
            pipeline.timings[name] += seconds
        for name, n in stats["stage_images"].items():
            pipeline.calls[name] += n
        for name, count in stats["vision"].items():  # each model's vision passes, as in a local run
            pipeline.vision[name] = pipeline.vision.get(name, VisionCount()) + VisionCount(**count)
        for name, seconds in stats["clock"].items():
            clock[f"workers: {name}"] += seconds
        worker = self.per_worker.setdefault(stats["worker"], Counter())
        worker.update(batches=1, images=stats["images"], seconds=stats["seconds"], cpu_seconds=stats["cpu_seconds"])
        worker["ready_after_seconds"] = stats["ready_at"] - self._started  # start of the run → actor ready


class StoreReader:
    """The store, read-only, for the workers: which images are done, and cached stage outputs (one call a batch)."""

    def __init__(self, folder: str, pipeline_hash: str):
        self.folder = folder
        self.pipeline_hash = pipeline_hash
        self.store: Store | None = None  # opened by the thread that serves the calls (SQLite objects stay in it)

    def lookup(
        self, paths: list[str], shas: list[str | None], keys: list[str | None]
    ) -> tuple[list[bool], Prefetched]:
        """Per image: done with this pipeline? And of the contents not done: their cached outputs among ``keys``."""
        if self.store is None:
            self.store = Store(self.folder)
        done = [sha is not None and self.store.is_done(p, sha, self.pipeline_hash) for p, sha in zip(paths, shas)]
        todo = {sha for sha, d in zip(shas, done) if sha is not None and not d}
        return done, prefetch(self.store, todo, keys)


class LabelWorker:
    """One Ray actor: the pipeline (models loaded once, on first use) applied to batches of source rows."""

    def __init__(self, raw: dict[str, Any], reader: Any):
        from ..pipeline import Pipeline

        self.fatal: AutolabelError | None = None
        try:
            self.pipeline = Pipeline.from_dict(raw)
        except AutolabelError as err:  # e.g. a plugin stage this worker cannot import: reported, not a crash loop
            self.fatal = err
            return
        self.reader = reader
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        config = self.pipeline.config
        self.threads = ThreadPoolExecutor(max_workers=config.decode_workers, thread_name_prefix="autolabel-decode")
        self.ready_at = time.time()  # the actor's start-up ends here (the models load on the first batch)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        """Label one batch: one row per image; an AutolabelError (a model that cannot load) comes back as rows
        with status ``fatal``, so the driver ends the run with its one line (not Ray's remote traceback)."""
        if self.fatal is None:
            try:
                return self._label(batch)
            except AutolabelError as err:
                self.fatal = err
        problems = self.fatal.problems if isinstance(self.fatal, ConfigError) else [str(self.fatal)]
        n = len(batch["index"])
        fatal = json.dumps({"exit_code": int(self.fatal.exit_code), "problems": problems})
        return {"index": [int(i) for i in batch["index"]], "status": ["fatal"] * n, "sha256": [""] * n,
                "width": [-1] * n, "height": [-1] * n, "reason": [""] * n, "labels": [""] * n, "cache": ["[]"] * n,
                "stats": [fatal] * n}

    def _label(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        import ray

        t_start, cpu_start = time.perf_counter(), time.process_time()
        clock: Counter[str] = Counter()
        timings, calls, vision = dict(self.pipeline.timings), dict(self.pipeline.calls), dict(self.pipeline.vision)
        config = self.pipeline.config
        sources = [Source(os.fsdecode(p), os.fsdecode(r)) for p, r in zip(batch["path"], batch["rel_path"])]

        t0 = time.perf_counter()
        blobs = list(self.threads.map(_read_and_hash, sources, [config.max_file_bytes] * len(sources)))
        clock["read"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        keys = self.pipeline.spec.stage_keys
        done, outputs = ray.get(self.reader.lookup.remote([s.path for s in sources], [b[1] for b in blobs], keys))
        clock["store lookup"] += time.perf_counter() - t0

        t0 = time.perf_counter()
        decoded = [Decoded(s, sha256=digest, reason=reason, skipped=done[k])
                   for k, (s, (_, digest, reason)) in enumerate(zip(sources, blobs))]
        todo = [k for k, (data, _, _) in enumerate(blobs) if data is not None and not done[k]]
        images = self.threads.map(_decode, [blobs[k][0] for k in todo], [config.max_image_pixels] * len(todo))
        for k, (image, reason) in zip(todo, images):
            decoded[k].image, decoded[k].reason = image, reason
        del blobs
        clock["decode"] += time.perf_counter() - t0

        ok = [decoded[k] for k in todo if decoded[k].ok]
        results, cache = label_batch(self.pipeline, ok, outputs, clock)
        by_path = {r.path: r for r in results}
        cache_by_sha: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        for sha, key, record in cache:
            cache_by_sha.setdefault(sha, []).append((key, record))

        out: dict[str, list[Any]] = {k: [] for k in ("index", "status", "sha256", "width", "height", "reason",
                                                     "labels", "cache", "stats")}
        for k, d in enumerate(decoded):
            result = by_path.get(d.source.path)
            status = "skipped" if d.skipped else ("failed" if result is None else result.status)
            reason = (result.reason if result is not None else d.reason) or ""
            out["index"].append(int(batch["index"][k]))
            out["status"].append(status)
            out["sha256"].append(d.sha256 or "")
            out["width"].append(result.width if result is not None and result.width is not None else -1)
            out["height"].append(result.height if result is not None and result.height is not None else -1)
            out["reason"].append(reason if status == "failed" else "")
            labels = result.labels if result is not None and status == "done" else None
            out["labels"].append(json.dumps(labels, separators=(",", ":")) if labels is not None else "")
            own = cache_by_sha.pop(d.sha256, []) if status == "done" and d.sha256 else []
            out["cache"].append(json.dumps(own, separators=(",", ":")))
            out["stats"].append("")
        out["stats"][0] = json.dumps({
            "worker": self.name, "images": len(sources), "seconds": time.perf_counter() - t_start,
            "ready_at": self.ready_at, "cpu_seconds": time.process_time() - cpu_start,
            "clock": dict(clock),
            "stage_seconds": {n: v - timings.get(n, 0.0) for n, v in self.pipeline.timings.items()},
            "stage_images": {n: v - calls.get(n, 0) for n, v in self.pipeline.calls.items()},
            "vision": {n: asdict(v - vision.get(n, VisionCount())) for n, v in self.pipeline.vision.items()},
        })
        return out


def _fatal(report: dict[str, Any]) -> AutolabelError:
    """The worker's AutolabelError again, on the driver: same lines, same exit code."""
    if report["exit_code"] == ConfigError.exit_code:
        return ConfigError(report["problems"])
    err = AutolabelError(" ".join(report["problems"]))
    err.exit_code = report["exit_code"]
    return err


def _read_and_hash(source: Source, max_bytes: int) -> tuple[bytes | None, str | None, str | None]:
    """(bytes, sha256, reason) of one source."""
    data, reason = read(source, max_bytes)
    return data, (sha256(data) if data is not None else None), reason


def _decode(data: bytes, max_pixels: int) -> tuple[Any, str | None]:
    """Decode, with a one-line reason instead of an exception: a bad image never costs the batch or the worker."""
    try:
        return decode(data, max_pixels), None
    except ValueError as err:
        return None, str(err)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError("executor.type: ray needs Ray: pip install 'autolabel[ray]'") from None
    return ray


def _unwrap(err: BaseException) -> AutolabelError:
    """The autolabel error (a model that cannot load…) inside a Ray error, or the Ray error as one line."""
    chain: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and all(current is not e for e in chain):
        chain.append(current)
        current = getattr(current, "cause", None) or current.__cause__
    for inner in reversed(chain):  # the original exception first, not Ray's wrappers of it (whose text is a traceback)
        if isinstance(inner, ConfigError):
            return ConfigError(list(inner.problems))
        if isinstance(inner, AutolabelError):
            found = AutolabelError(_one_line(inner))
            found.exit_code = inner.exit_code
            return found
    return AutolabelError(f"Ray: {type(err).__name__}: {_one_line(err)}")


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text[:500] + ("…" if len(text) > 500 else "")
