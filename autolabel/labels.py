"""The per-image record every stage reads and writes.

Boxes and masks live in a :class:`supervision.Detections` (what the ecosystem speaks: NMS, IoU, drawing);
what it does not carry — image-level text, per-stage provenance — lives beside it in :class:`Labels`.

Per-box fields are columns of ``detections.data`` (numpy arrays, one row per box), always present:

* ``class_name`` — the ontology class (``""`` when a phrase maps to no class and is kept anyway)
* ``phrase``     — the raw text the model emitted for the box
* ``stage``      — name of the stage that produced the box (its provenance is ``Labels.provenance[stage]``)
* ``status``     — ``"kept"``, ``"dropped"`` or ``"flagged"`` (filters never delete: they decide and say why)
* ``reason``     — reason code for a drop or flag, ``""`` when kept
* ``text``       — per-box text (OCR line, region description), ``""`` when none
* ``has_mask``   — whether ``detections.mask[i]`` is a real mask (box-only rows get an empty one on merge)

Optional columns (``polygon``: object array of ``(K, 2)`` float arrays; ``quad``: ``(N, 8)`` float; scores such
as ``predicted_iou``) may be added by stages; merging fills them for rows that lack them.
Coordinates are absolute pixels in the displayed frame (EXIF orientation applied), ``xyxy`` float32.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import supervision as sv

KEPT, DROPPED, FLAGGED = "kept", "dropped", "flagged"


def delivered(status: Any, flagged: bool = True) -> Any:
    """Whether labels of ``status`` (a string, or an array of them) reach an export, a push or eval's operating
    point: dropped ones never, flagged ones unless ``flagged`` is False. The one statement of that rule.

    >>> delivered("flagged"), delivered("flagged", flagged=False), delivered(np.array(["kept", "dropped"])).tolist()
    (True, False, [True, False])
    """
    keep = status != DROPPED
    return keep if flagged else keep & (status != FLAGGED)

#: Required per-box columns and the value a row gets when a producer does not set it.
COLUMNS: dict[str, Any] = {
    "class_name": "",
    "phrase": "",
    "stage": "",
    "status": KEPT,
    "reason": "",
    "text": "",
    "has_mask": False,
}


@dataclass
class Text:
    """Image-level text: a caption or a page of OCR, with its own confidence."""

    kind: str  # "caption", "detailed_caption", "more_detailed_caption", "ocr", ...
    text: str
    score: float | None
    stage: str
    status: str = KEPT
    reason: str = ""


@dataclass
class Labels:
    """Everything known about one image: its displayed size, boxes/masks, texts and provenance."""

    width: int
    height: int
    detections: sv.Detections = field(default_factory=lambda: empty_detections())
    texts: list[Text] = field(default_factory=list)
    provenance: dict[str, dict[str, Any]] = field(default_factory=dict)

    def kept(self) -> sv.Detections:
        """The boxes no filter dropped (flagged ones included: they are for review, not removal)."""
        return self.detections[self.detections.data["status"] != DROPPED]

    def add(self, detections: sv.Detections, stage: str, provenance: dict[str, Any] | None = None) -> None:
        """Append a stage's detections, filling the required columns it did not set."""
        detections = with_columns(detections, stage=stage, height=self.height, width=self.width)
        self.detections = merge([self.detections, detections], self.height, self.width)
        if provenance is not None:
            self.provenance[stage] = provenance


def empty_detections() -> sv.Detections:
    """Zero boxes with every required column, ready to merge with anything."""
    return sv.Detections(
        xyxy=np.zeros((0, 4), dtype=np.float32),
        confidence=np.zeros((0,), dtype=np.float32),
        data={k: _column(v, 0) for k, v in COLUMNS.items()},
    )


def _column(default: Any, n: int) -> np.ndarray:
    if isinstance(default, bool):
        return np.full(n, default, dtype=bool)
    return np.array([default] * n, dtype=object)


def with_columns(
    detections: sv.Detections, stage: str | None = None, height: int | None = None, width: int | None = None
) -> sv.Detections:
    """Return ``detections`` with every required column present (and confidence set; ``nan`` = unknown)."""
    n = len(detections)
    data = dict(detections.data)
    for key, default in COLUMNS.items():
        if key not in data:
            data[key] = _column(default, n)
        elif key != "has_mask":
            data[key] = np.asarray(data[key], dtype=object)
    if stage is not None:
        data["stage"] = _column(stage, n)
    if detections.mask is not None and "has_mask" not in detections.data:
        data["has_mask"] = np.ones(n, dtype=bool)
    confidence = detections.confidence
    if confidence is None:
        confidence = np.full(n, np.nan, dtype=np.float32)
    return sv.Detections(
        xyxy=np.asarray(detections.xyxy, dtype=np.float32).reshape(-1, 4),
        mask=detections.mask,
        confidence=np.asarray(confidence, dtype=np.float32),
        class_id=detections.class_id,
        data=data,
    )


def merge(parts: Iterable[sv.Detections], height: int, width: int) -> sv.Detections:
    """Concatenate detections whose columns or masks differ (supervision's merge needs them equal)."""
    parts = [with_columns(p) for p in parts]
    keys: dict[str, np.ndarray] = {}
    for p in parts:
        for key, value in p.data.items():
            keys.setdefault(key, value)
    any_mask = any(p.mask is not None for p in parts)
    aligned = []
    for p in parts:
        n = len(p)
        data = dict(p.data)
        for key, like in keys.items():
            if key not in data:
                data[key] = _fill_like(like, n)
        mask = p.mask
        if any_mask and mask is None:
            mask = np.zeros((n, height, width), dtype=bool)
        aligned.append(
            sv.Detections(
                xyxy=p.xyxy, mask=mask, confidence=p.confidence, class_id=p.class_id, data=data
            )
        )
    if any(p.class_id is None for p in aligned):
        aligned = [
            sv.Detections(xyxy=p.xyxy, mask=p.mask, confidence=p.confidence, data=p.data) for p in aligned
        ]
    nonempty = [p for p in aligned if len(p)]
    if len(nonempty) <= 1:  # supervision's merge of empty parts drops every column: keep ours
        return nonempty[0] if nonempty else aligned[0]
    return sv.Detections.merge(nonempty)


def _fill_like(like: np.ndarray, n: int) -> np.ndarray:
    """A column of ``n`` "missing" values shaped like ``like``'s rows (nan for numbers, None for objects)."""
    shape = (n, *like.shape[1:])
    if like.dtype == bool:
        return np.zeros(shape, dtype=bool)
    if np.issubdtype(like.dtype, np.number):
        return np.full(shape, np.nan, dtype=np.float32)
    return np.full(shape, None, dtype=object)
