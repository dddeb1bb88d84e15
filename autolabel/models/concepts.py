"""Concept segmentation (SAM 3): what a prompt is, what comes back, and post-processing whose memory is bounded.

A *concept prompt* is a noun phrase, exemplar boxes (positive: "more like this"; negative: "not this"), or both;
the model answers with every instance of the concept: box, mask and score. SAM 3 scores each of its queries
(200 in the real model) with ``sigmoid(query logit) × sigmoid(presence logit)``: the query's own match times the
prompt's presence in the image ("is there any of this here at all"); both parts are kept.

transformers' ``post_process_instance_segmentation`` upsamples the sigmoid of *every kept query's* mask to the full
image size at once and returns them as int64: 200 masks of a 4000×3000 image are 19 GB, before the float copies.
:func:`select` decides which queries survive from the scores alone (threshold, then ``max_instances`` per prompt);
:func:`upsample_into` then upsamples only those, :data:`UPSCALE_BYTES` of float32 at a time, straight into one
preallocated bool array per image. The answers are transformers' (tested against it): the same score, the same
strict ``score > threshold``, queries in query order (not sorted), boxes = normalized xyxy × image size
(unclipped), masks = bilinear(sigmoid(logits)) > ``mask_threshold``.

Peak memory of post-processing an image: its kept masks as bool (``kept × H × W`` bytes, which *are* the labels)
plus one chunk of float32 (at most :data:`UPSCALE_BYTES`, or one mask when a single mask is larger).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

if TYPE_CHECKING:
    import torch

#: float32 bytes of upsampled mask probabilities computed at once (one mask at least)
UPSCALE_BYTES = 64 << 20


def _no_boxes() -> np.ndarray:
    return np.zeros((0, 4), np.float32)


@dataclass(frozen=True)
class ConceptPrompt:
    """One concept to find in one image: a noun phrase, exemplar boxes, or both.

    ``boxes`` (K, 4) are xyxy pixels of that image; ``positive`` (K,) says which are examples of the concept
    (True) and which are counter-examples (False). ``text`` None: the boxes alone define the concept.
    """

    text: str | None
    boxes: np.ndarray = field(default_factory=_no_boxes)
    positive: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))

    def __post_init__(self) -> None:
        boxes = np.asarray(self.boxes, np.float32).reshape(-1, 4)
        positive = np.asarray(self.positive, bool).reshape(-1)
        if len(positive) != len(boxes):
            raise ValueError(f"{len(boxes)} exemplar boxes but {len(positive)} positive/negative flags")
        if self.text is None and not len(boxes):
            raise ValueError("a concept prompt needs a text, exemplar boxes, or both")
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "positive", positive)


@dataclass
class Instances:
    """Every instance found in one image, in prompt order, then query order.

    ``xyxy`` (N, 4) float32 pixels of the image as the model predicts them (may reach slightly past its edges);
    ``masks`` (N, H, W) bool; ``scores`` = ``query_scores`` × ``presence_scores`` (N,); ``prompts`` (N,) index the
    image's prompts; ``queries`` (N,) the model's query each came from.
    """

    xyxy: np.ndarray
    masks: np.ndarray
    scores: np.ndarray
    query_scores: np.ndarray
    presence_scores: np.ndarray
    prompts: np.ndarray
    queries: np.ndarray

    @classmethod
    def empty(cls, height: int, width: int) -> "Instances":
        return cls(np.zeros((0, 4), np.float32), np.zeros((0, height, width), bool), *(np.zeros(0, np.float32),) * 3,
                   np.zeros(0, np.int64), np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.scores)


@dataclass
class Selected:
    """The queries of one prompt that :func:`select` keeps, in query order, with their scores."""

    queries: np.ndarray
    scores: np.ndarray
    query_scores: np.ndarray
    presence_score: float


def select(query_scores: np.ndarray, presence_score: float, threshold: float,
           max_instances: int | None = None) -> Selected:
    """The queries of one prompt whose score ``query_scores × presence_score`` is above ``threshold``.

    The inputs are probabilities (the sigmoids of the model's logits, computed by the caller in float32, as
    transformers does). As transformers: strictly above, in query order. ``max_instances``: of those, only the
    best-scoring ones (ties broken by query order), still listed in query order.

    >>> s = select(np.array([0.9, 0.1, 0.6, 0.95]), 0.99, threshold=0.5, max_instances=2)
    >>> s.queries.tolist(), s.scores.astype(float).round(4).tolist()
    ([0, 3], [0.891, 0.9405])
    """
    query_scores = np.asarray(query_scores, np.float32).reshape(-1)
    scores = (query_scores * np.float32(presence_score)).astype(np.float32)
    keep = np.flatnonzero(scores > threshold)
    if max_instances is not None and len(keep) > max_instances:
        best = keep[np.argsort(-scores[keep], kind="stable")[:max_instances]]
        keep = np.sort(best)
    return Selected(keep.astype(np.int64), scores[keep], query_scores[keep], float(presence_score))


def normalized_boxes(xyxy: np.ndarray, width: int, height: int) -> np.ndarray:
    """Exemplar boxes (xyxy pixels) as SAM 3 reads them: center x, center y, width, height, each over the image's
    width or height (what ``Sam3Processor`` makes of ``input_boxes``).

    >>> normalized_boxes(np.array([[100, 150, 500, 450]]), 640, 480).astype(float).round(4).tolist()
    [[0.4688, 0.625, 0.625, 0.625]]
    """
    boxes = np.asarray(xyxy, np.float32).reshape(-1, 4) / np.array([width, height, width, height], np.float32)
    x1, y1, x2, y2 = boxes.T
    return np.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], axis=1).astype(np.float32)


def chunk_rows(height: int, width: int, budget: int = UPSCALE_BYTES) -> int:
    """How many masks of ``height`` × ``width`` float32 fit in ``budget`` bytes (at least one).

    >>> chunk_rows(3000, 4000), chunk_rows(480, 640)
    (1, 54)
    """
    return max(1, budget // (4 * height * width))


def upsample_into(out: np.ndarray, low: "torch.Tensor", mask_threshold: float, budget: int = UPSCALE_BYTES) -> None:
    """``out[k] = bilinear(sigmoid(low[k]), out's size) > mask_threshold`` for every k, a bounded chunk at a time.

    ``low`` (N, h, w) are a model's low-resolution mask logits (any device, any float dtype; computed in float32);
    ``out`` (N, H, W) a bool array. Interpolation is per mask, so chunking changes nothing but the peak memory.
    """
    import torch.nn.functional as F

    n, height, width = out.shape
    if len(low) != n:
        raise ValueError(f"{len(low)} low-resolution masks for {n} outputs")
    step = chunk_rows(height, width, budget)
    for start in range(0, n, step):
        part = low[start : start + step].float().sigmoid()[None]  # (1, k, h, w): one "image" of k channels
        full = F.interpolate(part, size=(height, width), mode="bilinear", align_corners=False)[0]
        out[start : start + step] = (full > mask_threshold).cpu().numpy()
        del full


def assemble(height: int, width: int, parts: list[tuple[int, Selected, "torch.Tensor", "torch.Tensor"]],
             mask_threshold: float) -> Instances:
    """One image's instances from its prompts' kept queries: ``(prompt index, selection, boxes, low-res logits)``
    with boxes (K, 4) normalized xyxy and logits (K, h, w) of the selected queries, in prompt order.

    Boxes are scaled to the image's pixels (not clipped); masks are upsampled into one bool array.
    """
    import torch

    count = sum(len(chosen.queries) for _, chosen, _, _ in parts)
    if not count:
        return Instances.empty(height, width)
    scale = np.array([width, height, width, height], np.float32)
    masks = np.empty((count, height, width), dtype=bool)
    upsample_into(masks, torch.cat([low for _, _, _, low in parts]), mask_threshold)
    return Instances(
        xyxy=np.concatenate([box.float().cpu().numpy().reshape(-1, 4) * scale for _, _, box, _ in parts]),
        masks=masks,
        scores=np.concatenate([c.scores for _, c, _, _ in parts]),
        query_scores=np.concatenate([c.query_scores for _, c, _, _ in parts]),
        presence_scores=np.concatenate([np.full(len(c.queries), c.presence_score, np.float32) for _, c, _, _ in parts]),
        prompts=np.concatenate([np.full(len(c.queries), p, np.int64) for p, c, _, _ in parts]),
        queries=np.concatenate([c.queries for _, c, _, _ in parts]),
    )


def post_process(outputs: Any, target_sizes: Sequence[tuple[int, int]], threshold: float = 0.3,
                 mask_threshold: float = 0.5, max_instances: int | None = None) -> list[Instances]:
    """transformers' ``post_process_instance_segmentation`` for SAM 3 outputs, bounded: one :class:`Instances` per
    row of ``outputs`` (``pred_logits`` (B, Q), ``presence_logits`` (B, 1), ``pred_boxes`` (B, Q, 4) normalized
    xyxy, ``pred_masks`` (B, Q, h, w)), ``target_sizes`` (height, width) per row. Same defaults as transformers'."""
    if len(target_sizes) != len(outputs.pred_logits):
        raise ValueError(f"{len(target_sizes)} target sizes for {len(outputs.pred_logits)} rows")
    query_scores = outputs.pred_logits.float().sigmoid().cpu().numpy()
    presence = outputs.presence_logits.float().sigmoid().reshape(-1).cpu().numpy()
    out = []
    for r, (height, width) in enumerate(target_sizes):
        chosen = select(query_scores[r], presence[r], threshold, max_instances)
        parts = [(0, chosen, *kept(outputs, r, chosen.queries))]
        out.append(assemble(int(height), int(width), parts, mask_threshold))
    return out


def kept(outputs: Any, row: int, queries: np.ndarray) -> tuple["torch.Tensor", "torch.Tensor"]:
    """The boxes and low-resolution mask logits of one row's ``queries`` (copies: the rest can be freed)."""
    import torch

    index = torch.as_tensor(queries, device=outputs.pred_masks.device)
    return outputs.pred_boxes[row, index].float(), outputs.pred_masks[row, index]
