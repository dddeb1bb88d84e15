"""Stages used by the core tests, loaded the way users load their own: ``type: plugins:CenterBox``.

They stand in for a model where the test is about the runner, not the model: each emits a box derived from the
image itself (so a wrong size or orientation shows), and can be told to fail or to be slow.
"""

from __future__ import annotations

import os
import time

import numpy as np
import supervision as sv
from pydantic import Field

from autolabel.stage import Item, ModelStageParams, Stage, StageParams


class CenterBoxParams(StageParams):
    label: str
    fail_on: str | None = None  # fail for images whose path contains this
    sleep: float = Field(default=0.0, ge=0.0)  # seconds per batch
    calls_file: str | None = None  # append one line per image seen (to count model calls)


class CenterBox(Stage):
    """One box over the middle half of each image, scored by the image's mean brightness (0..1)."""

    Params = CenterBoxParams

    def __call__(self, items: list[Item]) -> list[Item]:
        if self.params.sleep:
            time.sleep(self.params.sleep)
        for item in items:
            if self.params.fail_on and self.params.fail_on in item.key:
                raise RuntimeError(f"cannot label {os.path.basename(item.key)}")
            w, h = item.image.size
            score = float(np.asarray(item.image, dtype=np.float32).mean() / 255.0)
            det = sv.Detections(
                xyxy=np.array([[w / 4, h / 4, 3 * w / 4, 3 * h / 4]], dtype=np.float32),
                confidence=np.array([score], dtype=np.float32),
                data={"class_name": np.array([self.params.label], dtype=object),
                      "phrase": np.array([self.params.label], dtype=object)},
            )
            item.labels.add(det, stage=self.name, provenance={"model": "center-box", "task": "test"})
        if self.params.calls_file:
            with open(self.params.calls_file, "a") as f:
                f.writelines(f"{item.key}\n" for item in items)
        return items


class ModelCenterBoxParams(CenterBoxParams, ModelStageParams):
    """Names a declared model, to exercise model references (the box itself needs none)."""


class ModelCenterBox(CenterBox):
    """CenterBox that names a model: config validation treats it as a model stage."""

    Params = ModelCenterBoxParams


class BrokenModel:
    """A model type whose weights cannot be found (what a missing checkpoint looks like)."""

    @classmethod
    def load(cls, spec):  # noqa: ANN001, ANN206
        raise OSError(f"no file named model.safetensors in {spec.id}")


class UsesModel(Stage):
    """A stage that loads its model on first call."""

    Params = ModelStageParams

    def __call__(self, items: list[Item]) -> list[Item]:
        self.model  # noqa: B018 — loading is the point
        return items
