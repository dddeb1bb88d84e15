"""What model adapters return to stages: plain numpy, in absolute pixels of the image they were given.

Adapters (Grounding DINO, OWLv2, SAM, SAM2, RapidOCR, or a third party's) return these; stages turn them into
labels: boxes, masks and text lines; a Florence-2 answer with the tokens that wrote it (:class:`Answer`); a frame's
tracked objects (:class:`Masklets`). The model contract (:mod:`.contract`) names them, so they live below every
adapter. Keeping this boundary framework-free lets a plugin implement ``detect`` / ``segment`` / ``read`` without
knowing how labels are stored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .florence2_scores import Located, ScoreMethod, geometric_mean, instance_score


@dataclass
class Boxes:
    """Scored boxes of one image: ``xyxy`` (N, 4) float32 pixels, ``scores`` (N,), ``labels`` (N,) prompt indices."""

    xyxy: np.ndarray
    scores: np.ndarray
    labels: np.ndarray

    @classmethod
    def empty(cls) -> "Boxes":
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.xyxy)

    def __getitem__(self, index: np.ndarray | slice) -> "Boxes":
        return Boxes(self.xyxy[index], self.scores[index], self.labels[index])

    @classmethod
    def concat(cls, parts: list["Boxes"]) -> "Boxes":
        if not parts:
            return cls.empty()
        return cls(np.concatenate([p.xyxy for p in parts]), np.concatenate([p.scores for p in parts]),
                   np.concatenate([p.labels for p in parts]))

    def with_area(self) -> "Boxes":
        """Only the boxes with a positive width and height (clipping can flatten a box predicted off the image)."""
        return self[(self.xyxy[:, 2] > self.xyxy[:, 0]) & (self.xyxy[:, 3] > self.xyxy[:, 1])]


@dataclass
class Masks:
    """Masks of one image, one per prompting box, in the order of the boxes.

    ``masks`` (N, H, W) bool at the image's size; ``predicted_iou`` (N,) the model's own estimate of the mask's IoU;
    ``stability_score`` (N,) SAM's stability: IoU of the masks thresholded at logit +1 and -1.
    """

    masks: np.ndarray
    predicted_iou: np.ndarray
    stability_score: np.ndarray


@dataclass
class TextLines:
    """Recognized text lines of one image: ``quads`` (N, 4, 2) float32 corner points (clockwise from top-left),
    ``texts`` the strings, ``scores`` (N,) the recognizer's confidence."""

    quads: np.ndarray = field(default_factory=lambda: np.zeros((0, 4, 2), np.float32))
    texts: list[str] = field(default_factory=list)
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))

    def __len__(self) -> int:
        return len(self.texts)


def clip_boxes(xyxy: np.ndarray, width: int, height: int) -> np.ndarray:
    """Boxes clipped to the image (models may predict a little past its edges), float32 (N, 4)."""
    import supervision as sv

    return sv.clip_boxes(np.asarray(xyxy, dtype=np.float32).reshape(-1, 4), (width, height))


def quad_bounds(quads: np.ndarray) -> np.ndarray:
    """Quads (``(N, 4, 2)`` corner points, or ``(N, 8)`` ``x1, y1, ..., x4, y4``) → their (N, 4) xyxy bounds.

    >>> quad_bounds(np.array([[10, 20, 50, 22, 48, 40, 9, 38]], np.float32)).tolist()
    [[9.0, 20.0, 50.0, 40.0]]
    """
    points = np.asarray(quads, dtype=np.float32).reshape(-1, 4, 2)
    return np.concatenate([points.min(axis=1), points.max(axis=1)], axis=1)


def cxcywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """Center/size boxes (what DETR-style heads predict) to corners."""
    cx, cy, w, h = np.moveaxis(np.asarray(boxes, dtype=np.float32), -1, 0)
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1)


@dataclass
class Answer:
    """One answer parsed: the processor's result and, per instance of it, the tokens that wrote it."""

    task: str  # the task token, e.g. "<OD>"
    text: str  # the generated text
    result: Any  # ``processor.post_process_generation(...)[task]``: a dict of lists, or a string
    instances: list[Located] | None  # one per result instance, same order; None when they could not be aligned
    logprobs: np.ndarray
    finished: bool

    def scores(self, method: ScoreMethod = "locations") -> np.ndarray:
        """One confidence per instance (NaN for all when the tokens could not be aligned with the result)."""
        if self.instances is None:
            return np.full(_count(self.result), np.nan, dtype=np.float32)
        return np.array([instance_score(i, self.logprobs, method) for i in self.instances], dtype=np.float32)

    def text_score(self) -> float:
        """The answer text's confidence: geometric mean of its text tokens' probabilities (NaN if none)."""
        if not self.instances:
            return float("nan")
        return geometric_mean(self.logprobs, self.instances[0].label)


def _count(result: Any) -> int:
    """How many instances a parsed result holds (1 for text)."""
    if isinstance(result, dict):
        return sum(len(result[key]) for key in ("bboxes", "quad_boxes", "polygons") if key in result)
    return 1


@dataclass
class Masklets:
    """The tracked objects of one frame: ``ids`` (N,) chunk-local object ids, ``scores`` (N,), ``xyxy`` (N, 4) float32
    pixels (the mask's extent, pixel edges: :func:`boxes_of`), ``masks`` (N, H, W) bool at the frame's size,
    ``prompts`` (N,) the index of the prompt that found each (-1 for objects started from a box)."""

    ids: np.ndarray
    scores: np.ndarray
    xyxy: np.ndarray
    masks: np.ndarray
    prompts: np.ndarray

    @classmethod
    def empty(cls, height: int, width: int) -> "Masklets":
        return cls(np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros((0, 4), np.float32),
                   np.zeros((0, height, width), bool), np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.ids)
