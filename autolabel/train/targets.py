"""What the model is asked and what it should answer, per task: the training pairs, as Florence-2 writes them.

Coordinates are quantized by transformers' own ``Florence2PostProcessor.quantize`` (``floor(x / (W / 1000))``,
clamped to 0..999): the same bins the processor's parser dequantizes, so ``<loc_1000>`` can never appear, and a
region prompt here is the one the ``florence2`` stage asks. Boxes are written in one fixed order — raster order
of their bins (top edge, then left, bottom, right, then class) — so that two copies of a dataset, in whatever
order their files list the boxes, teach the same sequences.

The answers (Florence-2's formats, which the processor's parser reads back):

* ``od`` — ``<OD>``: ``class<loc_x1><loc_y1><loc_x2><loc_y2>`` per box (the class repeated for each).
* ``ovd`` — ``<OPEN_VOCABULARY_DETECTION>`` + a class name, once per class of the ontology and image: that class's
  boxes as ``od`` writes them, or an empty answer when the image has none (so the model learns to say nothing).
* ``grounding`` — ``<CAPTION_TO_PHRASE_GROUNDING>`` + the class names joined with ``". "`` (what the stage asks
  when it grounds the ontology's prompts): each class present, once, then all its boxes.
* ``region_category`` — ``<REGION_TO_CATEGORY>`` + a box's four location tokens: the class name.
* ``ocr_regions`` — ``<OCR_WITH_REGION>``: ``text<loc_x1><loc_y1>…<loc_y4>`` per line, its quad (or its box's
  corners, clockwise from the top left) quantized as points.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..models.florence2 import TASKS

if TYPE_CHECKING:
    from .data import Example

#: the tasks ``autolabel train`` teaches (each has ground truth in the formats ``eval --gt`` reads)
TRAIN_TASKS = ("od", "ovd", "grounding", "region_category", "ocr_regions")
#: the separator the stage puts between prompts when it grounds the ontology (``florence2`` stage, task grounding)
CAPTION_SEPARATOR = ". "


@dataclass(frozen=True)
class Pair:
    """One training pair: the prompt about image ``example`` and the answer the model should give."""

    example: int  # index of the image in the dataset
    prompt: str  # task token + text input, as the ``florence2`` stage asks it
    answer: str  # the answer, in Florence-2's format (no <s> / </s>)
    box: int = -1  # region tasks: the box the prompt names


def loc(bins: Any) -> str:
    """Location tokens for integer bins.

    >>> loc([0, 12, 999])
    '<loc_0><loc_12><loc_999>'
    """
    return "".join(f"<loc_{int(b)}>" for b in bins)


def quantize(post: Any, xyxy: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(N, 4) pixel boxes (or (N, 2) points) of an image of ``size`` = (W, H) as transformers quantizes them."""
    import torch

    values = np.asarray(xyxy, dtype=np.float32)
    if not len(values):
        return np.zeros((0, values.shape[-1] if values.ndim == 2 else 4), dtype=np.int64)
    return post.quantize(torch.as_tensor(values), size).numpy().astype(np.int64)


def raster_order(bins: np.ndarray, classes: list[str]) -> np.ndarray:
    """Indices of boxes in raster order of their bins (top, left, bottom, right), then class name.

    >>> raster_order(np.array([[5, 9, 8, 12], [1, 9, 3, 12], [0, 2, 4, 4]]), ["b", "a", "c"]).tolist()
    [2, 1, 0]
    """
    if not len(bins):
        return np.zeros(0, dtype=np.int64)
    names = np.unique(np.array(classes, dtype=str), return_inverse=True)[1].reshape(-1)  # class names as ranks
    keys = (names, bins[:, 2], bins[:, 3], bins[:, 0], bins[:, 1])  # np.lexsort: the last key is the primary one
    return np.lexsort(keys)


def quad_points(example: Example) -> np.ndarray:
    """(N, 8) quads: the example's own, else each box's corners clockwise from the top left."""
    if example.quads is not None:
        return np.asarray(example.quads, dtype=np.float64).reshape(-1, 8)
    x1, y1, x2, y2 = (example.xyxy[:, k] for k in range(4))
    return np.stack([x1, y1, x2, y1, x2, y2, x1, y2], axis=1)


def pairs_for(task: str, index: int, example: Example, classes: list[str], post: Any) -> list[Pair]:
    """The training pairs of one image for ``task`` (see the module's docstring for each format)."""
    token = TASKS[task]
    size = (example.width, example.height)
    bins = quantize(post, example.xyxy, size)
    order = raster_order(bins, example.classes)
    if task == "od":
        return [Pair(index, token, "".join(example.classes[i] + loc(bins[i]) for i in order))]
    if task == "ovd":
        return [Pair(index, token + name, "".join(name + loc(bins[i]) for i in order if example.classes[i] == name))
                for name in classes]
    if task == "grounding":
        answer = "".join(name + "".join(loc(bins[i]) for i in order if example.classes[i] == name)
                         for name in classes if name in example.classes)
        return [Pair(index, token + CAPTION_SEPARATOR.join(classes), answer)]
    if task == "region_category":
        return [Pair(index, token + loc(bins[i]), example.classes[i], box=int(i)) for i in order]
    if task == "ocr_regions":
        quads = quad_points(example)
        points = quantize(post, quads.reshape(-1, 2), size).reshape(-1, 8)
        line_order = raster_order(bins, example.texts)
        return [Pair(index, token, "".join(example.texts[i] + loc(points[i]) for i in line_order))]
    raise ValueError(f"task {task!r}: autolabel train teaches {', '.join(TRAIN_TASKS)}")


def dequantize(post: Any, bins: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bins as transformers' parser turns them into pixels (a bin's centre, truncated to whole pixels)."""
    import torch

    bins = np.asarray(bins, dtype=np.int64)
    if not bins.size:
        return np.zeros(bins.shape, dtype=np.int64)
    if bins.shape[-1] == 8:
        return post.dequantize(torch.as_tensor(bins.reshape(-1, 2)), size).numpy().reshape(-1, 8).astype(np.int64)
    return post.dequantize(torch.as_tensor(bins), size).numpy().astype(np.int64)


def expected(task: str, example: Example, pair: Pair, post: Any) -> tuple[list[str], np.ndarray]:
    """What parsing ``pair.answer`` must give: (labels, pixel coordinates) — boxes (N, 4), OCR quads (N, 8) — each
    coordinate transformers' dequantization of the bin it was written as.

    Written from the example, not from the answer, so that :func:`round_trips` checks the writing too.
    """
    size = (example.width, example.height)
    bins = quantize(post, example.xyxy, size)
    order = raster_order(bins, example.classes)
    if task == "od":
        return [example.classes[i] for i in order], dequantize(post, bins[order], size)
    if task == "ovd":
        name = pair.prompt[len(TASKS[task]):]
        keep = [i for i in order if example.classes[i] == name]
        return [name] * len(keep), dequantize(post, bins[keep].reshape(-1, 4), size)
    if task == "grounding":
        names = pair.prompt[len(TASKS[task]):].split(CAPTION_SEPARATOR)
        keep = [i for name in names for i in order if example.classes[i] == name]
        return [example.classes[i] for i in keep], dequantize(post, bins[keep].reshape(-1, 4), size)
    if task == "region_category":
        return [example.classes[pair.box]], np.zeros((0, 4), dtype=np.int64)
    points = quantize(post, quad_points(example).reshape(-1, 2), size).reshape(-1, 8)
    line_order = raster_order(bins, example.texts)
    return [example.texts[i] for i in line_order], dequantize(post, points[line_order], size)


def parsed(processor: Any, task: str, answer: str, size: tuple[int, int]) -> tuple[list[str], np.ndarray]:
    """An answer through the processor's own parser: (labels, pixel coordinates as it returns them)."""
    token = TASKS[task]
    result = processor.post_process_generation(answer, task=token, image_size=size)[token]
    if task == "region_category":
        return [str(result).strip()], np.zeros((0, 4), dtype=np.int64)
    if task == "ocr_regions":
        return [str(t) for t in result["labels"]], np.asarray(result["quad_boxes"], dtype=np.int64).reshape(-1, 8)
    labels = result.get("bboxes_labels", result.get("labels", []))
    return [str(label) for label in labels], np.asarray(result.get("bboxes", []), dtype=np.int64).reshape(-1, 4)


def round_trips(processor: Any, task: str, example: Example, pair: Pair) -> bool:
    """Whether transformers' parser reads ``pair.answer`` back as exactly the labels and boxes it was written from.

    Exactly: the same labels in the same order, each coordinate the parser's dequantization of the bin written
    (which lies within one bin of the ground truth, less the parser's truncation to whole pixels). A class name or
    text the parser cannot read back (with ``<`` in it, characters it drops, spaces around it) fails here, before
    any training.
    """
    size = (example.width, example.height)
    want_labels, want = expected(task, example, pair, processor.post_processor)
    got_labels, got = parsed(processor, task, pair.answer, size)
    return got_labels == want_labels and got.shape == want.shape and bool(np.array_equal(got, want))
