"""Greedy box matching, the rule COCO evaluation uses: per image, predictions in descending score each take the
unmatched ground-truth box they overlap most, if that IoU reaches the threshold (IoUs from pycocotools)."""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils

from .data import Side


def xywh(xyxy: np.ndarray) -> np.ndarray:
    out = np.array(xyxy, dtype=np.float64).reshape(-1, 4)
    out[:, 2:] -= out[:, :2]
    return out


def greedy(run: Side, rows: np.ndarray, gt: Side, gt_rows: np.ndarray, iou: float,
           class_aware: bool = True) -> np.ndarray:
    """For each of ``run``'s ``rows`` (an integer array), the ``gt`` row it matched, or -1.

    ``class_aware``: a prediction matches only ground truth of its own class (else any class: the confusion table).
    Ties in score keep the rows' order (a stable sort, like COCOeval).
    """
    out = np.full(len(rows), -1)
    if not len(rows) or not len(gt_rows):
        return out
    # by image, then by descending score (stable); numpy sorts NaN (a box without a score) last
    order = np.lexsort((-run.score[rows], run.image[rows]))
    rows_sorted = rows[order]
    g_order = np.argsort(gt.image[gt_rows], kind="stable")
    g_sorted = gt_rows[g_order]
    images = run.image[rows_sorted]
    g_images = gt.image[g_sorted]
    starts = np.flatnonzero(np.r_[True, images[1:] != images[:-1]])
    ends = np.r_[starts[1:], len(images)]
    g_lo = np.searchsorted(g_images, images[starts])
    g_hi = np.searchsorted(g_images, images[starts], side="right")
    matched_sorted = np.full(len(rows_sorted), -1)
    for s, e, lo, hi in zip(starts, ends, g_lo, g_hi):
        if lo == hi:
            continue
        d, g = rows_sorted[s:e], g_sorted[lo:hi]
        ious = mask_utils.iou(xywh(run.xyxy[d]), xywh(gt.xyxy[g]), [0] * len(g)).reshape(len(d), len(g))
        if class_aware:
            ious[run.cls[d][:, None] != gt.cls[g][None, :]] = -1.0
        taken = np.zeros(len(g), dtype=bool)
        for k in range(len(d)):
            row = np.where(taken, -1.0, ious[k])
            best = int(row.argmax())
            if row[best] >= iou:
                taken[best] = True
                matched_sorted[s + k] = g[best]
    out[order] = matched_sorted
    return out
