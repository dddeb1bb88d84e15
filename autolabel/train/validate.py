"""Validation AP from what the model would label: its generations, parsed and scored by autolabel's own code.

The model being trained is asked exactly as a pipeline asks it — the ``florence2`` stage (same prompts, the
processor's parser, phrases mapped to the ontology, per-box scores from token probabilities), with the generation
settings given — and its boxes are scored against the held-out ground truth with :func:`autolabel.quality.eval.
coco_ap` (pycocotools' COCOeval, AP over IoU 0.5:0.95, per class). Early stopping follows this AP, not the loss:
a lower loss does not always mean better boxes.

Per task, what counts as a prediction: ``od``, ``ovd``, ``grounding`` — the boxes the stage kept;
``region_category`` — each ground-truth box with the class the model named (scored by its text probability);
``ocr_regions`` — each line's quad bounds, its text as its class (a line counts only with its exact text).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..labels import DROPPED, Labels
from ..stage import Item, StageContext

if TYPE_CHECKING:
    from ..ontology import Ontology
    from .data import Example

#: most images whose predictions the training report lists (what the test of a loaded folder compares against)
MAX_LISTED = 200


class _OnePool:
    """The pool a stage reads its model from, holding the model being trained (no spec: nothing to load)."""

    specs: dict[str, Any] = {}

    def __init__(self, model: Any):
        self.model = model

    def get(self, name: str) -> Any:
        return self.model


@dataclass
class Validation:
    """AP over the validation images (None when they hold no box), per class, and what the model labeled."""

    ap: float | None
    ap50: float | None
    per_class: dict[str, float | None]
    predictions: dict[str, list[list[Any]]]  # image name → [class, x1, y1, x2, y2, score] rows it kept

    def as_dict(self) -> dict[str, Any]:
        return {"ap": self.ap, "ap50": self.ap50, "per_class": self.per_class}


def predict(model: Any, task: str, examples: list[Example], ontology: Ontology, generation: dict[str, Any],
            batch_size: int, features: Callable[[list[int]], Any] | None = None) -> list[Labels]:
    """Label ``examples`` with ``model`` (a :class:`~autolabel.models.florence2.Florence2`) through the stage.

    ``features(k)``: the image features of examples ``k`` (positions in ``examples``), when the caller has them (a
    frozen vision tower's outputs, kept by the training loop): the stage then skips the vision tower.
    """
    from ..intake import decode
    from ..stages.florence2 import Florence2Params, Florence2Stage

    position: dict[int, int] = {}  # id of an item's image → its example's position
    if features is not None:
        model = copy.copy(model)  # shallow: the same torch model, with the image features looked up
        model.image_features = lambda images: features([position[id(image)] for image in images])
    params = Florence2Params(type="florence2", model="trained", task=task, generation=generation,
                             max_rows=max(1, batch_size))
    stage = Florence2Stage("validation", params, StageContext(ontology=ontology, models=_OnePool(model)))
    out: list[Labels] = []
    for start in range(0, len(examples), batch_size):
        items = []
        for k, example in enumerate(examples[start:start + batch_size], start):
            item = Item.of(decode(example.path.read_bytes()), key=example.name)
            position[id(item.image)] = k
            if task == "region_category":  # the boxes to name: the ground truth's, classless
                import supervision as sv

                item.labels.add(sv.Detections(xyxy=example.xyxy.astype(np.float32)), stage="ground_truth")
            items.append(item)
        out.extend(item.labels for item in stage(items))
    return out


def score(task: str, examples: list[Example], labels: list[Labels], classes: list[str]) -> Validation:
    """AP of the predictions in ``labels`` against the examples' ground truth (pycocotools, via autolabel's eval)."""
    from ..quality.data import Paired, Side
    from ..quality.eval import coco_ap
    from ..quality.match import ClassMatch, ImageMatch

    run_rows: list[tuple[int, np.ndarray, str, float]] = []
    gt_rows: list[tuple[int, np.ndarray, str]] = []
    predictions: dict[str, list[list[Any]]] = {}
    for k, (example, found) in enumerate(zip(examples, labels)):
        det = found.detections
        data = det.data
        keep = np.flatnonzero(np.asarray(data["status"]) != DROPPED) if len(det) else np.zeros(0, int)
        if task == "ocr_regions":
            names = [str(t) for t in data.get("text", [""] * len(det))]
        else:
            names = [str(c) for c in data["class_name"]]
        scores = (np.asarray(data.get("phrase_score"), dtype=np.float64) if task == "region_category"
                  and data.get("phrase_score") is not None else np.asarray(det.confidence, dtype=np.float64))
        rows = []
        for i in keep:
            run_rows.append((k, det.xyxy[i].astype(np.float64), names[i], float(scores[i])))
            rows.append([names[i], *np.round(det.xyxy[i].astype(np.float64), 2).tolist(), _num(scores[i])])
        if len(predictions) < MAX_LISTED:
            predictions[example.name] = rows
        truth = example.texts if task == "ocr_regions" else example.classes
        gt_rows += [(k, example.xyxy[i], truth[i]) for i in range(len(truth))]
    evaluated = sorted({c for _, _, c in gt_rows}) if task == "ocr_regions" else list(classes)
    run_rows = [r for r in run_rows if r[2] in set(evaluated)]

    def side(rows: list[tuple], with_score: bool) -> Side:
        n = len(rows)
        obj = np.empty(n, dtype=object)
        obj[:] = [r[2] for r in rows]
        return Side(np.array([r[0] for r in rows], dtype=np.int32),
                    np.array([r[1] for r in rows], dtype=np.float64).reshape(-1, 4), obj,
                    np.array([r[3] for r in rows] if with_score else np.ones(n), dtype=np.float64),
                    np.full(n, "kept", dtype=object), np.full(n, "", dtype=object), np.full(n, "", dtype=object),
                    [None] * n)

    sizes = np.array([[e.width, e.height] for e in examples], dtype=np.int64).reshape(-1, 2)
    paired = Paired([e.name for e in examples], sizes, side(run_rows, True), side(gt_rows, False),
                    ImageMatch([], {}, [], []), ClassMatch({c: c for c in evaluated}, {c: c for c in evaluated}),
                    len(examples), len(examples))
    if not gt_rows:
        return Validation(None, None, dict.fromkeys(evaluated), predictions)
    result = coco_ap(paired, np.arange(len(run_rows)), np.arange(len(gt_rows)), "bbox")
    per_class = {c: v["ap"] for c, v in result["per_class"].items()} if task != "ocr_regions" else {}
    return Validation(result["overall"]["ap"], result["overall"]["ap50"], per_class, predictions)


def _num(value: float) -> float | None:
    return None if value != value else round(float(value), 5)
