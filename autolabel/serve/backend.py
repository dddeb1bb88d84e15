"""What ``autolabel serve`` does for each request, apart from HTTP: setup, predict (batch or smart tool), health.

* Models load once, at start-up (:meth:`Backend.load`, in the background: ``/health`` says when they are ready).
* All model work — pipeline batches and SAM clicks — runs under one lock, so one device never runs two requests at
  once; fetching, hashing and store lookups run outside it, in the request threads.
* A predict request's images are all fetched (and hashed) first: an unreachable image fails the request before any
  model runs, so nothing is computed in vain. Images whose content is in the run store are answered from it;
  the others go through the pipeline in batches of its ``batch_size``, with the progress logged.
* Labels become regions through the Label Studio export's own builder (:func:`autolabel.exports.labelstudio.task`),
  renamed to the project's controls and validated with label-studio-sdk.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from ..accounting import Account
from ..cache import Prefetched
from ..errors import AutolabelError
from ..executors.labeling import label_batch
from ..exports.labelstudio import task as ls_task
from ..exports.rows import class_ids, image_row
from ..intake import Decoded, Source, decode, sha256
from ..models.pool import ModelPool
from . import similar
from .answers import StoreAnswers
from .images import Access, Fetcher, rel_path
from .interactive import Interactive
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

if TYPE_CHECKING:
    from ..pipeline import Pipeline

log = logging.getLogger("autolabel.serve")

SEGMENTER_TYPES = ("sam", "sam2", "sam3_tracker")


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
    ):
        from ..exports.labelstudio import model_version_for

        self.pipeline = pipeline
        self.answers = answers
        self.fetcher = Fetcher(allowed_hosts)
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
        self._model_lock = threading.Lock()  # one request at a time on the device
        self._fetch_pool = ThreadPoolExecutor(max_workers=fetch_workers, thread_name_prefix="autolabel-fetch")
        self._setups: dict[str, tuple[str | None, Access]] = {}  # project uid → (its config, its Label Studio)
        self._last_setup: tuple[str | None, Access] = (None, Access.of(None, None))
        self._class_ids = class_ids(pipeline.spec.ontology)

    # -- life cycle ----------------------------------------------------------------------------------------------
    def load(self) -> None:
        """Load every declared model once (the pool keeps them); health turns ``ready`` (or ``failed``)."""
        t0 = time.perf_counter()
        from ..exports.labelstudio import labeling_config

        Config(labeling_config(self.pipeline.spec.ontology))  # imports the SDK now: Label Studio's setup waits 3 s
        try:
            with self._model_lock:
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

    def close(self) -> None:
        self._fetch_pool.shutdown(wait=False, cancel_futures=True)
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

    # -- setup ---------------------------------------------------------------------------------------------------
    def setup(self, body: Any) -> dict[str, Any]:
        """Remember the project's config and its Label Studio (URL, token); check the config has an image."""
        if not isinstance(body, dict):
            raise RequestError(400, "the setup body must be a JSON object")
        schema = body.get("schema") if isinstance(body.get("schema"), str) else None
        if schema:
            Config(schema)  # a config without an image is refused now, not at the first prediction
        access = Access.of(body.get("hostname") or None, body.get("access_token") or None)
        entry = (schema, access)
        with self._stats_lock:
            if body.get("project") is not None:
                self._setups[str(body["project"])] = entry
            self._last_setup = entry
        self.count(setups=1)
        return {"model_version": self.model_version}

    def _project(self, project: str | None) -> tuple[str | None, Access]:
        with self._stats_lock:
            return self._setups.get(project or "", self._last_setup)

    # -- predict -------------------------------------------------------------------------------------------------
    def predict(self, body: Any) -> dict[str, Any]:
        """``{"results": [one prediction per task]}`` (a smart-tool context: one brush region for its task)."""
        self._require_ready()
        request = parse_predict(body)
        schema, access = self._project(request.project)
        config = Config(request.label_config or schema or "")
        tasks = task_refs(request.tasks, config)
        if request.context is not None and request.context.get("result"):
            if similar.requested(request.context):  # a "find similar" rectangle: SAM 3 exemplars (serve/similar.py)
                return {"results": [similar.answer(self, tasks[0], request.context, config, access)]}
            return {"results": [self._interactive(tasks[0], request.context, config, access)]}
        t0 = time.perf_counter()
        fetched = list(self._fetch_pool.map(lambda t: self._fetch(t, access), tasks))
        predictions: list[dict[str, Any] | None] = [None] * len(tasks)
        todo: dict[str, list[int]] = {}  # content hash → tasks showing it (labeled once)
        for k, (task, (_data, digest)) in enumerate(zip(tasks, fetched)):
            row = self.answers.find(digest) if self.answers is not None else None
            prediction = self._from_store(row, task, config) if row is not None else None
            if prediction is not None:
                predictions[k] = prediction
            else:
                todo.setdefault(digest, []).append(k)
        from_store = sum(p is not None for p in predictions)
        self.count(requests=1, tasks=len(tasks), from_store=from_store)
        if todo:
            self._label(todo, tasks, fetched, predictions, config, access)
        log.info("predict: %d task(s): %d from the store, %d labeled by the model in %.2f s", len(tasks), from_store,
                 len(todo), time.perf_counter() - t0)
        return {"results": predictions}

    def _fetch(self, task: Task, access: Access) -> tuple[bytes, str]:
        try:
            data = self.fetcher.fetch(task.image, access)
        except RequestError as err:
            self.count(fetch_errors=1)
            raise RequestError(err.status, f"task {task.id}: {err.message}") from None
        return data, sha256(data)

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

    def _label(self, todo: dict[str, list[int]], tasks: list[Task], fetched: list[tuple[bytes, str]],
               predictions: list[dict[str, Any] | None], config: Config, access: Access) -> None:
        """Run the pipeline over the images not in the store, in batches; fill their predictions in."""
        size = max(1, self.pipeline.config.batch_size)
        digests = list(todo)
        batches = [digests[i : i + size] for i in range(0, len(digests), size)]
        for b, batch in enumerate(batches, 1):
            decoded, refs = [], []
            for digest in batch:
                k = todo[digest][0]
                try:
                    image = decode(fetched[k][0], self.pipeline.config.max_image_pixels)
                except ValueError as err:
                    raise RequestError(422, f"task {tasks[k].id}: {tasks[k].image}: {err}") from None
                source = Source(_store_path(tasks[k].image, access), rel_path(tasks[k].image))
                decoded.append(Decoded(source, sha256=digest, image=image))
                refs.append(k)
            t0 = time.perf_counter()
            with self._model_lock:  # the executors' labeling path: a batch, retried image by image if it fails
                results, cache = label_batch(self.pipeline, decoded, Prefetched(), Account())
                self.count(model_batches=1, model_images=len(decoded))
            by_digest = {r.sha256: r for r in results}  # failures come first: not in the batch's order
            failed = [(k, by_digest[d]) for d, k in zip(batch, refs) if by_digest[d].status != "done"]
            if failed:
                raise RequestError(500, f"task(s) {', '.join(str(tasks[k].id) for k, _ in failed)}: "
                                        f"{failed[0][1].reason}")
            log.info("predict: batch %d/%d: %d image(s) labeled in %.2f s", b, len(batches), len(decoded),
                     time.perf_counter() - t0)
            for digest, k in zip(batch, refs):
                result = by_digest[digest]
                row = {"id": tasks[k].id or 0, "path": result.path, "sha256": digest, "rel_path": result.rel_path,
                       "width": result.width, "height": result.height, "labels": result.labels}
                for j in todo[digest]:
                    predictions[j] = self._prediction(dict(row, id=tasks[j].id or 0), config)
            if self.answers is not None and self.answers.write_back:
                self.answers.write(results, self.pipeline.spec.hash, self.pipeline.spec.raw, cache)
                self.count(written_back=len(results))

    # -- smart tools ---------------------------------------------------------------------------------------------
    def _interactive(self, task: Task, context: dict[str, Any], config: Config, access: Access) -> dict[str, Any]:
        if self.interactive is None:
            raise RequestError(400, "smart tools need a SAM, SAM 2 or SAM 3 tracker model: declare one (type: sam / "
                                    "sam2 / sam3_tracker) in the pipeline's models, or pass --interactive-model NAME")
        data, digest = self._fetch(task, access)
        try:
            image = decode(data, self.pipeline.config.max_image_pixels)
        except ValueError as err:
            raise RequestError(422, f"task {task.id}: {task.image}: {err}") from None
        prompt = parse_prompt(context, config, image.width, image.height)
        label = brush_label(prompt, config)
        t0 = time.perf_counter()
        with self._model_lock:
            mask, iou = self.interactive.mask(digest, image, prompt)
        self.count(clicks=1)
        log.info("smart tool: task %s: mask of %d px in %.3f s", task.id, int(mask.sum()), time.perf_counter() - t0)
        region = brush_region(mask, label, iou, config, region_id=f"{task.id}_sam")
        prediction = {"model_version": self.model_version, "score": region["score"], "result": [region]}
        config.validate(prediction)
        return prediction


def _store_path(ref: str, access: Access) -> str:
    """The store's unique ``path`` of a reference: the Label Studio URL for its files, else as given."""
    return (access.url or "label-studio") + ref if ref.startswith("/data/") else ref
