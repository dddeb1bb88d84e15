"""Stage ``segment``: SAM / SAM2 / SAM 3 tracker masks for the boxes earlier stages found.

A mask belongs to its box, so the masks fill the prompting rows (``detections.mask``, ``has_mask``) instead of
adding rows: class, phrase, box and detector score stay what the detector said, and the segmenter's own quality
estimates join the row as ``predicted_iou`` and ``stability_score`` (for the mask checks), with ``mask_stage``
naming this stage. Rows that were dropped are not segmented; rows that already have a mask keep it unless
``overwrite: true``. Each image's embedding is computed once (per batch, for every ``segment`` stage of the same
model, and, for ``sam3_tracker``, for a ``concepts`` stage of the same SAM 3 checkpoint: one backbone pass for both);
its boxes are decoded ``max_boxes_per_call`` at a time, so a crowded image costs time, not unbounded memory.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from ..labels import DROPPED, Labels
from ..models.contract import Segmenter, accepts
from ..models.features import StageFeatures, shared
from ..models.sam import MAX_BOXES_PER_CALL
from ..stage import Item, ModelStage, ModelStageParams


class SegmentParams(ModelStageParams):
    stage_refs = ("from_stages",)
    #: segment only the boxes of these (earlier) stages; default: every kept box
    from_stages: list[str] | None = Field(default=None, min_length=1)
    #: let the model propose three masks per box and keep the one with the highest predicted IoU
    multimask: bool = False
    #: re-segment rows that already have a mask
    overwrite: bool = False
    #: boxes per mask-decoder call (memory per image is bounded by this, not by the box count)
    max_boxes_per_call: int = Field(default=MAX_BOXES_PER_CALL, ge=1, le=4096)


class Segment(ModelStage):
    """Masks for the kept boxes of earlier stages: one image embedding per image, its boxes decoded in chunks."""

    Params = SegmentParams
    params: SegmentParams
    model_types = ("sam", "sam2", "sam3_tracker")
    model_protocol = Segmenter

    def rows(self, labels: Labels) -> np.ndarray:
        """Indices of the rows to segment: not dropped, from the chosen stages, without a mask unless overwriting."""
        data = labels.detections.data
        pick = data["status"] != DROPPED
        if self.params.from_stages:
            pick &= np.isin(data["stage"].astype(str), self.params.from_stages)
        if not self.params.overwrite:
            pick &= ~data["has_mask"].astype(bool)
        return np.flatnonzero(pick)

    def __call__(self, items: list[Item], features: StageFeatures | None = None) -> list[Item]:
        """``features``: the batch's image embeddings, shared with the pipeline's other stages of this model."""
        model: Segmenter = self.model
        rows = [self.rows(item.labels) for item in items]
        boxes = [item.labels.detections.xyxy[r] for item, r in zip(items, rows)]
        options = {"multimask": self.params.multimask}
        if accepts(model.segment, "max_boxes_per_call"):  # plugin segmenters written before the key exist
            options["max_boxes_per_call"] = self.params.max_boxes_per_call
        options |= shared(features, self.params.model, model, model.segment)
        found = model.segment([item.image for item in items], boxes, **options)
        provenance = self.provenance(model, "box_to_mask", from_stages=self.params.from_stages,
                                     multimask=self.params.multimask, score="predicted_iou")
        for item, r, masks in zip(items, rows, found):
            fill_masks(item.labels, r, masks.masks, self.name,
                       predicted_iou=masks.predicted_iou, stability_score=masks.stability_score)
            item.labels.provenance[self.name] = provenance
        return items


def fill_masks(labels: Labels, rows: np.ndarray, masks: np.ndarray, stage: str, **scores: np.ndarray) -> None:
    """Set the masks (and per-mask score columns) of ``rows`` in place; other rows keep theirs (or none)."""
    det = labels.detections
    n = len(det)
    if len(rows) == 0:
        return
    if masks.shape != (len(rows), labels.height, labels.width):
        raise ValueError(
            f"got masks of shape {masks.shape} for {len(rows)} boxes of a {labels.width}x{labels.height} image"
        )
    if det.mask is None:
        det.mask = np.zeros((n, labels.height, labels.width), dtype=bool)
    det.mask[rows] = masks
    has_mask = det.data["has_mask"].astype(bool)
    has_mask[rows] = True
    det.data["has_mask"] = has_mask
    for column, values in scores.items():
        current = det.data.get(column)
        current = np.full(n, np.nan, np.float32) if current is None else np.asarray(current, dtype=np.float32).copy()
        current[rows] = values
        det.data[column] = current
    owner = det.data.get("mask_stage")
    owner = np.full(n, None, dtype=object) if owner is None else np.asarray(owner, dtype=object)
    owner[rows] = stage
    det.data["mask_stage"] = owner
