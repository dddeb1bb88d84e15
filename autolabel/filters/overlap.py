"""Decisions from how boxes overlap: NMS, soft-NMS (supervision) and weighted boxes fusion (ensemble-boxes).

These look at each image's boxes together, so they loop over images; the work inside is supervision's vectorized
IoU. Boxes of unknown score rank last in NMS and are left out of soft-NMS and fusion.
"""

from __future__ import annotations

import importlib.util
from typing import Annotated, ClassVar, Literal

import numpy as np
import supervision as sv
from pydantic import Field, model_validator

from ..errors import ConfigError
from ..labels import DROPPED, KEPT, Labels
from ..stage import Item, StageContext
from ..validation import invalid
from .base import Action, FilterParams, FilterStage, PerClassParams, Rows, is_ocr, mark


def class_ids(class_name: np.ndarray) -> np.ndarray:
    """Integer ids for class names (``""``, a phrase of no class, is a class of its own)."""
    return np.unique(class_name.astype(str), return_inverse=True)[1].reshape(-1)


class NmsParams(PerClassParams):
    #: 0.5: the usual detection NMS IoU (supervision's and torchvision's examples); FLD-5B names NMS, not its IoU
    iou: float = Field(default=0.5, ge=0.0, le=1.0)
    class_agnostic: bool = False  # true: a box suppresses overlapping boxes of any class

    @model_validator(mode="after")
    def _per_class_needs_classes(self) -> "NmsParams":
        if self.class_agnostic and self.per_class:
            raise invalid("per_class IoUs need class_agnostic: false (class-agnostic NMS compares across classes)")
        return self


class Nms(FilterStage):
    """Non-maximum suppression (``supervision.box_non_max_suppression``): of boxes overlapping more than ``iou``,
    the best-scoring stays and the others fail with ``nms``. Per class by default; ``class_agnostic: true`` across
    classes; ``per_class`` sets a class's own IoU."""

    reasons: ClassVar[tuple[str, ...]] = ('nms',)

    Params = NmsParams
    params: NmsParams
    class_keys = ("iou",)

    def __call__(self, items: list[Item]) -> list[Item]:
        rows = Rows.of([item.labels for item in items])
        idx = np.flatnonzero(rows.active)
        if len(idx) < 2:
            return items
        names = rows.class_name[idx]
        score = np.nan_to_num(rows.confidence[idx].astype(np.float64), nan=-1.0)
        group = group_ids(rows.image[idx], None if self.params.class_agnostic else names)
        pred = np.column_stack([rows.xyxy[idx], score, group])
        iou = self.values("iou", names)
        keep = np.ones(len(idx), dtype=bool)
        for part in chunks(rows.image[idx]):
            part = part[overlapped(pred[part], iou[part])]  # a box overlapping no box of its group stays
            for t in np.unique(iou[part]):  # NMS never compares groups: one run per distinct IoU is exact
                sel = part[iou[part] == t]
                keep[sel] = sv.box_non_max_suppression(pred[sel], iou_threshold=float(t))
        hit = np.zeros(len(rows), dtype=bool)
        hit[idx[~keep]] = True
        mark(rows.status, rows.reason, hit, "nms", self.params.action)
        rows.write_back()
        return items


def overlapped(pred: np.ndarray, iou: np.ndarray) -> np.ndarray:
    """Rows of ``pred`` (x1 y1 x2 y2 score group) overlapping another row of their group by more than their ``iou``.

    Only these can suppress or be suppressed; leaving the others out of the NMS loop changes nothing but its time.
    """
    if len(pred) < 2:
        return np.zeros(len(pred), dtype=bool)
    over = sv.box_iou_batch(pred[:, :4], pred[:, :4]) > iou[:, None]
    over &= pred[:, 5][:, None] == pred[:, 5][None, :]
    np.fill_diagonal(over, False)
    return over.any(axis=1)


def group_ids(image: np.ndarray, class_name: np.ndarray | None) -> np.ndarray:
    """One id per (image, class) — or per image when ``class_name`` is None: what NMS may compare."""
    if class_name is None:
        return image.astype(np.float64)
    cls = class_ids(class_name)
    return (image * (cls.max() + 1) + cls).astype(np.float64)


#: most boxes compared in one call: the IoU matrix is this squared (several images share a call; NMS never
#: compares images, so splitting between images changes nothing)
CHUNK_ROWS = 128


def chunks(image: np.ndarray, limit: int | None = None) -> list[np.ndarray]:
    """Row indices split between images (``image`` is sorted) into runs of at most ``limit`` rows where possible."""
    limit = CHUNK_ROWS if limit is None else limit
    starts = np.flatnonzero(np.concatenate(([True], image[1:] != image[:-1])))
    bounds = np.append(starts, len(image))
    out, first = [], 0
    for k in range(1, len(bounds)):
        if bounds[k] - bounds[first] > limit and k - 1 > first:
            out.append(np.arange(bounds[first], bounds[k - 1]))
            first = k - 1
    out.append(np.arange(bounds[first], bounds[-1]))
    return out


class SoftNmsParams(FilterParams):
    #: 0.5: the Gaussian sigma of Soft-NMS (Bodla et al. 2017)
    sigma: float = Field(default=0.5, gt=0.0)
    #: 0.001: the reference implementation's final score floor; put a score_threshold after it to cut harder
    threshold: float = Field(default=0.001, ge=0.0, le=1.0)
    class_agnostic: bool = False


class SoftNms(FilterStage):
    """Soft-NMS (``supervision.box_soft_non_max_suppression``): overlapping boxes are not removed but rescored,
    ``score *= exp(-iou² / sigma)`` per better overlapping box. The decayed score becomes the confidence (the
    original is kept in the ``raw_confidence`` column); boxes decayed below ``threshold`` fail with ``soft_nms``
    (or ``low_score`` when they were below it to begin with)."""

    reasons: ClassVar[tuple[str, ...]] = ('soft_nms', 'low_score')

    Params = SoftNmsParams
    params: SoftNmsParams

    def __call__(self, items: list[Item]) -> list[Item]:
        rows = Rows.of([item.labels for item in items])
        idx = np.flatnonzero(rows.active & np.isfinite(rows.confidence))
        if not len(idx):
            return items
        group = group_ids(rows.image[idx], None if self.params.class_agnostic else rows.class_name[idx])
        pred = np.column_stack([rows.xyxy[idx], rows.confidence[idx], group])
        decayed = np.empty(len(idx), dtype=np.float64)
        for part in chunks(rows.image[idx]):
            decayed[part] = sv.box_soft_non_max_suppression(pred[part], sigma=self.params.sigma)
        before = rows.confidence[idx]
        low = np.zeros(len(rows), dtype=bool)
        low[idx] = decayed < self.params.threshold
        was_low = np.zeros(len(rows), dtype=bool)
        was_low[idx] = before < self.params.threshold
        mark(rows.status, rows.reason, low & was_low, "low_score", self.params.action)
        mark(rows.status, rows.reason, low & ~was_low, "soft_nms", self.params.action)
        rows.write_back()
        raw = rows.column("raw_confidence").astype(np.float32)  # the score before any soft-NMS: kept once
        raw = np.where(np.isnan(raw), rows.confidence, raw)
        confidence = rows.confidence.astype(np.float32).copy()
        confidence[idx] = decayed
        for i, item in enumerate(items):
            s, e = rows.offsets[i], rows.offsets[i + 1]
            if s < e:
                item.labels.detections.confidence = confidence[s:e]
                item.labels.detections.data["raw_confidence"] = raw[s:e]
        return items


class WbfParams(FilterParams):
    stage_refs = ("from_stages", "weights")
    #: 0.55: the IoU of weighted boxes fusion (Solovyev et al. 2021; ensemble-boxes' default)
    iou: float = Field(default=0.55, ge=0.0, le=1.0)
    skip_below: float = Field(default=0.0, ge=0.0, le=1.0)  # boxes scoring below are not fused (left as they are)
    conf_type: Literal["avg", "max", "box_and_model_avg", "absent_model_aware_avg"] = "avg"
    #: fuse the boxes of these (earlier) stages; default: every stage's
    from_stages: list[str] | None = Field(default=None, min_length=1)
    weights: dict[str, Annotated[float, Field(gt=0)]] = Field(default_factory=dict)  # stage name → weight (1)
    #: fused boxes seen by fewer source stages fail with ``low_agreement``; 1: off
    min_agreement: int = Field(default=1, ge=1)
    action: Action = "flag"


class Wbf(FilterStage):
    """Weighted boxes fusion across stages (``ensemble_boxes.weighted_boxes_fusion``): boxes of one class that
    overlap more than ``iou`` become one box, their score-weighted average.

    Each source stage counts as one model. The fused boxes are added as this stage's rows, with ``agreement`` =
    how many source stages saw the object; the boxes fused into them are dropped with ``fused``. With ``avg``
    scores, a box only one of two models saw has its score halved: agreement raises confidence. Rows with a mask
    and OCR lines are left as they are (masks are not fused: fuse before segmenting).
    """

    reasons: ClassVar[tuple[str, ...]] = ('fused', 'low_agreement')

    Params = WbfParams
    params: WbfParams

    def __init__(self, name: str, params: WbfParams, context: StageContext):
        super().__init__(name, params, context)
        if importlib.util.find_spec("ensemble_boxes") is None:
            raise ConfigError("type: wbf needs the ensemble-boxes package (pip install ensemble-boxes)")

    def __call__(self, items: list[Item]) -> list[Item]:
        for item in items:
            self._fuse(item.labels)
        return items

    def _fuse(self, labels: Labels) -> None:
        from ensemble_boxes import weighted_boxes_fusion

        det = labels.detections
        if not len(det):
            return
        size = np.array([labels.width, labels.height, labels.width, labels.height], dtype=np.float64)
        unit = np.clip(det.xyxy.astype(np.float64) / size, 0.0, 1.0)
        positive = (unit[:, 2] > unit[:, 0]) & (unit[:, 3] > unit[:, 1])
        pick = (det.data["status"] != DROPPED) & np.isfinite(det.confidence) & positive
        pick &= (det.confidence >= self.params.skip_below) & ~det.data["has_mask"].astype(bool) & ~is_ocr(labels)
        if self.params.from_stages:
            pick &= np.isin(det.data["stage"].astype(str), self.params.from_stages)
        rows = np.flatnonzero(pick)
        if not len(rows):
            return
        names = det.data["class_name"][rows].astype(str)
        labels_of, label = np.unique(names, return_inverse=True)
        sources, source = np.unique(det.data["stage"][rows].astype(str), return_inverse=True)
        groups = [np.flatnonzero(source == s) for s in range(len(sources))]
        boxes, scores, fused_label = weighted_boxes_fusion(
            [unit[rows[g]] for g in groups],
            [det.confidence[rows[g]].astype(np.float64) for g in groups],
            [label[g] for g in groups],
            weights=[self.params.weights.get(s, 1.0) for s in sources],
            iou_thr=self.params.iou,
            skip_box_thr=0.0,
            conf_type=self.params.conf_type,
        )
        fused_label = fused_label.astype(np.int64)
        # which fused box each input joined: its best-overlapping fused box of the same class
        iou = sv.box_iou_batch(unit[rows], boxes)
        iou[label[:, None] != fused_label[None, :]] = -1.0
        member = iou.argmax(axis=1)
        # (ensemble-boxes does not return its clusters; an input counts for the fused box it overlaps most)
        agreement = np.array([max(len(np.unique(source[member == k])), 1) for k in range(len(boxes))], dtype=np.float32)
        phrase = labels_of[fused_label].astype(object)  # the class name, unless a member's phrase is known
        seen = np.zeros(len(boxes), dtype=bool)
        for i in np.argsort(-det.confidence[rows], kind="stable"):  # the phrase of each box's best-scoring member
            if not seen[member[i]]:
                seen[member[i]] = True
                phrase[member[i]] = det.data["phrase"][rows[i]]

        hit = np.zeros(len(det), dtype=bool)
        hit[rows] = True
        mark(det.data["status"], det.data["reason"], hit, "fused", "drop")
        status = np.full(len(boxes), KEPT, dtype=object)
        reason = np.full(len(boxes), "", dtype=object)
        mark(status, reason, agreement < self.params.min_agreement, "low_agreement", self.params.action)
        fused = sv.Detections(
            xyxy=(boxes * size).astype(np.float32),
            confidence=scores.astype(np.float32),
            data={
                "class_name": labels_of[fused_label].astype(object),
                "phrase": np.asarray(phrase, dtype=object),
                "status": status,
                "reason": reason,
                "agreement": agreement,
            },
        )
        labels.add(
            fused,
            stage=self.name,
            provenance={"task": "wbf", "sources": sources.tolist(), "iou": self.params.iou,
                        "conf_type": self.params.conf_type},
        )
