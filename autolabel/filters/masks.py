"""Decisions on masks, with the SAM data engine's published defaults (Kirillov et al. 2023, "Segment Anything").

Rows without a mask (``has_mask`` false) pass every mask check. Scores a segmenter may not give
(``predicted_iou``, ``stability_score``) pass when absent, and the stage says so once in the log.
"""

from __future__ import annotations

from typing import ClassVar, Iterable

import cv2
import numpy as np
import supervision as sv
from pydantic import Field

from ..labels import DROPPED, Labels
from ..stage import Item, StageParams
from .base import BoxFilter, FilterParams, FilterStage, PerClassParams, Rows, mark
from .overlap import class_ids


def mask_rows(labels: Labels) -> np.ndarray:
    """Indices of the rows that have a real mask and are not dropped."""
    det = labels.detections
    if det.mask is None or not len(det):
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(det.data["has_mask"].astype(bool) & (det.data["status"] != DROPPED))


class _ScoreColumnParams(PerClassParams):
    threshold: float = Field(ge=0.0, le=1.0)


class _ScoreColumn(BoxFilter):
    """Rows whose ``column`` is below ``threshold`` fail with ``code``; rows without the column pass."""

    class_keys = ("threshold",)
    column: str
    code: str

    def decide(self, rows: Rows) -> Iterable[tuple[np.ndarray, str]]:
        if not any(self.column in lab.detections.data for lab in rows.labels):
            self.warn_once(f"no {self.column!r} column (the segment stage gave none): every mask passes this check")
            return
        values = rows.column(self.column).astype(np.float64)
        yield values < self.values("threshold", rows.class_name), self.code  # nan (no value) passes


class PredictedIouParams(_ScoreColumnParams):
    #: 0.88: SAM data engine's predicted-IoU floor for automatic masks
    threshold: float = Field(default=0.88, ge=0.0, le=1.0)


class MaskPredictedIou(_ScoreColumn):
    """Masks whose ``predicted_iou`` (the segmenter's own quality estimate) is below ``threshold``
    (``low_predicted_iou``)."""

    Params = PredictedIouParams
    column, code = "predicted_iou", "low_predicted_iou"
    reasons: ClassVar[tuple[str, ...]] = ("low_predicted_iou",)


class StabilityParams(_ScoreColumnParams):
    #: 0.95: SAM data engine's stability floor (IoU of the masks thresholded at logit ±1)
    threshold: float = Field(default=0.95, ge=0.0, le=1.0)


class MaskStability(_ScoreColumn):
    """Masks whose ``stability_score`` is below ``threshold`` (``unstable_mask``). The score needs the mask
    logits, so only segment stages that keep them provide it; without the column every mask passes."""

    Params = StabilityParams
    column, code = "stability_score", "unstable_mask"
    reasons: ClassVar[tuple[str, ...]] = ("unstable_mask",)


class MaskAreaParams(PerClassParams):
    #: 0.95: SAM data engine drops masks covering 95 % of the image or more
    max_area: float = Field(default=0.95, gt=0.0, le=1.0)


class MaskArea(FilterStage):
    """Masks covering ``max_area`` of the image or more (``whole_image_mask``)."""

    reasons: ClassVar[tuple[str, ...]] = ('whole_image_mask',)

    Params = MaskAreaParams
    params: MaskAreaParams
    class_keys = ("max_area",)

    def __call__(self, items: list[Item]) -> list[Item]:
        for item in items:
            det, rows = item.labels.detections, mask_rows(item.labels)
            if not len(rows):
                continue
            frac = det.mask[rows].reshape(len(rows), -1).mean(axis=1)
            hit = np.zeros(len(det), dtype=bool)
            hit[rows] = frac >= self.values("max_area", det.data["class_name"][rows])
            mark(det.data["status"], det.data["reason"], hit, "whole_image_mask", self.params.action)
        return items


class MaskCleanupParams(StageParams):
    #: 100 px: SAM's post-processing removes islands and fills holes under 100 px
    min_region: int = Field(default=100, ge=0)
    islands: bool = True
    holes: bool = True
    #: false: the box stays the detector's (the segment stage keeps its prompt boxes); true: re-fit it to the
    #: cleaned mask, as SAM's automatic mask generator does
    update_box: bool = False


class MaskCleanup(FilterStage):
    """Remove islands and fill holes smaller than ``min_region`` px (8-connected, as SAM's
    ``remove_small_regions``). This one changes masks instead of deciding: a mask whose every island is small
    keeps its largest one."""

    Params = MaskCleanupParams
    params: MaskCleanupParams

    def __call__(self, items: list[Item]) -> list[Item]:
        p = self.params
        for item in items:
            det, rows = item.labels.detections, mask_rows(item.labels)
            changed = []
            for i in rows:
                mask = det.mask[i]
                if p.holes:
                    mask = remove_small_regions(mask, p.min_region, "holes")
                if p.islands:
                    mask = remove_small_regions(mask, p.min_region, "islands")
                if mask is not det.mask[i]:
                    det.mask[i] = mask
                    changed.append(i)
            if p.update_box and changed:
                fitted = sv.mask_to_xyxy(det.mask[changed], coordinate_convention="exclusive").astype(np.float32)
                nonempty = det.mask[changed].reshape(len(changed), -1).any(axis=1)
                det.xyxy[np.asarray(changed)[nonempty]] = fitted[nonempty]
        return items


def remove_small_regions(mask: np.ndarray, min_region: int, mode: str) -> np.ndarray:
    """SAM's rule: 8-connected regions (``islands``) or gaps (``holes``) under ``min_region`` px are removed.

    Returns ``mask`` itself when nothing changes. A gap touching the image border counts as a hole only when it
    is small; the outside of the object is one large gap.
    """
    holes = mode == "holes"
    work = (~mask if holes else mask).astype(np.uint8)
    n, regions, stats, _ = cv2.connectedComponentsWithStats(work, connectivity=8)
    sizes = stats[1:, cv2.CC_STAT_AREA]
    small = np.flatnonzero(sizes < min_region) + 1
    if not len(small):
        return mask
    if holes:
        return np.isin(regions, np.r_[0, small])  # label 0 is the mask itself here: keep it, fill the small gaps
    keep = np.setdiff1d(np.arange(1, n), small)
    if not len(keep):
        keep = np.array([int(np.argmax(sizes)) + 1])
    return np.isin(regions, keep)


class MaskBoxConsistencyParams(PerClassParams):
    #: 0.5: the PASCAL VOC / COCO match IoU (no published data-engine value)
    min_iou: float = Field(default=0.5, ge=0.0, le=1.0)


class MaskBoxConsistency(FilterStage):
    """Masks whose own bounding box overlaps the row's box (the prompt box, for a segmenter prompted by boxes)
    by less than ``min_iou`` (``mask_box_mismatch``); masks with no pixel at all fail with ``empty_mask``."""

    reasons: ClassVar[tuple[str, ...]] = ('mask_box_mismatch', 'empty_mask')

    Params = MaskBoxConsistencyParams
    params: MaskBoxConsistencyParams
    class_keys = ("min_iou",)

    def __call__(self, items: list[Item]) -> list[Item]:
        for item in items:
            det, rows = item.labels.detections, mask_rows(item.labels)
            if not len(rows):
                continue
            masks = det.mask[rows]
            empty = ~masks.reshape(len(rows), -1).any(axis=1)
            fitted = sv.mask_to_xyxy(masks, coordinate_convention="exclusive").astype(np.float64)
            iou = np.diag(sv.box_iou_batch(fitted, det.xyxy[rows].astype(np.float64)))
            status, reason = det.data["status"], det.data["reason"]
            hit = np.zeros(len(det), dtype=bool)
            hit[rows] = empty
            mark(status, reason, hit, "empty_mask", self.params.action)
            hit[rows] = ~empty & (iou < self.values("min_iou", det.data["class_name"][rows]))
            mark(status, reason, hit, "mask_box_mismatch", self.params.action)
        return items


class MaskNmsParams(FilterParams):
    #: 0.7: SAM data engine's mask NMS IoU
    iou: float = Field(default=0.7, ge=0.0, le=1.0)
    #: true: SAM's NMS knows no classes, and two masks this alike are one object whatever their labels
    class_agnostic: bool = True


class MaskNms(FilterStage):
    """Mask NMS (``supervision.mask_non_max_suppression``): of masks overlapping more than ``iou`` (mask IoU),
    the best-scoring stays, the others fail with ``mask_nms``. Boxes without masks are not compared."""

    reasons: ClassVar[tuple[str, ...]] = ('mask_nms',)

    Params = MaskNmsParams
    params: MaskNmsParams

    def __call__(self, items: list[Item]) -> list[Item]:
        for item in items:
            det, rows = item.labels.detections, mask_rows(item.labels)
            if len(rows) < 2:
                continue
            score = np.nan_to_num(det.confidence[rows].astype(np.float64), nan=-1.0)
            pred = np.column_stack([det.xyxy[rows], score])
            if not self.params.class_agnostic:
                pred = np.column_stack([pred, class_ids(det.data["class_name"][rows])])
            keep = sv.mask_non_max_suppression(pred, det.mask[rows], iou_threshold=self.params.iou)
            hit = np.zeros(len(det), dtype=bool)
            hit[rows[~keep]] = True
            mark(det.data["status"], det.data["reason"], hit, "mask_nms", self.params.action)
        return items
