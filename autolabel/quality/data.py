"""A run's boxes and the ground truth's, side by side over the images both have, as flat numpy arrays.

Read straight from the store's JSON records (no :class:`~autolabel.labels.Labels`, no mask decoding), so that a
million boxes load in seconds; masks stay COCO RLE, which pycocotools reads as they are. Compact per box: the string
columns point at one shared string per distinct value (a JSON parse makes a new one per box): ~115 bytes a box
held here (tracemalloc, 200k boxes), against ~200 with a string object per box and column.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..labels import delivered
from ..records import Stored
from ..ontology import Ontology
from ..store import Store
from .gt import GroundTruth, GroundTruthError
from .match import ClassMatch, ImageMatch, match_classes, match_images


@dataclass
class Side:
    """Boxes of one side (run or ground truth) over the matched images; row ``i`` lies on image ``image[i]``."""

    image: np.ndarray  # (N,) int32: index into Paired.names
    xyxy: np.ndarray  # (N, 4) float64
    cls: np.ndarray  # (N,) object: run class names (ground truth: mapped to the run's, else its own name)
    score: np.ndarray  # (N,) float64, nan = unknown (ground truth: 1)
    status: np.ndarray  # (N,) object: kept / flagged / dropped (ground truth: kept, or "crowd")
    reason: np.ndarray  # (N,) object
    stage: np.ndarray  # (N,) object: the stage that produced the box
    segmentation: list[Any]  # per row: COCO RLE / polygons, or None

    def __len__(self) -> int:
        return len(self.image)


@dataclass
class Paired:
    names: list[str]  # run rel_path of each matched image
    sizes: np.ndarray  # (M, 2) int: width, height
    run: Side
    gt: Side
    images: ImageMatch
    classes: ClassMatch
    run_images: int
    gt_images: int

    @property
    def evaluated(self) -> list[str]:
        """The run classes the ground truth also has: the ones with AP, precision and recall."""
        return list(self.classes.matched)


def pair(store: Store, ontology: Ontology, gt: GroundTruth) -> Paired:
    """Match images and classes, and gather both sides' boxes over the matched images."""
    classes = match_classes(ontology, gt.classes)
    if not classes.matched:
        raise GroundTruthError(f"--gt {gt.path}: names no class of the run's ontology (ground truth: "
                               f"{', '.join(gt.classes[:10]) or 'none'}; ontology: {', '.join(ontology.classes)})")
    run_rows = [(r["id"], r["rel_path"], r["sha256"]) for r in store.images(labels=False)]
    images = match_images([(rel, sha) for _, rel, sha in run_rows], [(im.name, im.file) for im in gt.images])
    if not images.pairs:
        example = gt.images[0].name if gt.images else "none"
        raise GroundTruthError(f"--gt {gt.path}: shares no image with the run ({len(run_rows)} run images, "
                               f"{len(gt.images)} ground-truth images, e.g. {example!r}; matched by relative path, "
                               "file name and content hash)")
    by_id = {run_rows[i][0]: (k, j) for k, (i, j) in enumerate(images.pairs)}
    names = [""] * len(images.pairs)
    sizes = np.zeros((len(images.pairs), 2), dtype=np.int64)
    run = _Collect()
    for row in store.images():
        hit = by_id.get(row["id"])
        if hit is None:
            continue
        k, _ = hit
        names[k] = row["rel_path"]
        record = row["labels"]  # a done row's record, checked by the store: positive int width and height
        sizes[k] = (record["width"], record["height"])
        run.add_record(k, record)
    truth = _Collect()
    for k, (_, j) in enumerate(images.pairs):
        truth.add_gt(k, gt.images[j], classes.gt_to_run)
    return Paired(names, sizes, run.side(), truth.side(), images, classes, len(run_rows), len(gt.images))


class _Collect:
    def __init__(self) -> None:
        self.image: list[np.ndarray] = []
        self.xyxy: list[np.ndarray] = []
        self.cls: list[list[Any]] = []
        self.score: list[np.ndarray] = []
        self.status: list[list[Any]] = []
        self.reason: list[list[Any]] = []
        self.stage: list[list[Any]] = []
        self.seg: list[Any] = []

    def add_record(self, k: int, record: dict[str, Any]) -> None:
        stored = Stored.of(record)
        n = len(stored)
        if not n:
            return
        self.image.append(np.full(n, k, dtype=np.int32))
        self.xyxy.append(np.asarray(stored.xyxy, dtype=np.float64))  # n >= 1 lists of 4 (records.problem)
        self.score.append(stored.scores())
        self.cls.append(_shared(stored.column("class_name")))
        self.status.append(_shared(stored.column("status")))
        self.reason.append(_shared(stored.column("reason")))
        self.stage.append(_shared(stored.column("stage")))
        masks, has = stored.masks, stored.column("has_mask")
        self.seg.extend(masks[i] if masks is not None and has[i] else None for i in range(n))

    def add_gt(self, k: int, im: Any, gt_to_run: dict[str, str]) -> None:
        n = len(im.classes)
        if not n:
            return
        self.image.append(np.full(n, k, dtype=np.int32))
        self.xyxy.append(im.boxes)
        self.score.append(np.ones(n))
        self.cls.append(_shared([gt_to_run.get(c, c) for c in im.classes]))
        self.status.append(["crowd" if c else "kept" for c in im.crowd])
        self.reason.append([""] * n)
        self.stage.append([""] * n)
        self.seg.extend(im.segmentations)

    def side(self) -> Side:
        def cat(parts: list[Any], dtype: Any) -> np.ndarray:
            if not parts:
                return np.zeros(0, dtype=dtype)
            if dtype is object:
                out = np.empty(sum(len(p) for p in parts), dtype=object)
                out[:] = [v for p in parts for v in p]
                return out
            return np.concatenate(parts).astype(dtype)

        xyxy = np.concatenate(self.xyxy) if self.xyxy else np.zeros((0, 4))  # parts of shape (n, 4)
        return Side(cat(self.image, np.int32), xyxy, cat(self.cls, object), cat(self.score, np.float64),
                    cat(self.status, object), cat(self.reason, object), cat(self.stage, object), self.seg)


def _shared(values: list[Any]) -> list[Any]:
    """The same values, each string replaced by the one interned copy of it (a class, status, reason or stage
    name repeats over a million boxes)."""
    return [sys.intern(v) if type(v) is str else v for v in values]


def operating_point(run: Side, flagged: str) -> np.ndarray:
    """Rows the pipeline kept (flagged ones too, unless ``flagged="exclude"``)."""
    return delivered(run.status, flagged != "exclude")
