"""What ``autolabel serve`` does for each request, apart from HTTP: setup, predict (batch or smart tool), health.

* Models load once, at start-up, on the model's thread (``/health`` says when they are ready).
* All model work — loading, pipeline batches, SAM clicks — runs on one thread (:attr:`Backend.model`), so one
  device never runs two requests at once; clicks go before batches, and a batch request queues one pipeline batch
  at a time, so a click waits at most one batch. Fetching, hashing, decoding, store lookups and building the
  predictions run on the request's own thread.
* A predict request's images are all fetched (and hashed) first, within its budget (:mod:`.limits`): an
  unreachable image fails the request before any model runs, so nothing is computed in vain. Images whose content
  is in the run store are answered from it; only a request with images left over moves to the model's queue
  (:class:`~.limits.Admission`), so answers from the store never wait for the model.
* Labels become regions through the Label Studio export's own builder (:func:`autolabel.exports.labelstudio.task`),
  renamed to the project's controls and validated with label-studio-sdk.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from ..accounting import Account
from ..cache import Prefetched, StageOutput
from ..errors import AutolabelError
from ..executors.labeling import label_batch
from ..exports.labelstudio import task as ls_task
from ..exports.rows import class_ids, image_row
from ..intake import Decoded, Source, decode, sha256
from ..models.pool import ModelPool
from ..store import ImageResult
from . import similar
from .access import Access, Trust
from .answers import StoreAnswers
from .images import Fetcher
from .interactive import Interactive
from .limits import Admission, Budget, Limits, Ticket, exceeded
from .localfiles import LocalRoots
from .network import HostPolicy
from .protocol import (
    Config,
    RequestError,
    Task,
    adapt_regions,
    brush_label,
    brush_region,
    parse_predict,
    parse_prompt,
    task_refs,
)
from .workers import FIRST, NORMAL, Workers, map_parallel

if TYPE_CHECKING:
    from PIL import Image

    from ..pipeline import Pipeline

log = logging.getLogger("autolabel.serve")
R = TypeVar("R")

SEGMENTER_TYPES = ("sam", "sam2", "sam3_tracker")
#: projects whose setup (config, Label Studio access) is remembered, most recent first
MAX_SETUPS = 256


class CountingPool(ModelPool):
    """A model pool that counts how often each model was actually loaded (it must stay once per process)."""

    def __init__(self, specs: dict[str, Any]):
        super().__init__(specs)
        self.loads: Counter[str] = Counter()
        self._seen: dict[str, int] = {}

    def get(self, name: str) -> Any:
        model = super().get(name)
        if self._seen.get(name) != id(model):
            self._seen[name] = id(model)
            self.loads[name] += 1
        return model


@dataclass
class Fetched:
    """One image of a request: its bytes (dropped once answered from the store), content hash, local path."""

    data: bytes | None
    digest: str
    local: str | None


class Backend:
    """One pipeline served to Label Studio. Thread-safe: request threads call :meth:`predict` concurrently."""

    def __init__(
        self,
        pipeline: Pipeline,
        answers: StoreAnswers | None = None,
        allowed_hosts: list[str] | None = None,
        model_version: str | None = None,
        interactive_model: str | None = None,
        cache_size: int = 16,
        fetch_workers: int = 8,
        local_roots: list[str] | None = None,
        trust: Trust | None = None,
        limits: Limits | None = None,
    ):
        from ..exports.labelstudio import model_version_for

        self.pipeline = pipeline
        self.answers = answers
        self.limits = limits or Limits()
        self.trust = trust or Trust(Access(), authenticated=False)
        self.fetcher = Fetcher(LocalRoots(local_roots or []), HostPolicy(allowed_hosts, self.label_studio_origins))
        self.fetch_workers = fetch_workers
        self.model_version = model_version_for(pipeline.spec, model_version)
        self.interactive_model = interactive_model or next(
            (n for n, s in pipeline.config.models.items() if s.type in SEGMENTER_TYPES), None)
        if interactive_model and interactive_model not in pipeline.config.models:
            from ..errors import ConfigError

            raise ConfigError(f"--interactive-model: unknown model {interactive_model!r} (known: "
                              f"{', '.join(pipeline.config.models) or 'none'})")
        self.cache_size = cache_size
        self.interactive: Interactive | None = None
        self.state, self.error = "loading", None
        self.stats: Counter[str] = Counter()
        self._stats_lock = threading.Lock()
        self.admission = Admission(self.limits)
        self.model = Workers(1, "autolabel-model")  # every model call, one at a time, clicks first
        self.requests = Workers(self.limits.max_concurrent + self.limits.max_queued, "autolabel-request")
        self._setups: OrderedDict[str, tuple[str | None, Access]] = OrderedDict()  # project uid → config, access
        self._last_setup: tuple[str | None, Access] = (None, self.trust.operator)
        self._class_ids = class_ids(pipeline.spec.ontology)

    # -- life cycle ----------------------------------------------------------------------------------------------
    def load(self) -> None:
        """Load every declared model once (the pool keeps them); health turns ``ready`` (or ``failed``).
        Runs on the model's thread (:meth:`start`)."""
        t0 = time.perf_counter()
        from ..exports.labelstudio import labeling_config

        Config(labeling_config(self.pipeline.spec.ontology))  # imports the SDK now: Label Studio's setup waits 3 s
        import label_studio_sdk.converter.brush  # noqa: F401 — its RLE encoder: ~2 s to import, not on a first click
        try:
            for name in self.pipeline.config.models:
                self.pipeline.models.get(name)
            if self.interactive_model:
                segmenter = self.pipeline.models.get(self.interactive_model)
                self.interactive = Interactive(segmenter, self.cache_size)
        except AutolabelError as err:
            self.state, self.error = "failed", str(err)  # the command exits 1 with this line
            return
        self.state = "ready"
        log.info("models ready in %.1f s: %s", time.perf_counter() - t0, ", ".join(self.pipeline.config.models))

    def start(self, on_failure: Callable[[], None] | None = None) -> Future[None]:
        """Load the models on the model's thread; ``on_failure`` is called if they cannot be."""
        future = self.model.submit(self.load, priority=FIRST)
        if on_failure is not None:
            future.add_done_callback(lambda f: on_failure() if self.state == "failed" else None)
        return future

    def close(self) -> None:
        self.model.close()
        self.requests.close()
        self.fetcher.close()
        if self.answers is not None:
            self.answers.close(self.health()["stats"])

    def count(self, **amounts: int) -> None:
        with self._stats_lock:
            self.stats.update(amounts)

    def health(self) -> dict[str, Any]:
        pool = self.pipeline.models
        loads = dict(pool.loads) if isinstance(pool, CountingPool) else {}
        stats = dict(self.stats) | {
            "encoder_calls": self.interactive.encoder_calls if self.interactive else 0,
            "embeddings_cached": len(self.interactive.cache) if self.interactive else 0,
            "model_loads": loads,
            "in_flight": dict(self.admission.counts),
        }
        body: dict[str, Any] = {"status": "UP" if self.state == "ready" else self.state.upper(),
                                "model_class": "autolabel", "ready": self.state == "ready",
                                "model_version": self.model_version, "pipeline": self.pipeline.config.name,
                                "interactive": self.interactive_model, "stats": stats}
        if self.error:
            body["error"] = self.error
        return body

    def _require_ready(self) -> None:
        if self.state == "loading":
            raise RequestError(503, "models are still loading; try again when /health says ready")
        if self.state == "failed":
            raise RequestError(503, f"models failed to load: {self.error}")

    def label_studio_origins(self) -> list[tuple[str, int]]:
        """(host, port) of every Label Studio the backend reads files from (the operator's, proven setups')."""
        with self._stats_lock:
            accesses = [self.trust.operator, *(access for _, access in self._setups.values())]
        return [a.origin for a in accesses if a.origin]

    # -- setup ---------------------------------------------------------------------------------------------------
    def setup(self, body: Any, ticket: Ticket | None = None, budget: Budget | None = None) -> dict[str, Any]:
        """Remember the project's config and its Label Studio (URL, token: :meth:`.Trust.from_setup`); check the
        config has an image."""
        if not isinstance(body, dict):
            raise RequestError(400, "the setup body must be a JSON object")
        schema = body.get("schema") if isinstance(body.get("schema"), str) else None
        if schema:
            Config(schema)  # a config without an image is refused now, not at the first prediction
        access = self.trust.from_setup(body.get("hostname"), body.get("access_token"))
        if (body.get("hostname") or body.get("access_token")) and access == self.trust.operator \
                and self.trust.operator.url is None:
            log.warning("setup: Label Studio's URL and token in the call are not used (it is not proven to come from "
                        "Label Studio): turn on basic auth, or set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY")
        entry = (schema, access)
        with self._stats_lock:
            if body.get("project") is not None:
                key = str(body["project"])
                self._setups[key] = entry
                self._setups.move_to_end(key)
                while len(self._setups) > MAX_SETUPS:
                    self._setups.popitem(last=False)
            self._last_setup = entry
        self.count(setups=1)
        return {"model_version": self.model_version}

    def _project(self, project: str | None) -> tuple[str | None, Access]:
        with self._stats_lock:
            return self._setups.get(project or "", self._last_setup)

    def webhook(self, body: Any, ticket: Ticket | None = None, budget: Budget | None = None) -> dict[str, Any]:
        """Acknowledged, nothing trained."""
        self.count(webhooks=1)
        return {"status": "ok", "action": body.get("action") if isinstance(body, dict) else None, "trained": False}

    # -- predict -------------------------------------------------------------------------------------------------
    def predict(self, body: Any, ticket: Ticket, budget: Budget) -> dict[str, Any]:
        """``{"results": [one prediction per task]}`` (a smart-tool context: one brush region for its task)."""
        self._require_ready()
        request = parse_predict(body)
        if len(request.tasks) > self.limits.max_tasks:
            raise exceeded("max_tasks", f"{len(request.tasks)} tasks", self.limits.max_tasks)
        schema, access = self._project(request.project)
        config = Config(request.label_config or schema or "")
        tasks = task_refs(request.tasks, config)
        if request.context is not None and request.context.get("result"):
            if similar.requested(request.context):  # a "find similar" rectangle: SAM 3 exemplars (serve/similar.py)
                return {"results": [similar.answer(self, tasks[0], request.context, config, access, ticket, budget)]}
            return {"results": [self._interactive(tasks[0], request.context, config, access, ticket, budget)]}
        t0 = time.perf_counter()
        fetched = self._fetch_all(tasks, access, budget)
        predictions: list[dict[str, Any] | None] = [None] * len(tasks)
        todo: dict[str, list[int]] = {}  # content hash → tasks showing it (labeled once)
        for k, (task, image) in enumerate(zip(tasks, fetched)):
            budget.remaining()  # a prediction from the store costs time too (brush masks: ~0.1 s each)
            row = self.answers.find(image.digest) if self.answers is not None else None
            prediction = self._from_store(row, task, config) if row is not None else None
            if prediction is not None:
                predictions[k] = prediction
            else:
                todo.setdefault(image.digest, []).append(k)
        for digests in todo.values():  # keep only the bytes the model still needs
            for k in digests[1:]:
                fetched[k] = Fetched(None, fetched[k].digest, fetched[k].local)
        for k, prediction in enumerate(predictions):
            if prediction is not None:
                fetched[k] = Fetched(None, fetched[k].digest, fetched[k].local)
        from_store = sum(p is not None for p in predictions)
        self.count(requests=1, tasks=len(tasks), from_store=from_store)
        if todo:
            ticket.to_model()
            self._label(todo, tasks, fetched, predictions, config, budget)
        log.info("predict: %d task(s): %d from the store, %d labeled by the model in %.2f s", len(tasks), from_store,
                 len(todo), time.perf_counter() - t0)
        return {"results": predictions}

    def _fetch_all(self, tasks: list[Task], access: Access, budget: Budget) -> list[Fetched]:
        """Every task's image, each distinct reference fetched once, a few at a time (the first failure ends it)."""
        refs = list(dict.fromkeys(task.image for task in tasks))
        owner = {task.image: task for task in reversed(tasks)}  # the first task naming a reference, for messages
        got = map_parallel(lambda ref: self._fetch(owner[ref], access, budget), refs, self.fetch_workers,
                           "autolabel-fetch")
        by_ref = dict(zip(refs, got))
        return [by_ref[task.image] for task in tasks]

    def _fetch(self, task: Task, access: Access, budget: Budget) -> Fetched:
        try:
            data, local = self.fetcher.fetch(task.image, access, budget)
        except RequestError as err:
            self.count(fetch_errors=1)
            raise RequestError(err.status, f"task {task.id}: {err.message}") from None
        return Fetched(data, sha256(data), local)

    def _decode(self, task: Task, data: bytes, budget: Budget) -> Image.Image:
        """The image, its pixels charged to the request's budget before they are decoded (a 422 if it is none)."""
        from PIL import Image as PILImage

        try:
            with PILImage.open(io.BytesIO(data)) as probe:
                width, height = probe.size
        except Exception:  # noqa: BLE001 — decode() below says what is wrong, in one line
            width = height = 0
        budget.charge_pixels(width * height)
        try:
            return decode(data, self.pipeline.config.max_image_pixels)
        except ValueError as err:
            raise RequestError(422, f"task {task.id}: {task.image}: {err}") from None

    def _on_model(self, fn: Callable[..., R], *args: Any, budget: Budget, priority: int) -> R:
        """``fn(*args)`` on the model's thread, waited for no longer than the request's time (a 408 after)."""

        def call() -> R:
            budget.remaining()  # queued past the deadline: the caller is gone, skip the work
            return fn(*args)

        future = self.model.submit(call, priority=priority)
        try:
            return future.result(timeout=budget.remaining())
        except FutureTimeout:
            future.cancel()
            raise exceeded("max_request_seconds", "the request took too long waiting for the model",
                           self.limits.max_request_seconds) from None
        except CancelledError:
            raise RequestError(503, "the server is stopping") from None

    def _from_store(self, row: dict[str, Any], task: Task, config: Config) -> dict[str, Any] | None:
        try:
            return self._prediction(dict(row, id=task.id or row["id"]), config)
        except AutolabelError as err:  # e.g. a class the ontology lost since that run: label it afresh
            log.warning("task %s: the store's labels cannot be used (%s); labeling it again", task.id, err)
            return None

    def _prediction(self, row: dict[str, Any], config: Config) -> dict[str, Any]:
        """Store-shaped row → one prediction for the project's config (the export's builder, renamed, validated)."""
        masks = "brush" if config.control_for("BrushLabels") else \
            "polygon" if config.control_for("PolygonLabels") else "none"  # no RLE work for a config without brushes
        built = ls_task(image_row(row, self._class_ids), model_version=self.model_version, masks=masks)
        prediction = built["predictions"][0]
        prediction["result"] = adapt_regions(prediction["result"], config)
        config.validate(prediction)
        return prediction

    def _label(self, todo: dict[str, list[int]], tasks: list[Task], fetched: list[Fetched],
               predictions: list[dict[str, Any] | None], config: Config, budget: Budget) -> None:
        """Run the pipeline over the images not in the store, in batches; fill their predictions in."""
        size = max(1, self.pipeline.config.batch_size)
        digests = list(todo)
        batches = [digests[i : i + size] for i in range(0, len(digests), size)]
        for b, batch in enumerate(batches, 1):
            decoded, refs = [], []
            for digest in batch:
                k = todo[digest][0]
                image = self._decode(tasks[k], fetched[k].data or b"", budget)
                local = fetched[k].local
                name = self.fetcher.stored_name(tasks[k].image, local)
                path = tasks[k].image
                if self.answers is not None and self.answers.write_back:
                    path = self.answers.image_path(digest, fetched[k].data or b"", name, local)
                fetched[k] = Fetched(None, digest, local)  # the bytes are not needed past this point
                decoded.append(Decoded(Source(path, name), sha256=digest, image=image))
                refs.append(k)
            t0 = time.perf_counter()
            results, cache = self._on_model(self._run_batch, decoded, budget=budget, priority=NORMAL)
            by_digest = {r.sha256: r for r in results}  # failures come first: not in the batch's order
            failed = [(k, by_digest[d]) for d, k in zip(batch, refs) if by_digest[d].status != "done"]
            if failed:
                raise RequestError(500, f"task(s) {', '.join(str(tasks[k].id) for k, _ in failed)}: "
                                        f"{failed[0][1].reason}")
            log.info("predict: batch %d/%d: %d image(s) labeled in %.2f s", b, len(batches), len(decoded),
                     time.perf_counter() - t0)
            for digest in batch:
                result = by_digest[digest]
                row = {"path": result.path, "rel_path": result.rel_path, "width": result.width,
                       "height": result.height, "labels": result.labels}
                for j in todo[digest]:  # each task showing this content: its own id in the regions
                    budget.remaining()
                    predictions[j] = self._prediction(dict(row, id=tasks[j].id or 0), config)
            if self.answers is not None and self.answers.write_back:
                self.answers.write(results, self.pipeline.spec.hash, self.pipeline.spec.raw, cache)
                self.count(written_back=len(results))

    def _run_batch(self, decoded: list[Decoded]) -> tuple[list[ImageResult], list[StageOutput]]:
        """One batch on the executors' labeling path (on the model's thread): retried image by image if it fails,
        so a failing image costs only its task."""
        out = label_batch(self.pipeline, decoded, Prefetched(), Account())
        self.count(model_batches=1, model_images=len(decoded))
        return out

    # -- smart tools ---------------------------------------------------------------------------------------------
    def _interactive(self, task: Task, context: dict[str, Any], config: Config, access: Access, ticket: Ticket,
                     budget: Budget) -> dict[str, Any]:
        interactive = self.interactive
        if interactive is None:
            raise RequestError(400, "smart tools need a SAM, SAM 2 or SAM 3 tracker model: declare one (type: sam / "
                                    "sam2 / sam3_tracker) in the pipeline's models, or pass --interactive-model NAME")
        regions = context.get("result")
        if isinstance(regions, list) and len(regions) > self.limits.max_prompt_regions:
            raise exceeded("max_prompt_regions", f"{len(regions)} smart-tool regions", self.limits.max_prompt_regions)
        image = self._fetch(task, access, budget)
        picture = self._decode(task, image.data or b"", budget)
        prompt = parse_prompt(context, config, picture.width, picture.height)
        label = brush_label(prompt, config)
        ticket.to_model()
        t0 = time.perf_counter()
        mask, iou = self._on_model(interactive.mask, image.digest, picture, prompt, budget=budget, priority=FIRST)
        self.count(clicks=1)
        log.info("smart tool: task %s: mask of %d px in %.3f s", task.id, int(mask.sum()), time.perf_counter() - t0)
        region = brush_region(mask, label, iou, config, region_id=f"{task.id}_sam")
        prediction = {"model_version": self.model_version, "score": region["score"], "result": [region]}
        config.validate(prediction)
        return prediction
