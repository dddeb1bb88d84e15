"""Helpers for the filter tests: hand-made Labels and a filter stage built the way a pipeline builds it."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import supervision as sv

from autolabel.labels import Labels, Text
from autolabel.ontology import Ontology
from autolabel.registry import STAGE_GROUP, resolve
from autolabel.stage import Item, Stage, StageContext

ONTOLOGY = ("person", "car", "dog")


def make_labels(
    boxes: Sequence[Sequence[float]] = (),
    scores: Sequence[float] | None = None,
    classes: Sequence[str] | None = None,
    size: tuple[int, int] = (100, 100),
    stage: str = "det",
    task: str = "od",
    masks: np.ndarray | None = None,
    texts: Sequence[Text] = (),
    **columns: Any,
) -> Labels:
    """One image (``size`` = width, height) with the given boxes added by one stage."""
    w, h = size
    labels = Labels(width=w, height=h, texts=list(texts))
    n = len(boxes)
    data = {"class_name": np.array(list(classes) if classes is not None else ["person"] * n, dtype=object)}
    data.update({k: np.asarray(v) if not isinstance(v, np.ndarray) else v for k, v in columns.items()})
    det = sv.Detections(
        xyxy=np.array(boxes, dtype=np.float32).reshape(-1, 4),
        confidence=None if scores is None else np.array(scores, dtype=np.float32),
        mask=masks,
        data=data,
    )
    labels.add(det, stage=stage, provenance={"task": task})
    return labels


def build(stage_type: str, ontology: Sequence[str] = ONTOLOGY, **params: Any) -> Stage:
    cls = resolve(STAGE_GROUP, stage_type)
    context = StageContext(ontology=Ontology.from_config(list(ontology)))
    return cls(stage_type, cls.Params.model_validate({"type": stage_type, **params}), context)


def run(stage_type: str, *labels: Labels, **params: Any) -> list[Labels]:
    """Run a filter over one batch of images; return their labels. Every reason code it gave must be one its class
    declares (``reasons``: what the docs' table and eval read)."""
    stage = build(stage_type, **params)
    before = {code for lab in labels for code in given(lab)}
    items = [Item(image=None, labels=lab) for lab in labels]  # type: ignore[arg-type]  # filters never look
    out = [item.labels for item in stage(items)]
    new = {code for lab in out for code in given(lab)} - before
    assert new <= set(type(stage).reasons), f"{stage_type} gave {sorted(new)}, declares {type(stage).reasons}"
    return out


def given(labels: Labels) -> set[str]:
    """The reason codes on an image's boxes and texts."""
    return {r for r in reasons(labels) if r} | {t.reason for t in labels.texts if t.reason}


def status(labels: Labels) -> list[str]:
    return list(labels.detections.data.get("status", []))  # an image with no boxes may lack the columns


def reasons(labels: Labels) -> list[str]:
    return list(labels.detections.data.get("reason", []))
