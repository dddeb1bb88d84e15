"""Stage ``ocr``: text lines as boxes (with their quads and text) and the page's text, from an OCR model.

Each line becomes a row: its box is the bounding box of the detected quadrilateral (kept in the ``quad`` column,
``(N, 8)`` pixels, clockwise from top-left), ``text`` the recognized string, confidence the recognizer's score,
class the ontology class named by ``label``. The lines joined in reading order (top to bottom, left to right;
lines that share a row joined by spaces) become one image-level ``Text(kind="ocr")``, scored by the mean
recognizer score per character.
"""

from __future__ import annotations

import numpy as np
import supervision as sv
from pydantic import Field

from ..labels import Text
from ..models.outputs import clip_boxes, quad_bounds
from ..models.contract import OcrModel
from ..stage import Item, ModelStage, ModelStageParams, StageContext, check_classes


quad_boxes = quad_bounds  # the name this module gave it first (still imported)


class OcrParams(ModelStageParams):
    #: ontology class of the text-line boxes
    label: str = "text"
    #: lines the recognizer scores below this are left out (RapidOCR's default)
    min_score: float = Field(default=0.5, ge=0.0, le=1.0)
    #: the text detector's region score floor
    box_threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    #: how far a detected region is grown around its text
    unclip_ratio: float = Field(default=1.6, gt=0.0, le=10.0)
    #: also add the whole page's text as an image-level Text(kind="ocr")
    page_text: bool = True


class Ocr(ModelStage):
    """One row per text line, and the page's text, from an OCR model (``rapidocr``: offline, weights in the wheel)."""

    Params = OcrParams
    params: OcrParams
    model_types = ("rapidocr",)
    model_protocol = OcrModel

    def __init__(self, name: str, params: OcrParams, context: StageContext):
        super().__init__(name, params, context)
        check_classes([params.label], context.ontology, "label")

    def __call__(self, items: list[Item]) -> list[Item]:
        model: OcrModel = self.model
        p = self.params
        found = model.read([item.image for item in items], min_score=p.min_score,
                           box_threshold=p.box_threshold, unclip_ratio=p.unclip_ratio)
        provenance = self.provenance(model, "ocr_with_region", score="model", min_score=p.min_score,
                                     box_threshold=p.box_threshold)
        for item, lines in zip(items, found):
            order = [i for line in reading_order(quad_bounds(lines.quads)) for i in line]
            quads = lines.quads[order].reshape(-1, 8).astype(np.float32)
            texts = np.array([lines.texts[i] for i in order], dtype=object)
            scores = np.asarray(lines.scores, dtype=np.float32)[order]
            det = sv.Detections(
                xyxy=clip_boxes(quad_bounds(lines.quads[order]), item.labels.width, item.labels.height),
                confidence=scores,
                data={
                    "class_name": np.full(len(order), p.label, dtype=object),
                    "phrase": np.full(len(order), "", dtype=object),
                    "text": texts,
                    "quad": quads,
                },
            )
            item.labels.add(det, stage=self.name, provenance=provenance)
            if p.page_text and len(order):
                item.labels.texts.append(
                    Text(kind="ocr", text=page_text(quad_bounds(lines.quads), lines.texts),
                         score=char_weighted_mean(lines.texts, lines.scores), stage=self.name)
                )
        return items


def reading_order(xyxy: np.ndarray, overlap: float = 0.5) -> list[list[int]]:
    """Boxes grouped into lines, top to bottom, each left to right (indices into ``xyxy``).

    A box joins the line above when they overlap vertically by more than ``overlap`` of the lower of the two
    heights — so side-by-side words share a line and stacked lines do not, whatever the text size.

    >>> reading_order(np.array([[50, 0, 90, 10], [0, 1, 40, 11], [0, 20, 40, 30]], dtype=np.float32))
    [[1, 0], [2]]
    """
    xyxy = np.asarray(xyxy, dtype=np.float32).reshape(-1, 4)
    lines: list[list[int]] = []
    top = bottom = 0.0
    for i in np.argsort((xyxy[:, 1] + xyxy[:, 3]) / 2, kind="stable"):
        y1, y2 = float(xyxy[i, 1]), float(xyxy[i, 3])
        if lines and min(bottom, y2) - max(top, y1) > overlap * min(bottom - top, y2 - y1):
            lines[-1].append(int(i))
            top, bottom = min(top, y1), max(bottom, y2)
        else:
            lines.append([int(i)])
            top, bottom = y1, y2
    return [sorted(line, key=lambda k: float(xyxy[k, 0])) for line in lines]


def page_text(xyxy: np.ndarray, texts: list[str]) -> str:
    """The lines' text in reading order: words of a line joined by spaces, lines by newlines."""
    return "\n".join(" ".join(texts[i] for i in line) for line in reading_order(xyxy))


def char_weighted_mean(texts: list[str], scores: np.ndarray) -> float | None:
    """Mean of line scores weighted by their length: the mean per-character confidence of the page."""
    weights = np.array([max(len(t), 1) for t in texts], dtype=np.float64)
    if not len(weights):
        return None
    return float(np.average(np.asarray(scores, dtype=np.float64), weights=weights))
