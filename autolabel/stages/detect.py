"""Stage ``detect``: open-vocabulary detection (Grounding DINO, MM-Grounding-DINO, OWLv2) from the ontology's prompts.

One stage type for every text-prompted detector: they take the same inputs (images, prompts, thresholds) and
give the same output (scored boxes, each naming a prompt), so swapping the detector is one line of the pipeline
file (the model's ``type``). The model type decides the rest: default thresholds, how prompts are batched.

Every prompt goes to the model in one forward pass per batch of images. Each box's prompt is mapped to its
ontology class (case- and plural-insensitively, through the ontology's prompts). Prompts that map to no class —
extra ``prompts:`` such as "dog" beside an ontology of "cat", which stop dogs being labelled cats — give rows that
are dropped (reason ``unmapped_phrase``; kept in the store for re-filtering) or, with ``unmapped: keep``, kept
with an empty class.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import supervision as sv
from pydantic import Field

from ..errors import ConfigError
from ..labels import DROPPED, KEPT
from ..models.contract import Detector, declared
from ..stage import Item, ModelStage, ModelStageParams, StageContext

UNMAPPED = "unmapped_phrase"


class DetectParams(ModelStageParams):
    #: the text the detector looks for; default: every prompt of the ontology
    prompts: list[str] | None = None
    #: minimum box score; default per model type (Grounding DINO 0.35, OWLv2 0.1)
    box_threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    #: Grounding DINO only: minimum score of the box's prompt tokens (default 0.25)
    text_threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    #: boxes whose prompt maps to no ontology class: dropped (reason unmapped_phrase) or kept without a class
    unmapped: Literal["drop", "keep"] = "drop"


class Detect(ModelStage):
    """Scored boxes for the ontology's prompts, all prompts in one pass per batch."""

    Params = DetectParams
    params: DetectParams
    model_types = ("grounding_dino", "owlv2")
    model_protocol = Detector

    def __init__(self, name: str, params: DetectParams, context: StageContext):
        super().__init__(name, params, context)
        if params.prompts is not None:
            bad = [p for p in params.prompts if not isinstance(p, str) or not p.strip()]
            if bad or not params.prompts:
                raise ConfigError(
                    "prompts: must be a non-empty list of non-empty strings (or left out: the ontology's)"
                )
            prompts = list(dict.fromkeys(" ".join(p.split()) for p in params.prompts))
        else:
            prompts = context.ontology.all_prompts()
            if not prompts:
                raise ConfigError("prompts: none to detect (the ontology is empty: add classes, or set prompts:)")
        self.prompts: list[str] = prompts
        self.classes = np.array([context.ontology.class_of(p) or "" for p in prompts], dtype=object)
        if params.unmapped == "drop" and not any(self.classes):
            known = ", ".join(context.ontology.classes) or "the ontology is empty"
            raise ConfigError(
                f"prompts: none maps to an ontology class (known: {known}); every box would be dropped "
                f"(fix the prompts, or set unmapped: keep)"
            )
        model_cls = self.model_class()
        one_score = model_cls is not None and declared(model_cls, "default_text_threshold") is None
        if params.text_threshold is not None and one_score:
            raise ConfigError(
                f"text_threshold: model {params.model!r} ({self.model_type}) has one score per box; "
                f"only Grounding DINO models take a text_threshold (remove it, or use box_threshold)"
            )

    def __call__(self, items: list[Item]) -> list[Item]:
        model: Detector = self.model
        box_threshold = self.params.box_threshold
        if box_threshold is None:
            box_threshold = declared(model, "default_box_threshold")
        text_threshold = self.params.text_threshold
        if text_threshold is None:
            text_threshold = declared(model, "default_text_threshold")
        found = model.detect([item.image for item in items], self.prompts, box_threshold, text_threshold)
        provenance = self.provenance(
            model, "open_vocabulary_detection", prompts=list(self.prompts), score="model",
            box_threshold=box_threshold, text_threshold=text_threshold, unmapped=self.params.unmapped,
        )
        for item, boxes in zip(items, found):
            item.labels.add(self.detections(boxes), stage=self.name, provenance=provenance)
        return items

    def detections(self, boxes: Any) -> sv.Detections:
        """A model's boxes as rows: class from the prompt, unmapped ones dropped or kept per ``unmapped``."""
        labels = np.asarray(boxes.labels, dtype=np.int64)
        classes = self.classes[labels] if len(labels) else np.zeros(0, dtype=object)
        phrases = np.array([self.prompts[i] for i in labels], dtype=object)
        unmapped = classes == ""
        status = np.where(unmapped & (self.params.unmapped == "drop"), DROPPED, KEPT).astype(object)
        reason = np.where(status == DROPPED, UNMAPPED, "").astype(object)
        return sv.Detections(
            xyxy=np.asarray(boxes.xyxy, dtype=np.float32).reshape(-1, 4),
            confidence=np.asarray(boxes.scores, dtype=np.float32),
            data={"class_name": classes.astype(object), "phrase": phrases, "status": status, "reason": reason},
        )
