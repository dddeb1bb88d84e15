"""Decisions from a box's shape and place in the image: degenerate, too small or large, stretched, on the border."""

from __future__ import annotations

from typing import ClassVar, Iterable

import numpy as np
from pydantic import Field, model_validator

from ..validation import invalid
from .base import Action, BoxFilter, FilterParams, PerClassParams, Rows


class DegenerateBoxesParams(FilterParams):
    clip: bool = True  # clip boxes partly outside the image to it; false: they fail with outside_image
    #: 2 px: Ultralytics' box_candidates drops boxes 2 px or less wide or tall (wh_thr=2)
    min_size: float = Field(default=2.0, ge=0.0)


class DegenerateBoxes(BoxFilter):
    """Boxes that are not boxes: non-finite or inverted (``degenerate``), wholly outside the image
    (``outside_image``), or at most ``min_size`` px wide or tall once clipped (``degenerate``).

    Boxes partly outside are clipped to the image (``clip: true``, the box stays kept) or fail as ``outside_image``.
    """

    reasons: ClassVar[tuple[str, ...]] = ('degenerate', 'outside_image')

    Params = DegenerateBoxesParams
    params: DegenerateBoxesParams
    moves_boxes = True

    def decide(self, rows: Rows) -> Iterable[tuple[np.ndarray, str]]:
        xyxy = rows.xyxy.astype(np.float64)
        x1, y1, x2, y2 = xyxy.T
        bad = ~np.isfinite(xyxy).all(axis=1) | (x2 < x1) | (y2 < y1)
        yield bad, "degenerate"
        outside = (x2 <= 0) | (y2 <= 0) | (x1 >= rows.width) | (y1 >= rows.height)
        yield outside & ~bad, "outside_image"
        partly = ~bad & ~outside & ((x1 < 0) | (y1 < 0) | (x2 > rows.width) | (y2 > rows.height))
        if self.params.clip:
            move = partly & rows.active
            if move.any():
                limit = np.stack([rows.width, rows.height, rows.width, rows.height], axis=1)[move]
                rows.xyxy = rows.xyxy.copy()
                rows.xyxy[move] = np.clip(xyxy[move], 0.0, limit).astype(np.float32)
        else:
            yield partly, "outside_image"
        w, h = (rows.xyxy[:, 2] - rows.xyxy[:, 0]), (rows.xyxy[:, 3] - rows.xyxy[:, 1])
        yield (w <= self.params.min_size) | (h <= self.params.min_size), "degenerate"


class BoxAreaParams(PerClassParams):
    #: 100 px²: SAM's data engine removes mask regions under 100 px (Kirillov et al. 2023); here, whole boxes
    min_pixels: float = Field(default=100.0, ge=0.0)
    min_area: float = Field(default=0.0, ge=0.0, le=1.0)  # fraction of the image; 0: off
    #: 0.95: SAM's data engine drops masks covering 95 % of the image or more: near-whole-image boxes
    max_area: float = Field(default=0.95, gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _ordered(self) -> "BoxAreaParams":
        if self.min_area >= self.max_area:
            raise invalid(f"min_area ({self.min_area}) must be below max_area ({self.max_area})")
        return self


class BoxArea(BoxFilter):
    """Boxes smaller than ``min_pixels`` px² or ``min_area`` of the image (``too_small``), or covering
    ``max_area`` of it or more (``too_large``: near-whole-image boxes, the classic "the whole picture" answer)."""

    reasons: ClassVar[tuple[str, ...]] = ('too_small', 'too_large')

    Params = BoxAreaParams
    params: BoxAreaParams
    class_keys = ("min_area", "max_area", "min_pixels")

    def decide(self, rows: Rows) -> Iterable[tuple[np.ndarray, str]]:
        pixels = _area(rows.xyxy)
        frac = pixels / (rows.width * rows.height)
        names = rows.class_name
        small = (pixels < self.values("min_pixels", names)) | (frac < self.values("min_area", names))
        yield small, "too_small"
        yield frac >= self.values("max_area", names), "too_large"


class AspectRatioParams(PerClassParams):
    #: width / height bounds; 1:100 both ways is Ultralytics' box_candidates bound (ar_thr=100)
    min_ratio: float = Field(default=0.01, gt=0.0)
    max_ratio: float = Field(default=100.0, gt=0.0)

    @model_validator(mode="after")
    def _ordered(self) -> "AspectRatioParams":
        if self.min_ratio > self.max_ratio:
            raise invalid(f"min_ratio ({self.min_ratio}) must not exceed max_ratio ({self.max_ratio})")
        return self


class AspectRatio(BoxFilter):
    """Boxes whose width / height lies outside ``[min_ratio, max_ratio]`` (``bad_aspect``); zero-size boxes are
    left to ``degenerate_boxes``. Per class, e.g. ``per_class: {person: {max_ratio: 1.5}}`` for upright people."""

    reasons: ClassVar[tuple[str, ...]] = ('bad_aspect',)

    Params = AspectRatioParams
    params: AspectRatioParams
    class_keys = ("max_ratio", "min_ratio")

    def decide(self, rows: Rows) -> Iterable[tuple[np.ndarray, str]]:
        w = (rows.xyxy[:, 2] - rows.xyxy[:, 0]).astype(np.float64)
        h = (rows.xyxy[:, 3] - rows.xyxy[:, 1]).astype(np.float64)
        sized = (w > 0) & (h > 0)
        ratio = np.divide(w, h, out=np.ones_like(w), where=sized)
        names = rows.class_name
        outside = (ratio < self.values("min_ratio", names)) | (ratio > self.values("max_ratio", names))
        yield sized & outside, "bad_aspect"


class BorderParams(PerClassParams):
    action: Action = "flag"
    #: fraction of the image side; Florence-2 quantizes to 1/1000 of a side, so its edge boxes end 0.0005 short
    margin: float = Field(default=0.002, ge=0.0, le=0.5)


class Border(BoxFilter):
    """Flag boxes touching the image border (``touches_border``): the object is probably cut off, and its box
    is the visible part only. Flagged, not dropped: truncated objects are real; a reviewer decides."""

    reasons: ClassVar[tuple[str, ...]] = ('touches_border',)

    Params = BorderParams
    params: BorderParams
    class_keys = ("margin",)

    def decide(self, rows: Rows) -> Iterable[tuple[np.ndarray, str]]:
        m = self.values("margin", rows.class_name)
        x1, y1, x2, y2 = rows.xyxy.astype(np.float64).T
        mx, my = m * rows.width, m * rows.height
        yield (x1 <= mx) | (y1 <= my) | (x2 >= rows.width - mx) | (y2 >= rows.height - my), "touches_border"


def _area(xyxy: np.ndarray) -> np.ndarray:
    wh = np.clip(xyxy[:, 2:4].astype(np.float64) - xyxy[:, 0:2], 0.0, None)
    return wh[:, 0] * wh[:, 1]
