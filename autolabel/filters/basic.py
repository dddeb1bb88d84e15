"""Decisions from a box's score and class alone: a confidence floor, the ontology, OWL-ST's image rule, a cap.

Unknown confidences (``nan``) pass every score check: a filter cannot judge what a model did not say.
"""

from __future__ import annotations

from typing import ClassVar, Iterable

import numpy as np
from pydantic import Field, model_validator

from ..stage import StageContext, check_classes
from ..validation import invalid
from .base import BoxFilter, FilterParams, PerClassParams, Rows


class ScoreThresholdParams(PerClassParams):
    #: 0.3: OWL-ST's "confident box" score (Minderer et al. 2023); Grounding DINO's demo uses 0.35 (box threshold)
    threshold: float = Field(default=0.3, ge=0.0, le=1.0)


class ScoreThreshold(BoxFilter):
    """Drop boxes whose confidence is below the threshold (reason ``low_score``); unknown confidence passes."""

    reasons: ClassVar[tuple[str, ...]] = ('low_score',)

    Params = ScoreThresholdParams
    params: ScoreThresholdParams
    class_keys = ("threshold",)

    def decide(self, rows: Rows) -> Iterable[tuple[np.ndarray, str]]:
        yield rows.confidence < self.values("threshold", rows.class_name), "low_score"  # nan < x is False


class KnownClassesParams(FilterParams):
    classes: list[str] = Field(default_factory=list)  # keep only these ontology classes; empty: every class


class KnownClasses(BoxFilter):
    """Drop boxes whose phrase maps to no ontology class (``unknown_class``): the detector named something else.

    With ``classes``, boxes of other ontology classes are dropped too (``excluded_class``).
    """

    reasons: ClassVar[tuple[str, ...]] = ('unknown_class', 'excluded_class')

    Params = KnownClassesParams
    params: KnownClassesParams

    def __init__(self, name: str, params: KnownClassesParams, context: StageContext):
        super().__init__(name, params, context)
        check_classes(params.classes, context.ontology, "classes")

    def decide(self, rows: Rows) -> Iterable[tuple[np.ndarray, str]]:
        known = _member(rows.class_name, set(self.context.ontology.classes))
        yield ~known, "unknown_class"
        if self.params.classes:
            yield known & ~_member(rows.class_name, set(self.params.classes)), "excluded_class"


class ConfidentImageParams(FilterParams):
    #: OWL-ST (Minderer et al. 2023): keep pseudo-boxes scoring > 0.1 only in images with one box > 0.3
    low: float = Field(default=0.1, ge=0.0, le=1.0)
    high: float = Field(default=0.3, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _ordered(self) -> "ConfidentImageParams":
        if self.low > self.high:
            raise invalid(f"low ({self.low}) must not exceed high ({self.high})")
        return self


class ConfidentImage(BoxFilter):
    """OWL-ST's image-level rule: weak boxes are kept only where the image has a confident one.

    Boxes scoring at most ``low`` fail with ``low_score``; in an image with no box above ``high``, every scored box
    fails with ``no_confident_box``. Boxes of unknown score pass and do not count as confident.
    """

    reasons: ClassVar[tuple[str, ...]] = ('low_score', 'no_confident_box')

    Params = ConfidentImageParams
    params: ConfidentImageParams

    def decide(self, rows: Rows) -> Iterable[tuple[np.ndarray, str]]:
        yield rows.confidence <= self.params.low, "low_score"
        confident = np.zeros(len(rows.labels), dtype=bool)
        confident[rows.image[rows.active & (rows.confidence > self.params.high)]] = True
        yield ~confident[rows.image] & np.isfinite(rows.confidence), "no_confident_box"


class MaxPerImageParams(PerClassParams):
    #: 100: COCO's detection evaluation keeps the top 100 boxes per image (maxDets)
    max_boxes: int = Field(default=100, ge=0)


class MaxPerImage(BoxFilter):
    """Keep the ``max_boxes`` best-scoring boxes of each image (``over_cap``); ``per_class`` caps a class's count.

    Boxes of unknown score rank last; ties keep the earlier box.
    """

    reasons: ClassVar[tuple[str, ...]] = ('over_cap',)

    Params = MaxPerImageParams
    params: MaxPerImageParams
    class_keys = ("max_boxes",)

    def decide(self, rows: Rows) -> Iterable[tuple[np.ndarray, str]]:
        active = rows.active
        if not self.class_params and np.bincount(rows.image[active], minlength=1).max() <= self.params.max_boxes:
            return  # no image over the cap: nothing to rank
        score = np.where(np.isnan(rows.confidence), -np.inf, rows.confidence)
        group = np.where(active, rows.image, -1)  # dropped rows rank in a group of their own
        yield _rank(group, score) >= self.params.max_boxes, "over_cap"
        if self.class_params:
            _, cls = np.unique(rows.class_name.astype(str), return_inverse=True)
            rank = _rank(group * (cls.max() + 1) + cls, score)
            yield rank >= self.values("max_boxes", rows.class_name), "over_cap"


def _member(values: np.ndarray, allowed: set[str]) -> np.ndarray:
    """``np.isin`` for a few strings, without sorting object arrays."""
    return np.fromiter((v in allowed for v in values), dtype=bool, count=len(values))


def _rank(group: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Each row's 0-based rank by descending score within its group (stable: ties keep row order)."""
    n = len(group)
    order = np.lexsort((np.arange(n), -score, group))
    sorted_group = group[order]
    starts = np.flatnonzero(np.concatenate(([True], sorted_group[1:] != sorted_group[:-1])))
    first = np.repeat(starts, np.diff(np.append(starts, n)))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - first
    return rank
