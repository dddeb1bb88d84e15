"""``autolabel serve``'s "find similar": a reviewer's rectangle labelled *find similar* → every similar instance.

CVAT's and X-AnyLabeling's "click one, get all", on SAM 3. In the project's labeling config, one
``RectangleLabels`` control on the image has a label named ``find similar`` (any case; ``find_similar`` too) beside
the classes, with ``smart="true"`` and ``choice="multiple"``. The reviewer draws a box around one object and picks
*find similar* and the object's class; Label Studio sends it as a smart-tool context, and the answer is one region
per instance SAM 3 finds with that box as its only (positive) exemplar — its mask where the project's config has
a brush or polygon control, else its box (docs/reference/labelstudio-regions.md), labelled with the chosen
class. Several *find similar* rectangles in one request are several examples
of the same concept. Without a class beside the marker, a control whose only other label is one class uses it.

The SAM 3 model is the pipeline's first ``type: sam3`` model; the threshold, mask threshold and instance cap are
those of the pipeline's first ``concepts`` stage on it (else the model's defaults). Requests share the one model
queue with everything else the backend runs (smart tools first). Limits: at most :data:`MAX_EXAMPLES` rectangles
per request, and the request limits of every smart tool (bytes, pixels, time).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ..labels import Labels
from ..records import to_record
from .protocol import Config, RequestError, Task
from .workers import FIRST

if TYPE_CHECKING:
    from PIL import Image

    from ..pipeline import Pipeline
    from .access import Access
    from .images import Fetcher
    from .limits import Budget, Ticket

log = logging.getLogger("autolabel.serve")  # the backend's logger (one name: one logger)


class Backend(Protocol):
    """What "find similar" uses of the backend that calls it (:class:`autolabel.serve.backend.Backend`): its
    pipeline and models, its image fetch and decode (charged to the request's budget), the model's queue, its
    counters and prediction shape."""

    pipeline: Pipeline
    fetcher: Fetcher

    def _fetch(self, task: Task, access: Access, budget: Budget) -> Any: ...  # data, digest, local path

    def _decode(self, task: Task, data: bytes, budget: Budget) -> Image.Image: ...

    def _on_model(self, fn: Callable[..., Any], *args: Any, budget: Budget, priority: int) -> Any: ...

    def count(self, **amounts: int) -> None: ...

    def _prediction(self, row: dict[str, Any], config: Config) -> dict[str, Any]: ...


#: the label that turns a smart rectangle into a "find similar" request
MARKER = "find similar"
#: example rectangles one request may hold
MAX_EXAMPLES = 16


def _is_marker(label: Any) -> bool:
    return isinstance(label, str) and re.sub(r"[\s_-]+", " ", label.strip().lower()) == MARKER


def requested(context: dict[str, Any]) -> bool:
    """Whether a smart-tool context holds a rectangle labelled *find similar*."""
    results = context.get("result")
    return isinstance(results, list) and any(
        isinstance(r, dict) and isinstance(r.get("value"), dict)
        and any(_is_marker(label) for label in r["value"].get("rectanglelabels") or [])
        for r in results
    )


def examples(context: dict[str, Any], config: Config, width: int, height: int) -> tuple[np.ndarray, str]:
    """The *find similar* rectangles ((K, 4) xyxy pixels of the image) and the class their instances get."""
    boxes, chosen = [], []
    marked = [r for r in context["result"] if isinstance(r, dict) and isinstance(r.get("value"), dict)
              and any(_is_marker(label) for label in r["value"].get("rectanglelabels") or [])]
    if len(marked) > MAX_EXAMPLES:
        raise RequestError(400, f"{len(marked)} 'find similar' rectangles in one request; at most {MAX_EXAMPLES}")
    for i, region in enumerate(marked):
        value = region["value"]
        if region.get("from_name") not in config.controls:
            raise RequestError(400, f"find similar: rectangle {i}: unknown control name {region.get('from_name')!r} "
                                    f"(the labeling config has: {', '.join(config.controls) or 'none'})")
        try:
            x, y = float(value["x"]) * width / 100.0, float(value["y"]) * height / 100.0
            w, h = float(value["width"]) * width / 100.0, float(value["height"]) * height / 100.0
        except (KeyError, TypeError, ValueError):
            raise RequestError(400, f"find similar: rectangle {i} needs numeric value.x, value.y, value.width, "
                                    "value.height (percent of the image)") from None
        box = np.clip(np.array([x, y, x + w, y + h], np.float32), 0, [width, height, width, height])
        if not (box[2] > box[0] and box[3] > box[1]):
            raise RequestError(400, f"find similar: rectangle {i} is empty or outside the image")
        boxes.append(box)
        chosen += [label for label in value.get("rectanglelabels") or [] if not _is_marker(label)]
        control_labels = [label for label in getattr(config.controls[region["from_name"]], "labels", None) or []
                          if not _is_marker(label)]
    classes = list(dict.fromkeys(chosen))
    if len(classes) > 1:
        raise RequestError(400, f"find similar: the rectangles name several classes ({', '.join(classes)}); "
                                "find one class at a time")
    if not classes and len(control_labels) == 1:
        classes = control_labels
    if not classes:
        raise RequestError(400, "find similar: choose the object's class beside 'find similar' (RectangleLabels "
                                'choice="multiple"), so the instances found can be labelled')
    return np.stack(boxes), classes[0]


def answer(backend: "Backend", task: Task, context: dict[str, Any], config: Config, access: "Access",
           ticket: "Ticket", budget: "Budget") -> dict[str, Any]:
    """One prediction for ``task``: every instance similar to the *find similar* rectangles, as the project's
    regions (the Label Studio export's builder, renamed to the project's controls and validated). The request's
    limits hold as for any smart tool: its fetch and decode are charged to ``budget``, the model call waits in the
    model's queue no longer than the request's time."""
    from ..models.concepts import ConceptPrompt

    name, model = _model(backend)
    ontology = backend.pipeline.spec.ontology
    fetched = backend._fetch(task, access, budget)
    image = backend._decode(task, fetched.data or b"", budget)
    digest = fetched.digest
    boxes, label = examples(context, config, image.width, image.height)
    if label not in ontology.prompts:
        raise RequestError(400, f"find similar: class {label!r} is not one of the pipeline's ontology "
                                f"({', '.join(ontology.classes) or 'empty'})")
    options = _options(backend, name, model)
    t0 = time.perf_counter()
    prompts = [[ConceptPrompt(None, boxes, np.ones(len(boxes), bool))]]
    ticket.to_model()
    (found,) = backend._on_model(lambda: model.segment_concepts([image], prompts, **options), budget=budget,
                                 priority=FIRST)
    backend.count(similar=1)
    labels = Labels(width=image.width, height=image.height)
    if len(found):
        import supervision as sv

        from ..models.outputs import clip_boxes

        labels.add(sv.Detections(
            xyxy=clip_boxes(found.xyxy, image.width, image.height), mask=found.masks,
            confidence=np.asarray(found.scores, np.float32),
            data={"class_name": np.full(len(found), label, dtype=object),
                  "query_score": found.query_scores, "presence_score": found.presence_scores},
        ), stage="find_similar")
    stored_as = backend.fetcher.stored_name(task.image, fetched.local)
    row = {"id": task.id or 0, "path": task.image, "sha256": digest, "rel_path": stored_as,
           "width": image.width, "height": image.height, "labels": to_record(labels)}
    prediction = backend._prediction(row, config)
    log.info("find similar: task %s: %d instance(s) of %r in %.2f s", task.id, len(found), label,
             time.perf_counter() - t0)
    return prediction


def _model(backend: "Backend") -> tuple[str, Any]:
    """The pipeline's first SAM 3 model, loaded (it was, with every model, when the backend started)."""
    for name, spec in backend.pipeline.config.models.items():
        if spec.type == "sam3":
            return name, backend.pipeline.models.get(name)
    raise RequestError(400, "find similar needs a SAM 3 model: declare one (type: sam3, id: facebook/sam3) in the "
                            "pipeline's models")


def _options(backend: "Backend", name: str, model: Any) -> dict[str, Any]:
    """Threshold, mask threshold and instance cap of the pipeline's first concepts stage on ``name``."""
    from ..models.contract import declared

    for stage in backend.pipeline.stages:
        params = stage.params
        if params.type == "concepts" and getattr(params, "model", None) == name:
            threshold = params.threshold if params.threshold is not None else declared(model, "default_threshold")
            return {"threshold": threshold, "mask_threshold": params.mask_threshold,
                    "max_instances": params.max_instances, "rows_per_call": 1}
    return {"threshold": declared(model, "default_threshold"), "rows_per_call": 1}
