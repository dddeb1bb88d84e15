"""The simplest filter: a confidence floor, optionally per class."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from ..labels import DROPPED, KEPT
from ..stage import Item, Stage, StageContext, StageParams, check_classes


class ScoreThresholdParams(StageParams):
    threshold: float = Field(default=0.3, ge=0.0, le=1.0)
    per_class: dict[str, float] = Field(default_factory=dict)  # class name → its own threshold


class ScoreThreshold(Stage):
    """Drop boxes whose confidence is below the threshold (reason ``low_score``); unknown confidence passes."""

    Params = ScoreThresholdParams
    params: ScoreThresholdParams

    def __init__(self, name: str, params: ScoreThresholdParams, context: StageContext):
        super().__init__(name, params, context)
        check_classes(params.per_class, context.ontology, "per_class")

    def __call__(self, items: list[Item]) -> list[Item]:
        for item in items:
            det = item.labels.detections
            names = det.data["class_name"]
            floor = np.array([self.params.per_class.get(n, self.params.threshold) for n in names], dtype=np.float32)
            low = (det.confidence < floor) & (det.data["status"] == KEPT)  # NaN compares False: unknown passes
            det.data["status"][low] = DROPPED
            det.data["reason"][low] = "low_score"
        return items
