"""A clip's sampled frames in chunks that overlap, and the rule that stitches chunk-local track ids onto the clip's.

Chunk ``k`` holds sampled positions ``[k·(chunk − overlap), k·(chunk − overlap) + chunk)``: each chunk repeats the
last ``overlap`` frames of the one before. Those frames were committed by the earlier chunk; the later chunk labels
them again only to learn which of its tracks continue which of the clip's (:func:`stitch`), and commits the frames
after them. A tracker therefore never holds more than ``chunk`` frames, and a run killed mid-clip restarts at the
chunk in flight: its first frames (the overlap) are read back from the store, so the stitch is the same as if the
run had gone on.

**The stitching rule.** For each pair (clip track ``g`` seen on the overlap, chunk track ``l`` seen on the
overlap), the score is the sum of their IoU over the overlap frames (mask IoU where both rows have a mask, box IoU
otherwise) divided by the number of overlap frames on which either appears. The pairs are matched one-to-one
maximising the total score (Hungarian, ``scipy.optimize.linear_sum_assignment``); a matched pair whose score is
below ``stitch_iou`` is not a match. A matched chunk track takes the clip track's id; every other chunk track gets
a new id (the clip's next), in the order it first appears in the chunk (then by its chunk-local id).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import supervision as sv

from .decode import Frame

TRACK = "track_id"  #: the per-box column holding a box's track id (NaN or absent: not part of a track)


@dataclass(frozen=True)
class FrameRef:
    """A video frame's place, on its :class:`~autolabel.stage.Item` (``item.frame``): what tracking stages read."""

    clip: str  # the clip's path
    position: int  # sampled position in the clip
    index: int  # decode order in the file
    time: float  # seconds
    chunk: int  # sampled position of the first frame of its chunk


@dataclass
class Chunk:
    """Consecutive sampled frames of a clip; ``frames[fresh:]`` are new, ``frames[:fresh]`` repeat the overlap."""

    start: int  # sampled position of frames[0]
    frames: list[Frame]
    fresh: int  # 0 for the clip's first chunk, else the overlap

    @property
    def end(self) -> int:
        """Sampled position after the chunk's last frame: where the clip's labels reach once it is committed."""
        return self.start + len(self.frames)


def chunk_start(position: int, overlap: int) -> int:
    """Where the chunk that labels sampled position ``position`` (the first not committed) starts.

    >>> chunk_start(0, 4), chunk_start(32, 4)
    (0, 28)
    """
    return max(position - overlap, 0)


def chunks(frames: Iterable[Frame], size: int, overlap: int, first: int = 0) -> Iterator[Chunk]:
    """Group a stream of frames (from sampled position ``first``) into overlapping chunks, holding one at a time.

    ``first`` > 0 resumes a clip: the stream then starts with the overlap frames already committed.

    >>> fs = [Frame(p, p, p / 10, None) for p in range(10)]
    >>> [(c.start, c.end, c.fresh) for c in chunks(fs, 4, 1)]
    [(0, 4, 0), (3, 7, 1), (6, 10, 1)]
    >>> [(c.start, c.end, c.fresh) for c in chunks(fs[5:], 4, 1, first=5)]
    [(5, 9, 1), (8, 10, 1)]
    """
    buffer: list[Frame] = []
    start, fresh = first, (overlap if first > 0 else 0)
    for frame in frames:
        buffer.append(frame)
        if len(buffer) == size:
            yield Chunk(start, buffer, fresh)
            buffer = buffer[size - overlap:]
            start, fresh = start + size - overlap, overlap
    if len(buffer) > fresh:
        yield Chunk(start, buffer, fresh)


@dataclass
class Tracks:
    """The tracked boxes of one frame: ids, boxes (N, 4) and masks (N, H, W) or None."""

    ids: np.ndarray
    xyxy: np.ndarray
    mask: np.ndarray | None = None

    @classmethod
    def of(cls, detections: sv.Detections) -> "Tracks":
        """The rows of ``detections`` that carry a track id (and are not dropped)."""
        ids = track_ids(detections)
        keep = ~np.isnan(ids)
        if "status" in detections.data:
            keep &= detections.data["status"] != "dropped"
        has_mask = detections.data.get("has_mask")
        mask = None
        if detections.mask is not None and has_mask is not None and np.all(np.asarray(has_mask)[keep]):
            mask = detections.mask[keep]
        return cls(ids[keep].astype(np.int64), detections.xyxy[keep], mask)


def track_ids(detections: sv.Detections) -> np.ndarray:
    """The ``track_id`` column as float (NaN where a row has none; all NaN when the column is absent)."""
    column = detections.data.get(TRACK)
    if column is None:
        return np.full(len(detections), np.nan)
    return np.array([np.nan if v is None else float(v) for v in column], dtype=np.float64)


def _iou(a: Tracks, b: Tracks) -> np.ndarray:
    """(len(a), len(b)) IoU: masks when both frames have them, boxes otherwise."""
    if not len(a.ids) or not len(b.ids):
        return np.zeros((len(a.ids), len(b.ids)))
    if a.mask is not None and b.mask is not None and a.mask.shape[1:] == b.mask.shape[1:]:
        return sv.mask_iou_batch(a.mask, b.mask)
    return sv.box_iou_batch(a.xyxy, b.xyxy)


def stitch(
    previous: Sequence[Tracks], current: Sequence[Tracks], first_seen: Sequence[int], next_id: int, min_iou: float
) -> tuple[dict[int, int], int]:
    """Map chunk-local ids to clip ids by the rule of the module docstring.

    ``previous[f]`` / ``current[f]``: the clip's and the chunk's tracks on overlap frame ``f``; ``first_seen``:
    every chunk-local id in the order it first appears in the chunk. Returns the mapping and the next free id.

    >>> box = np.array([[0, 0, 10, 10]], dtype=np.float32)
    >>> prev = [Tracks(np.array([7]), box)]
    >>> cur = [Tracks(np.array([0]), box)]
    >>> stitch(prev, cur, [0, 1], next_id=9, min_iou=0.5)
    ({0: 7, 1: 9}, 10)
    """
    old = sorted({int(i) for t in previous for i in t.ids})
    new = sorted({int(i) for t in current for i in t.ids})
    mapping: dict[int, int] = {}
    if old and new:
        total = np.zeros((len(old), len(new)))
        either = np.zeros((len(old), len(new)))
        o_at, n_at = {v: k for k, v in enumerate(old)}, {v: k for k, v in enumerate(new)}
        for before, after in zip(previous, current):
            rows = [o_at[int(i)] for i in before.ids]
            cols = [n_at[int(i)] for i in after.ids]
            present_o = np.zeros(len(old), dtype=bool)
            present_n = np.zeros(len(new), dtype=bool)
            present_o[rows], present_n[cols] = True, True
            either += present_o[:, None] | present_n[None, :]
            if rows and cols:
                np.add.at(total, np.ix_(rows, cols), _iou(before, after))
        score = np.divide(total, either, out=np.zeros_like(total), where=either > 0)
        from scipy.optimize import linear_sum_assignment

        for r, c in zip(*linear_sum_assignment(score, maximize=True)):
            if score[r, c] >= min_iou:
                mapping[new[c]] = old[r]
    for local in first_seen:
        if local not in mapping:
            mapping[local] = next_id
            next_id += 1
    return mapping, next_id


def first_seen(per_frame: Iterable[Tracks]) -> list[int]:
    """Chunk-local ids in the order they first appear (within a frame, by id).

    >>> first_seen([Tracks(np.array([3, 1]), np.zeros((2, 4))), Tracks(np.array([2, 1]), np.zeros((2, 4)))])
    [1, 3, 2]
    """
    out: dict[int, None] = {}
    for tracks in per_frame:
        for i in sorted(int(v) for v in tracks.ids):
            out.setdefault(i, None)
    return list(out)
