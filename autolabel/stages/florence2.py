"""Stage ``florence2``: any Florence-2 task, with a confidence for every box, quad, polygon and text.

``task:`` picks what the model is asked (see :data:`TASK_KINDS`):

* image tasks, one answer per image — ``proposals``, ``od``, ``dense_caption``, ``grounding`` (the ontology's
  prompts joined into one caption, or the caption an earlier stage wrote: ``caption_from``), ``ocr_regions``;
  ``caption``, ``detailed_caption``, ``more_detailed_caption`` and ``ocr`` add an image-level text;
* prompt tasks, one answer per (image, prompt), all in one batched ``generate`` — ``ovd`` (boxes) and ``res``
  (polygons, rasterized to masks);
* region tasks, one answer per box of earlier stages — ``region_category`` (fills ``phrase``, and the class when
  it names one), ``region_description`` (fills ``description``), ``region_ocr`` (fills ``text``),
  ``region_segmentation`` (fills the mask); each writes its own column, so any of them may follow another.

Phrases map to ontology classes case- and plural-insensitively through the class prompts; those that map to none
are dropped (reason ``unmapped_phrase``, kept in the store) or kept with an empty class, per ``unmapped``.
Every row's confidence is computed from the generation's token probabilities (:mod:`autolabel.models.
florence2_scores`) and the method is recorded in the stage's provenance.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import numpy as np
import supervision as sv
from pydantic import Field

from ..errors import ConfigError
from ..labels import DROPPED, KEPT, Labels, Text, merge
from ..models.features import StageFeatures, shared
from ..models.florence2 import MAX_ROWS, TASK_TABLE, TASKS, Answer, generation_problems
from ..models.florence2_scores import SCORE_METHODS, Located, instance_score
from ..models.outputs import quad_bounds
from ..models.contract import Florence2Model
from ..stage import Item, ModelStage, ModelStageParams, StageContext, check_classes
from .detect import UNMAPPED
from .segment import fill_masks

#: task → how it is asked and what it gives (from the one table, :data:`~autolabel.models.florence2.TASK_TABLE`)
TASK_KINDS: dict[str, str] = {task: kind for task, (_, kind) in TASK_TABLE.items()}
#: where a region task writes its answer: (column, its score column). One column per task, so that region tasks
#: over the same boxes do not take each other's answers for their own (OCR writes ``text``, as the ocr stage does)
REGION_COLUMNS = {
    "region_category": ("phrase", "phrase_score"),
    "region_description": ("description", "description_score"),
    "region_ocr": ("text", "text_score"),
}
_CLASSED = ("od", "grounding", "ovd", "res")  # tasks whose phrases name objects: unmapped ones dropped by default
_LOC = re.compile(r"<loc_\d+>")

Task = Literal[tuple(TASK_TABLE)]  # type: ignore[valid-type]  # the table's task names, in its order


class Florence2Params(ModelStageParams):
    stage_refs = ("caption_from", "from_stages")
    #: what the model is asked (one of the tasks above)
    task: Task
    #: ovd / res / grounding: the text to look for; default: every prompt of the ontology
    prompts: list[str] | None = None
    #: grounding: ground the caption this earlier stage wrote, instead of the prompts
    caption_from: str | None = None
    #: region tasks: the boxes of these earlier stages; default: every box not dropped
    from_stages: list[str] | None = Field(default=None, min_length=1)
    #: how a box, quad or polygon is scored from its tokens' probabilities
    score: Literal["locations", "locations+label", "label"] = "locations"
    #: phrases mapping to no ontology class: drop (reason unmapped_phrase) or keep with class "";
    #: default: drop for od, grounding, ovd, res when the ontology has classes, else keep
    unmapped: Literal["drop", "keep"] | None = None
    #: proposals / ocr_regions: the ontology class of every row (default: none)
    label: str | None = None
    #: region tasks: also redo rows that already have a mask (region_segmentation) or a phrase / text
    overwrite: bool = False
    #: generation settings of this stage, over the model's (max_new_tokens, num_beams, ...)
    generation: dict[str, Any] = Field(default_factory=dict)
    #: most sequences per generate call (images x prompts, or boxes)
    max_rows: int = Field(default=MAX_ROWS, ge=1, le=4096)


#: keys that apply only to some tasks
_ONLY_FOR = {
    "prompts": ("ovd", "res", "grounding"),
    "caption_from": ("grounding",),
    "from_stages": tuple(t for t, k in TASK_KINDS.items() if k == "region"),
    "overwrite": tuple(t for t, k in TASK_KINDS.items() if k == "region"),
    "label": ("proposals", "ocr_regions"),
    "unmapped": ("od", "dense_caption", "grounding", "ovd", "res", "region_category"),
    "score": ("proposals", "od", "dense_caption", "grounding", "ocr_regions", "ovd", "res", "region_segmentation"),
}


class Florence2Stage(ModelStage):
    """One Florence-2 task over a batch: many images (and prompts, or boxes) per ``generate``."""

    Params = Florence2Params
    params: Florence2Params
    model_types = ("florence2",)
    model_protocol = Florence2Model

    def __init__(self, name: str, params: Florence2Params, context: StageContext):
        super().__init__(name, params, context)
        task = params.task
        for key, tasks in _ONLY_FOR.items():
            if key in params.model_fields_set and task not in tasks:
                raise ConfigError(f"{key}: applies to task {', '.join(tasks)}, not {task}")
        if params.label is not None:
            check_classes([params.label], context.ontology, "label")
        self._check_generation()
        self.token = TASKS[task]
        ontology = context.ontology
        self.unmapped = params.unmapped or ("drop" if task in _CLASSED and len(ontology) else "keep")
        self.prompts: list[str] = []
        if task in ("ovd", "res") or (task == "grounding" and params.caption_from is None):
            prompts = params.prompts if params.prompts is not None else ontology.all_prompts()
            prompts = list(dict.fromkeys(" ".join(str(p).split()) for p in prompts))
            if not prompts or not all(prompts):
                raise ConfigError(
                    "prompts: none to look for (add classes to the ontology, or give a non-empty list of prompts)"
                )
            if self.unmapped == "drop" and not any(ontology.class_of(p) for p in prompts):
                raise ConfigError(
                    f"prompts: none maps to an ontology class (known: {', '.join(ontology.classes) or 'none'}); "
                    f"every box would be dropped (fix the prompts, or set unmapped: keep)"
                )
            self.prompts = prompts
        elif params.prompts is not None:
            raise ConfigError("prompts: give prompts or caption_from, not both")

    def _check_generation(self) -> None:
        """The stage's ``generation:`` and its model's, against :class:`~autolabel.models.florence2.Generation`."""
        problems = [f"generation.{p}" for p in generation_problems(self.params.generation)]
        spec = self.model_spec
        if spec is not None and spec.type == "florence2":
            problems += [f"generation.{p} (in models.{self.params.model}.generation)"
                         for p in generation_problems(spec.generation)]
        if problems:
            raise ConfigError(problems)

    # -- running
    def __call__(self, items: list[Item], features: StageFeatures | None = None) -> list[Item]:
        """``features``: the batch's image features, shared with the pipeline's other stages of this model."""
        kind = TASK_KINDS[self.params.task]
        if kind == "region":
            return self._regions(items, features)
        model: Florence2Model = self.model
        images = [item.image for item in items]
        rows, prompt = self._rows(items)
        answers = model.run(self.token, images, rows, self.params.generation, self.params.max_rows,
                            **shared(features, self.params.model, model, model.run))
        per_image: list[list[tuple[str, Answer]]] = [[] for _ in items]
        for (i, text), answer in zip(rows, answers):
            per_image[i].append((text, answer))
        provenance = self._provenance(model, prompt)
        for item, found in zip(items, per_image):
            labels = item.labels
            answers_here = [a for _, a in found]
            if kind == "text":
                for answer in answers_here:
                    text = str(answer.result).strip()
                    if text:
                        labels.texts.append(
                            Text(kind=self.params.task, text=text, score=_num(answer.text_score()), stage=self.name)
                        )
                labels.provenance[self.name] = _with_counts(provenance, answers_here)
                continue
            parts = [self._detections(text, answer, labels) for text, answer in found]
            dets = merge(parts, labels.height, labels.width) if parts else _empty()  # ovd: boxes and masks may mix
            labels.add(dets, stage=self.name, provenance=_with_counts(provenance, answers_here))
        return items

    def _rows(self, items: list[Item]) -> tuple[list[tuple[int, str]], Any]:
        """``(image index, text input)`` per question, and what to record as the prompt."""
        task, p = self.params.task, self.params
        if task in ("ovd", "res"):
            return [(i, prompt) for i in range(len(items)) for prompt in self.prompts], list(self.prompts)
        if task == "grounding":
            if p.caption_from is None:
                text = ". ".join(self.prompts)
                return [(i, text) for i in range(len(items))], text
            rows = []
            for i, item in enumerate(items):
                caption = next((t.text for t in item.labels.texts
                                if t.stage == p.caption_from and t.status != DROPPED and t.text.strip()), None)
                if caption is not None:
                    rows.append((i, " ".join(caption.split())))
            return rows, f"caption of stage {p.caption_from!r}"
        return [(i, "") for i in range(len(items))], self.token

    def _provenance(self, model: Florence2Model, prompt: Any) -> dict[str, Any]:
        kind = TASK_KINDS[self.params.task]
        method = "text" if kind == "text" or self.params.task in REGION_COLUMNS else self.params.score
        out = self.provenance(model, self.token, prompt=prompt, score_method=SCORE_METHODS[method],
                              generation=model.settings(self.params.generation))
        if self.params.task in _ONLY_FOR["unmapped"]:
            out["unmapped"] = self.unmapped
        return out

    def _detections(self, asked: str, answer: Answer, labels: Labels) -> sv.Detections:
        """One answer's instances as rows: boxes, quads or polygons (→ masks), class and confidence."""
        result, task = answer.result, self.params.task
        scores = answer.scores(self.params.score)
        if "quad_boxes" in result:
            quads = np.asarray(result["quad_boxes"], dtype=np.float32).reshape(-1, 8)
            texts = np.array(result["labels"], dtype=object)
            return _rows(quad_bounds(quads), scores, self._classes(texts, asked, len(quads)),
                         np.full(len(quads), "", object), text=texts, quad=quads)
        polygons = result.get("polygons") or []
        if polygons:  # res, and ovd answers written as polygons
            phrases = np.array(result.get("polygons_labels", result.get("labels", [""] * len(polygons))), dtype=object)
            keep = [k for k, polys in enumerate(polygons) if any(len(p) >= 2 for p in polys)]  # a point at least
            polygons = [polygons[k] for k in keep]
            masks = np.zeros((len(keep), labels.height, labels.width), dtype=bool)
            for k, polys in enumerate(polygons):
                masks[k] = polygons_mask(polys, labels.height, labels.width)
            xyxy = np.array([polygons_bounds(polys) for polys in polygons], dtype=np.float32).reshape(-1, 4)
            column = np.empty(len(keep), dtype=object)
            column[:] = [  # the polygon itself when the instance is one polygon (the mask holds the rest)
                np.asarray(polys[0], np.float32).reshape(-1, 2) if len(polys) == 1 and len(polys[0]) >= 6 else None
                for polys in polygons
            ]
            phrases = phrases[keep]
            classes = self._classes(phrases, asked, len(keep))
            return _rows(xyxy, scores[keep], classes, phrases, mask=masks, polygon=column)
        boxes = np.asarray(result.get("bboxes", []), dtype=np.float32).reshape(-1, 4)
        phrases = np.array(result.get("bboxes_labels", result.get("labels", [])), dtype=object)
        if task == "proposals":
            phrases = np.full(len(boxes), "", dtype=object)
        return _rows(boxes, scores[: len(boxes)], self._classes(phrases, asked, len(boxes)), phrases)

    def _classes(self, phrases: np.ndarray, asked: str, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Class, status and reason per row: from the phrase (or the prompt asked), or the stage's ``label``."""
        task = self.params.task
        if task in ("proposals", "ocr_regions"):
            return np.full(n, self.params.label or "", object), np.full(n, KEPT, object), np.full(n, "", object)
        ontology = self.context.ontology
        if task in ("ovd", "res"):
            cls = ontology.class_of(asked) or ""
            classes = np.array([cls or ontology.class_of(str(ph)) or "" for ph in phrases], dtype=object).reshape(n)
        else:
            classes = np.array([ontology.class_of(str(ph)) or "" for ph in phrases], dtype=object).reshape(n)
        unmapped = classes == ""
        drop = unmapped & (self.unmapped == "drop")
        return classes, np.where(drop, DROPPED, KEPT).astype(object), np.where(drop, UNMAPPED, "").astype(object)

    # -- region tasks
    def region_rows(self, labels: Labels) -> np.ndarray:
        """Rows a region task answers for: not dropped, of ``from_stages``, not already done unless ``overwrite``."""
        data = labels.detections.data
        pick = data["status"] != DROPPED
        if self.params.from_stages:
            pick &= np.isin(data["stage"].astype(str), self.params.from_stages)
        if not self.params.overwrite:
            if self.params.task == "region_segmentation":
                pick &= ~data["has_mask"].astype(bool)
            else:
                column = REGION_COLUMNS[self.params.task][0]
                done = data.get(column)
                if done is not None:
                    pick &= np.array([not str(v or "").strip() for v in done], dtype=bool)
        xyxy = labels.detections.xyxy
        pick &= (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])
        return np.flatnonzero(pick)

    def _regions(self, items: list[Item], features: StageFeatures | None) -> list[Item]:
        task = self.params.task
        picked = [self.region_rows(item.labels) for item in items]
        if not any(len(r) for r in picked):
            for item in items:
                item.labels.provenance[self.name] = self._provenance(self.model, self._region_prompt())
            return items
        model: Florence2Model = self.model
        rows = [
            (i, prompt)
            for i, (item, rs) in enumerate(zip(items, picked)) if len(rs)
            for prompt in model.region_prompts(item.labels.detections.xyxy[rs], item.image.size)
        ]
        images = [item.image for item in items]
        answers = iter(model.run(self.token, images, rows, self.params.generation, self.params.max_rows,
                                 **shared(features, self.params.model, model, model.run)))
        provenance = self._provenance(model, self._region_prompt())
        for item, rs in zip(items, picked):
            labels = item.labels
            mine = [next(answers) for _ in rs]
            labels.provenance[self.name] = _with_counts(provenance, mine)
            if not len(rs):
                continue
            if task == "region_segmentation":
                self._fill_masks(labels, rs, mine)
            else:
                self._fill_text(labels, rs, mine)
        return items

    def _region_prompt(self) -> str:
        where = f"stages {', '.join(self.params.from_stages)}" if self.params.from_stages else "earlier stages"
        return f"{self.token} with each box of {where}"

    def _fill_masks(self, labels: Labels, rows: np.ndarray, answers: list[Answer]) -> None:
        masks, scores, done = [], [], []
        for row, answer in zip(rows, answers):
            polygons = [p for polys in answer.result.get("polygons", []) for p in polys]
            if not any(len(p) >= 6 for p in polygons):
                continue
            masks.append(polygons_mask(polygons, labels.height, labels.width))
            scores.append(_combined(answer, self.params.score))
            done.append(row)
        if done:
            fill_masks(labels, np.asarray(done), np.stack(masks), self.name, mask_score=np.asarray(scores, np.float32))

    def _fill_text(self, labels: Labels, rows: np.ndarray, answers: list[Answer]) -> None:
        column, score_column = REGION_COLUMNS[self.params.task]
        det = labels.detections
        n = len(det)
        values = det.data.get(column)
        values = np.full(n, "", dtype=object) if values is None else np.asarray(values, dtype=object).copy()
        scores = det.data.get(score_column)
        scores = np.full(n, np.nan, np.float32) if scores is None else np.asarray(scores, np.float32).copy()
        for row, answer in zip(rows, answers):
            values[row] = _LOC.sub("", str(answer.result)).strip()
            scores[row] = _num(answer.text_score())
        det.data[column] = values
        det.data[score_column] = scores
        if self.params.task == "region_category":
            self._classify(labels, rows)

    def _classify(self, labels: Labels, rows: np.ndarray) -> None:
        """Set the class of categorized rows when their phrase names one; drop or keep the others per ``unmapped``."""
        data = labels.detections.data
        classes = np.asarray(data["class_name"], dtype=object).copy()
        status = np.asarray(data["status"], dtype=object).copy()
        reason = np.asarray(data["reason"], dtype=object).copy()
        for row in rows:
            cls = self.context.ontology.class_of(str(data["phrase"][row]))
            if cls:
                classes[row] = cls
            elif self.unmapped == "drop":
                status[row], reason[row] = DROPPED, UNMAPPED
        data["class_name"], data["status"], data["reason"] = classes, status, reason


# -- geometry (pure)
def polygons_bounds(polygons: list[list[float]]) -> np.ndarray:
    """xyxy bounds of all points of an instance's polygons (flat ``x, y, x, y, ...`` lists)."""
    points = np.concatenate([np.asarray(p, dtype=np.float32).reshape(-1, 2) for p in polygons if len(p) >= 2])
    return np.concatenate([points.min(axis=0), points.max(axis=0)]).astype(np.float32)


def polygons_mask(polygons: list[list[float]], height: int, width: int) -> np.ndarray:
    """The union of an instance's polygons (flat pixel coordinates) as a boolean (H, W) mask (pycocotools).

    Polygons with fewer than 3 points cover nothing (pycocotools would read 4 numbers as a box).
    """
    from pycocotools import mask as mask_utils

    flat = [[float(v) for v in p] for p in polygons if len(p) >= 6]
    if not flat:
        return np.zeros((height, width), dtype=bool)
    rle = mask_utils.merge(mask_utils.frPyObjects(flat, height, width))
    return mask_utils.decode(rle).astype(bool)


# -- helpers
def _rows(
    xyxy: np.ndarray,
    scores: np.ndarray,
    classes: tuple[np.ndarray, np.ndarray, np.ndarray],
    phrases: np.ndarray,
    mask: np.ndarray | None = None,
    **columns: np.ndarray,
) -> sv.Detections:
    class_name, status, reason = classes
    n = len(xyxy)
    data = {"class_name": class_name, "phrase": np.asarray(phrases, dtype=object).reshape(n), "status": status,
            "reason": reason, **columns}
    return sv.Detections(
        xyxy=np.asarray(xyxy, dtype=np.float32).reshape(-1, 4),
        mask=mask,
        confidence=np.asarray(scores, dtype=np.float32).reshape(n),
        data=data,
    )


def _empty() -> sv.Detections:
    return sv.Detections(xyxy=np.zeros((0, 4), np.float32), confidence=np.zeros(0, np.float32))


def _combined(answer: Answer, method: str) -> float:
    """One score for all instances of an answer (a region's polygons): their tokens pooled."""
    if answer.instances is None or not answer.instances:
        return float("nan")
    pooled = Located([], np.concatenate([i.locs for i in answer.instances]),
                     np.concatenate([i.label for i in answer.instances]))
    return instance_score(pooled, answer.logprobs, method)  # type: ignore[arg-type]


def _with_counts(provenance: dict[str, Any], answers: list[Answer]) -> dict[str, Any]:
    """The stage's provenance, plus (for this image) how many answers were cut short or could not be scored."""
    truncated = sum(not a.finished for a in answers)
    unscored = sum(a.instances is None for a in answers)
    if not truncated and not unscored:
        return provenance
    extra = {}
    if truncated:
        extra["truncated_answers"] = truncated  # hit max_new_tokens: raise generation.max_new_tokens
    if unscored:
        extra["unscored_answers"] = unscored
    return provenance | extra


def _num(value: float) -> float | None:
    return None if value is None or value != value else float(value)
