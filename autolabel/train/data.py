"""The training set: reviewed labels from any format ``eval --gt`` reads, or a run's kept labels, checked up front.

Every image is read and decoded once before training starts (threads), so that nothing fails halfway through an
epoch. What cannot be used is counted per kind and reported in one line each (:class:`Tally`), never dropped
silently: images that are missing or unreadable, boxes of classes outside the ontology, boxes outside the image
(clipped to it, or left out when nothing of them is inside), answers longer than the model can write, prompts
longer than its encoder reads, answers its parser would misread. An empty set is an error.

Limits: at most :data:`MAX_IMAGES` images; an image of more than ``max_pixels`` (Pillow's decompression-bomb
threshold by default, as for ``run``) counts as unreadable.

The split into training and validation images is the YOLO export's (:mod:`autolabel.exports.splits`): by content
hash and seed, so identical images fall alike, adding images never moves the others, and the split is the same in
every round of ``refine``.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import AutolabelError, ExitCode
from ..ontology import Ontology

#: most images one training set may hold (the examples are kept in memory: ~1 kB each without pixels)
MAX_IMAGES = 1_000_000
#: Pillow's decompression-bomb threshold, as ``run`` uses by default (``max_image_pixels``)
MAX_PIXELS = 89_478_485
#: threads that read and decode the images while the set is checked
DECODE_WORKERS = 4


class DataError(AutolabelError):
    """The training data cannot be used at all (nothing left to learn, too many images, no such folder)."""

    exit_code = ExitCode.CONFIG


@dataclass
class Example:
    """One image of the training set, with its labels in the displayed frame (EXIF orientation applied)."""

    name: str  # the ground truth's name for it (a path relative to the dataset, or a run's rel_path)
    path: Path  # the image file
    sha256: str
    width: int
    height: int
    xyxy: np.ndarray  # (N, 4) float64 pixels, inside the image
    classes: list[str]  # ontology class per box
    texts: list[str]  # per box: its text (OCR lines), "" when none
    quads: np.ndarray | None = None  # (N, 8) quads of OCR lines, when the ground truth has them
    split: str = "train"  # train | val


#: kind → (what it is, what is done about it, how to fix it): the words of the report's lines
KINDS: dict[str, tuple[str, str, str]] = {
    "missing_image": ("images missing or unreadable", "left out", "check --images and the files"),
    "size_mismatch": ("images whose size differs from the ground truth's", "left out",
                      "fix the ground truth's width/height, or the EXIF orientation of the files"),
    "outside_ontology": ("boxes of classes outside the ontology", "left out",
                         "add the classes with --classes, or map them to classes in the pipeline's ontology"),
    "clipped": ("boxes partly outside the image", "clipped to the image", "fix the ground truth if they are wrong"),
    "outside_image": ("boxes with nothing inside the image (or no area)", "left out", "fix the ground truth"),
    "no_text": ("OCR lines without text", "left out", "give each line its text (COCO attributes.text)"),
    "unparsable": ("answers transformers' parser would read back differently", "left out",
                   "rename the classes or texts it cannot read (no '<', ASCII only)"),
    "too_long": ("answers longer than the model's maximum", "left out",
                 "raise --max-target-tokens up to the model's limit, or split crowded images"),
    "prompt_too_long": ("prompts longer than the model's encoder reads", "left out", "use fewer or shorter classes"),
}


@dataclass
class Tally:
    """What could not be used, counted per kind (:data:`KINDS`), with a few examples of each."""

    counts: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    limits: dict[str, Any] = field(default_factory=dict)  # e.g. the token limit a too_long answer crossed

    def add(self, kind: str, n: int = 1, example: str | None = None) -> None:
        """Count ``n`` of ``kind`` (nothing when ``n`` is 0), keeping up to three examples."""
        if n <= 0:
            return
        self.counts[kind] += n
        if example is not None:
            seen = self.examples.setdefault(kind, [])
            if len(seen) < 3 and example not in seen:
                seen.append(example)

    def lines(self) -> list[str]:
        """One line per kind that occurred: how many, what was done, e.g. which, and the fix."""
        out = []
        for kind, (what, done, fix) in KINDS.items():
            n = self.counts.get(kind, 0)
            if not n:
                continue
            limit = f" ({self.limits[kind]})" if kind in self.limits else ""
            example = f" (e.g. {', '.join(self.examples[kind])})" if self.examples.get(kind) else ""
            out.append(f"{what}{limit}: {n}, {done}{example}; {fix}")
        return out

    def as_dict(self) -> dict[str, Any]:
        return {kind: {"count": n, "examples": self.examples.get(kind, [])} for kind, n in self.counts.items()}


@dataclass
class Dataset:
    """The checked training set: examples, the ontology they are labeled in, where they came from."""

    examples: list[Example]
    ontology: Ontology
    source: dict[str, Any]  # gt path, format, images folder
    tally: Tally

    @property
    def classes(self) -> list[str]:
        return self.ontology.classes

    def split(self, name: str) -> list[int]:
        return [i for i, e in enumerate(self.examples) if e.split == name]


# -- reading -------------------------------------------------------------------------------------------------------
@dataclass
class _Raw:
    """One ground-truth image before its file is read: names, boxes and classes as the ground truth has them."""

    name: str
    candidates: list[Path]  # where its file may be, in order
    width: int  # 0: unknown
    height: int
    xyxy: np.ndarray
    classes: list[str]
    texts: list[str]
    quads: list[Any]  # per box: 8 numbers or None


def load(gt: str | Path, images: str | Path | None = None, classes: list[str] | None = None,
         ontology: Ontology | None = None, max_pixels: int = MAX_PIXELS) -> Dataset:
    """Read ``gt`` (COCO, YOLO, VOC, ``autolabel pull`` output or a run's output folder) into checked examples.

    The ontology: ``classes`` when given, else ``ontology`` (a pipeline's: its prompts map the ground truth's
    names), else every class the ground truth declares. ``images``: the folder the ground truth's names are
    relative to (default: where the ground truth finds them).
    """
    gt = Path(gt)
    raws, declared, fmt = _read_gt(gt, images)
    if len(raws) > MAX_IMAGES:
        raise DataError(f"--gt {gt}: {len(raws):,} images; a training set holds at most {MAX_IMAGES:,} "
                        "(train on a sample)")
    if classes:
        ontology = Ontology.from_config(list(dict.fromkeys(classes)))
    elif ontology is None or not len(ontology):
        ontology = Ontology.from_config(declared)
    tally = Tally()
    examples = [e for e in _read_images(raws, ontology, max_pixels, tally) if e is not None]
    source = {"gt": str(gt), "format": fmt, "images": str(images) if images is not None else None}
    return Dataset(examples, ontology, source, tally)


def _read_gt(gt: Path, images: str | Path | None) -> tuple[list[_Raw], list[str], str]:
    from ..store import DB_NAME

    if gt.is_dir() and (gt / DB_NAME).is_file():
        return _read_run(gt, images)
    from ..quality.gt import load_ground_truth

    truth = load_ground_truth(gt)
    root = Path(images) if images is not None else None
    if root is not None and not root.is_dir():
        raise DataError(f"--images {root}: no such folder")
    raws = []
    for im in truth.images:
        candidates = [root / im.name, root / Path(im.name).name] if root is not None else []
        if im.file is not None:
            candidates.append(Path(im.file))
        elif root is None:
            candidates.append(Path(truth.path).parent / im.name)
        quads = [_quad(seg) for seg in im.segmentations]
        raws.append(_Raw(im.name, candidates, im.width, im.height, np.asarray(im.boxes, dtype=np.float64),
                         list(im.classes), list(im.texts), quads))
    return raws, list(truth.classes), truth.format


def _read_run(folder: Path, images: str | Path | None) -> tuple[list[_Raw], list[str], str]:
    """A run's output folder: the boxes its pipeline kept (not dropped, not flagged for review), in its ontology."""
    from ..store import Store

    root = Path(images) if images is not None else None
    raws = []
    with Store(folder) as store:
        spec = store.last_pipeline() or {}
        declared = Ontology.from_config(spec.get("ontology") or []).classes
        for row in store.images():
            record = row["labels"] or {}
            boxes = record.get("boxes") or {}
            data = boxes.get("data") or {}
            n = len(boxes.get("xyxy") or [])
            keep = [i for i in range(n) if (data.get("status") or ["kept"] * n)[i] == "kept"]
            quad_column = data.get("quad") or [None] * n
            candidates = [Path(row["path"])] + ([root / row["rel_path"]] if root is not None else [])
            raws.append(_Raw(
                row["rel_path"], candidates, int(record.get("width") or row["width"] or 0),
                int(record.get("height") or row["height"] or 0),
                np.asarray([boxes["xyxy"][i] for i in keep], dtype=np.float64).reshape(-1, 4),
                [str((data.get("class_name") or [""] * n)[i]) for i in keep],
                [str((data.get("text") or [""] * n)[i] or "") for i in keep],
                [quad_column[i] for i in keep],
            ))
    return raws, declared, "run"


def _quad(segmentation: Any) -> list[float] | None:
    """A COCO segmentation that is one 4-point polygon (how autolabel exports an OCR quad), else None."""
    one = isinstance(segmentation, list) and len(segmentation) == 1 and isinstance(segmentation[0], list)
    return [float(v) for v in segmentation[0]] if one and len(segmentation[0]) == 8 else None


def _read_images(raws: list[_Raw], ontology: Ontology, max_pixels: int, tally: Tally) -> list[Example | None]:
    """Each image read, decoded and checked in threads; the tally is counted here, in order."""
    from ..intake import prefetch

    out = []
    for example, notes in prefetch(lambda raw: _example(raw, ontology, max_pixels), raws, DECODE_WORKERS,
                                   4 * DECODE_WORKERS):
        for kind, n, what in notes:
            tally.add(kind, n, what)
        out.append(example)
    return out


Note = tuple[str, int, "str | None"]


def _example(raw: _Raw, ontology: Ontology, max_pixels: int) -> tuple[Example | None, list[Note]]:
    """One ground-truth image checked against its file and the ontology, and what could not be used of it."""
    from ..intake import Source, decode, read, sha256

    path = next((p for p in raw.candidates if p.is_file()), None)
    if path is None:
        return None, [("missing_image", 1, f"{raw.name}: not found")]
    data, reason = read(Source(str(path), raw.name))
    try:
        if data is None:
            raise ValueError(reason)
        image = decode(data, max_pixels)
    except ValueError as err:
        return None, [("missing_image", 1, f"{raw.name}: {err}")]
    width, height = image.size
    if raw.width and raw.height and (raw.width, raw.height) != (width, height):
        return None, [("size_mismatch", 1, f"{raw.name}: {raw.width}x{raw.height} vs {width}x{height}")]
    mapped = [ontology.class_of(c) for c in raw.classes]
    known = np.array([m is not None for m in mapped], dtype=bool)
    notes: list[Note] = [("outside_ontology", 1, repr(name)) for name, ok in zip(raw.classes, known) if not ok]
    xyxy, inside, clipped = clip(raw.xyxy, width, height)
    notes.append(("clipped", int((clipped & inside & known).sum()), raw.name))
    notes.append(("outside_image", int((~inside & known).sum()), raw.name))
    keep = np.flatnonzero(known & inside)
    quads = None
    if any(raw.quads[i] is not None for i in keep):
        corners = _corners(xyxy[keep])
        quads = np.array([np.clip(np.asarray(raw.quads[i], dtype=np.float64).reshape(4, 2), 0, (width, height))
                          .reshape(8) if raw.quads[i] is not None else corners[k] for k, i in enumerate(keep)])
    example = Example(raw.name, path, sha256(data), width, height, xyxy[keep], [str(mapped[i]) for i in keep],
                      [raw.texts[i] for i in keep], quads)
    return example, notes


def clip(xyxy: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes clipped to the image; which have area left inside it; which were changed by the clipping.

    >>> boxes, inside, clipped = clip(np.array([[-5., 0, 10, 10], [20, 20, 30, 30], [2, 2, 4, 4]]), 16, 16)
    >>> boxes.tolist(), inside.tolist(), clipped.tolist()
    ([[0.0, 0.0, 10.0, 10.0], [16.0, 16.0, 16.0, 16.0], [2.0, 2.0, 4.0, 4.0]], [True, False, True], [True, True, False])
    """
    xyxy = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    finite = np.isfinite(xyxy).all(axis=1)
    safe = np.where(np.isfinite(xyxy), xyxy, 0.0)
    out = np.clip(safe, 0.0, [width, height, width, height])
    inside = finite & (out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1])
    clipped = finite & (out != safe).any(axis=1)
    return out, inside, clipped


def _corners(xyxy: np.ndarray) -> np.ndarray:
    x1, y1, x2, y2 = (xyxy[:, k] for k in range(4))
    return np.stack([x1, y1, x2, y1, x2, y2, x1, y2], axis=1).reshape(-1, 8)


# -- split and digest ----------------------------------------------------------------------------------------------
def assign_splits(examples: list[Example], val_fraction: float, seed: int) -> None:
    """Set each example's split: by content hash and seed (the YOLO export's rule), ``val_fraction`` to validation.

    With ``val_fraction`` 0 every image trains. With fewer than two images there is nothing to hold out.
    """
    from ..exports.splits import SplitPlan

    for example in examples:
        example.split = "train"
    if val_fraction <= 0 or len(examples) < 2:
        return
    plan = SplitPlan({"train": 1.0 - val_fraction, "val": val_fraction}, seed=seed)
    for k, example in enumerate(examples):
        split, _ = plan.assign(example.sha256, lambda _split, k=k: k)
        example.split = split
    for k, _, to in plan.moves():
        examples[k].split = to


def digest(task: str, rows: list[tuple[str, str, int, int, str, str]]) -> str:
    """What the model learns from, as one hash: task, and per pair (split, image sha256, size, prompt, answer).

    Sorted, so the order files list images in changes nothing; 16 hex digits.
    """
    h = hashlib.sha256(task.encode())
    for row in sorted(rows):
        h.update(json.dumps(row, separators=(",", ":")).encode())
    return h.hexdigest()[:16]
