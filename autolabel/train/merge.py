"""The merge rule of ``autolabel refine``: an image's labels so far and the new round's, as one set of labels.

Per image and class, the boxes neither side dropped are paired one to one by IoU (the optimal assignment,
``scipy.optimize.linear_sum_assignment`` over supervision's IoUs); a pair overlapping at least ``iou`` (0.55, the
WBF default) is one object both rounds found:

* **fused** — one box, the confidence-weighted mean of the two (their plain mean when a score is unknown), scored
  with the mean of the two scores, its other columns (phrase, mask, text) the newer round's;
* **fusion** (the default rule) keeps every other box as it was: what either round found stays;
* **agreement** keeps only the fused boxes: the others stay in the store, dropped with reason ``no_agreement``.

Each label keeps the round that made it: the column ``round`` is the first round that found it (for a fused box,
the earlier of the two), ``found_in`` lists every round that did (``"0,1"``), and its ``stage`` is renamed
``<stage>@round-<N>`` after the round whose model made it, so that its provenance — that round's model, revision
and lineage — is ``labels.provenance["<stage>@round-<N>"]``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import supervision as sv

from ..labels import DROPPED, Labels, merge as merge_detections, with_columns

Rule = Literal["fusion", "agreement"]
#: the IoU at which two rounds' boxes are one object (weighted boxes fusion's default)
IOU = 0.55
NO_AGREEMENT = "no_agreement"


def tag(labels: Labels, round_number: int) -> Labels:
    """A round's labels as the merge keeps them: each stage renamed ``<stage>@round-N``, each box with its round.

    Labels already tagged (the merged labels of earlier rounds) are returned as they are.
    """
    det = with_columns(labels.detections)
    if "round" in det.data:
        return labels
    n = len(det)
    stage = np.array([f"{s}@round-{round_number}" for s in det.data["stage"]], dtype=object)
    det.data["stage"] = stage
    det.data["round"] = np.full(n, round_number, dtype=np.int64)
    det.data["found_in"] = np.full(n, str(round_number), dtype=object)
    provenance = {f"{name}@round-{round_number}": value | {"round": round_number}
                  for name, value in labels.provenance.items()}
    return Labels(labels.width, labels.height, det, list(labels.texts), provenance)


def merge(old: Labels, new: Labels, rule: Rule = "fusion", iou: float = IOU) -> Labels:
    """``old`` (tagged: the labels so far) and ``new`` (tagged: this round's) merged by ``rule`` (module docstring).

    Dropped boxes of either side are left out; the image-level texts are the new round's.
    """
    a, b = with_columns(old.detections), with_columns(new.detections)
    a = a[a.data["status"] != DROPPED]
    b = b[b.data["status"] != DROPPED]
    pairs = match(a, b, iou)
    fused = b[[j for _, j in pairs]] if pairs else b[np.zeros(0, dtype=int)]
    if pairs:
        i, j = np.array(pairs).T
        fused.xyxy = _weighted(a.xyxy[i], b.xyxy[j], a.confidence[i], b.confidence[j]).astype(np.float32)
        fused.confidence = np.nanmean(np.stack([a.confidence[i], b.confidence[j]]), axis=0).astype(np.float32)
        earlier = a.data["round"][i] <= b.data["round"][j]
        fused.data["round"] = np.minimum(a.data["round"][i], b.data["round"][j])
        fused.data["stage"] = np.where(earlier, a.data["stage"][i], b.data["stage"][j]).astype(object)
        fused.data["found_in"] = np.array([_rounds(x, y) for x, y in zip(a.data["found_in"][i],
                                                                          b.data["found_in"][j])], dtype=object)
    matched_a = np.isin(np.arange(len(a)), [i for i, _ in pairs])
    matched_b = np.isin(np.arange(len(b)), [j for _, j in pairs])
    rest = [a[~matched_a], b[~matched_b]]
    if rule == "agreement":
        for part in rest:
            part.data["status"] = np.full(len(part), DROPPED, dtype=object)
            part.data["reason"] = np.full(len(part), NO_AGREEMENT, dtype=object)
    height, width = new.height, new.width
    detections = merge_detections([fused, *rest], height, width)
    provenance = dict(old.provenance) | dict(new.provenance)
    return Labels(width, height, detections, list(new.texts), provenance)


def match(a: sv.Detections, b: sv.Detections, iou: float) -> list[tuple[int, int]]:
    """One-to-one pairs (row of ``a``, row of ``b``) of the same class overlapping at least ``iou``: the assignment
    that maximises the summed IoU (ties: the rows' order)."""
    from scipy.optimize import linear_sum_assignment

    if not len(a) or not len(b):
        return []
    overlap = sv.box_iou_batch(a.xyxy.astype(np.float64), b.xyxy.astype(np.float64))
    same = a.data["class_name"].astype(str)[:, None] == b.data["class_name"].astype(str)[None, :]
    overlap = np.where(same & (overlap >= iou), overlap, 0.0)
    rows, cols = linear_sum_assignment(-overlap)
    return sorted((int(r), int(c)) for r, c in zip(rows, cols) if overlap[r, c] > 0)


def _weighted(a: np.ndarray, b: np.ndarray, wa: np.ndarray, wb: np.ndarray) -> np.ndarray:
    """Per row, the boxes' mean weighted by their scores (the plain mean where a score is unknown or both are 0).

    >>> _weighted(np.array([[0., 0, 10, 10]]), np.array([[2., 2, 12, 12]]), np.array([0.75]), np.array([0.25]))
    array([[ 0.5,  0.5, 10.5, 10.5]])
    """
    wa = np.asarray(wa, dtype=np.float64)[:, None]
    wb = np.asarray(wb, dtype=np.float64)[:, None]
    plain = ~np.isfinite(wa) | ~np.isfinite(wb) | (wa + wb <= 0)
    wa, wb = np.where(plain, 1.0, wa), np.where(plain, 1.0, wb)
    return (a * wa + b * wb) / (wa + wb)


def _rounds(x: str, y: str) -> str:
    """Two ``found_in`` lists as one, sorted.

    >>> _rounds("0,2", "1")
    '0,1,2'
    """
    found = {int(r) for part in (x, y) for r in str(part).split(",") if r != ""}
    return ",".join(str(r) for r in sorted(found))
