"""Decisions on OCR output: text lines (rows with a ``quad``, or from a stage whose provenance task is OCR) and
page-level OCR texts (``Labels.texts`` of kind ``ocr*``). Other rows pass."""

from __future__ import annotations

from typing import ClassVar, Iterable

import numpy as np
from pydantic import Field

from ..labels import DROPPED, Labels
from ..stage import Item
from .base import FilterParams, FilterStage, has_values, is_ocr, mark, mark_text


class OcrQualityParams(FilterParams):
    #: 0.5: PaddleOCR's drop_score and RapidOCR's text_score
    min_score: float = Field(default=0.5, ge=0.0, le=1.0)
    #: 9 px²: PaddleOCR's DB detector drops text boxes under 3 px a side (min_size=3), squared
    min_quad_area: float = Field(default=9.0, ge=0.0)
    min_chars: int = Field(default=1, ge=0)  # characters after stripping spaces; 1: no empty lines


class OcrQuality(FilterStage):
    """OCR lines whose quad (or box) is smaller than ``min_quad_area`` px² (``small_quad``), whose text is shorter
    than ``min_chars`` (``too_short``) or whose confidence is below ``min_score`` (``low_score``; unknown passes).
    Page-level OCR texts get the length and score checks."""

    reasons: ClassVar[tuple[str, ...]] = ('low_score', 'small_quad', 'too_short')

    Params = OcrQualityParams
    params: OcrQualityParams

    def __call__(self, items: list[Item]) -> list[Item]:
        p = self.params
        for item in items:
            det = item.labels.detections
            rows = is_ocr(item.labels) & (det.data["status"] != DROPPED) if len(det) else np.zeros(0, dtype=bool)
            if rows.any():
                for hit, code in self._decide(item.labels):
                    mark(det.data["status"], det.data["reason"], hit & rows, code, p.action)
            for text in item.labels.texts:
                if text.kind.startswith("ocr"):
                    if len(text.text.strip()) < p.min_chars:
                        mark_text(text, "too_short", p.action)
                    elif text.score is not None and text.score < p.min_score:  # nan < x is False: passes
                        mark_text(text, "low_score", p.action)
        return items

    def _decide(self, labels: Labels) -> Iterable[tuple[np.ndarray, str]]:
        det = labels.detections
        area = box_area = np.prod(np.clip(det.xyxy[:, 2:] - det.xyxy[:, :2], 0, None).astype(np.float64), axis=1)
        if "quad" in det.data:
            quads = quad_array(det.data["quad"])
            has = has_values(quads)
            area = np.where(has, quad_area(np.nan_to_num(quads)), box_area)
        yield area < self.params.min_quad_area, "small_quad"
        chars = np.array([len(t.strip()) if isinstance(t, str) else 0 for t in det.data["text"]])
        yield chars < self.params.min_chars, "too_short"
        yield det.confidence < self.params.min_score, "low_score"


def quad_array(column: np.ndarray) -> np.ndarray:
    """A ``quad`` column as ``(N, 8)`` floats, ``nan`` where a row has none (it may come back ragged from JSON)."""
    column = np.asarray(column)
    if column.dtype != object and column.ndim == 2 and column.shape[1] == 8:
        return column.astype(np.float64)
    out = np.full((len(column), 8), np.nan)
    for i, q in enumerate(column):
        try:
            arr = np.asarray(q, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            continue
        if arr.size == 8:
            out[i] = arr
    return out


def quad_area(quads: np.ndarray) -> np.ndarray:
    """Areas of ``(N, 8)`` quads ``x1 y1 … x4 y4`` by the shoelace formula (all four terms)."""
    x, y = quads[:, 0::2], quads[:, 1::2]
    return 0.5 * np.abs((x * np.roll(y, -1, axis=1) - np.roll(x, -1, axis=1) * y).sum(axis=1))
