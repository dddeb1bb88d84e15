"""Track filters: decisions over a whole track of a clip, once every frame of the clip is labeled.

A per-frame check sees one frame; a track filter sees a track's every row: how many frames it lasts, its mean
score, the classes its frames gave it. They run after a clip's last chunk (:mod:`autolabel.video.loop`), over a
:class:`TrackTable` of the clip's tracked rows (no masks, no pixels: flat arrays, so memory is a few numbers per
row), and write their decisions back into the stored frames. Only rows with a track id take part; on images the
stages pass everything through (an image has no tracks). Per-frame checks (mask area, mask NMS, ...) are the usual
filter stages, placed before the track filters.

Rules (an unknown score, NaN, is never held against a track):

* ``track_length`` — a track seen on fewer than ``min_frames`` sampled frames (rows not dropped yet) fails:
  ``short_track``.
* ``track_score`` — a track whose mean known score is below ``threshold`` fails: ``low_track_score``.
* ``track_class`` — class votes: every row of a track takes the class with the highest summed score over the
  track's rows (a row of unknown score votes 1; ties go to the class listed first in the ontology). A row whose
  class changed keeps the one its frame gave it in the column ``frame_class``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from ..labels import DROPPED
from ..stage import Item, Stage, StageParams
from .base import FilterParams, mark

TRACK = "track_id"


@dataclass
class TrackTable:
    """A clip's tracked rows as flat arrays, in frame order: which frame and row each is, and what filters read."""

    position: np.ndarray  # (N,) int: the frame's sampled position
    row: np.ndarray  # (N,) int: the row within the frame's record
    track: np.ndarray  # (N,) int
    class_name: np.ndarray  # (N,) object
    confidence: np.ndarray  # (N,) float64, NaN = unknown
    status: np.ndarray  # (N,) object
    reason: np.ndarray  # (N,) object
    frame_class: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=object))  # "" unless a vote changed it

    @classmethod
    def gather(cls, frames: Iterable[tuple[int, dict[str, Any]]]) -> "TrackTable":
        """The tracked rows of ``(position, record)`` pairs (records of :mod:`autolabel.records`)."""
        parts: dict[str, list[Any]] = {k: [] for k in ("position", "row", "track", "class_name", "confidence",
                                                        "status", "reason")}
        for position, record in frames:
            boxes = record["boxes"]
            ids = boxes["data"].get(TRACK)
            if not ids:
                continue
            data = boxes["data"]
            for i, tid in enumerate(ids):
                if tid is None:
                    continue
                parts["position"].append(position)
                parts["row"].append(i)
                parts["track"].append(int(tid))
                parts["class_name"].append(data["class_name"][i])
                score = boxes["confidence"][i]
                parts["confidence"].append(np.nan if score is None else float(score))
                parts["status"].append(data["status"][i])
                parts["reason"].append(data["reason"][i])
        n = len(parts["track"])
        obj = lambda key: np.array(parts[key] + [None], dtype=object)[:n]  # noqa: E731 — never a 2-D array of str
        return cls(
            position=np.asarray(parts["position"], dtype=np.int64), row=np.asarray(parts["row"], dtype=np.int64),
            track=np.asarray(parts["track"], dtype=np.int64), class_name=obj("class_name"),
            confidence=np.asarray(parts["confidence"], dtype=np.float64), status=obj("status"),
            reason=obj("reason"), frame_class=np.full(n, "", dtype=object),
        )

    def __len__(self) -> int:
        return len(self.track)

    @property
    def active(self) -> np.ndarray:
        return self.status != DROPPED

    def write(self, position: int, record: dict[str, Any]) -> bool:
        """Put this table's decisions for the frame at ``position`` into its record; True when anything changed."""
        lo, hi = np.searchsorted(self.position, [position, position + 1])
        if lo == hi:
            return False
        data = record["boxes"]["data"]
        changed = False
        for k in range(lo, hi):
            i = int(self.row[k])
            for key, values in (("status", self.status), ("reason", self.reason), ("class_name", self.class_name)):
                if data[key][i] != values[k]:
                    data[key][i] = values[k]
                    changed = True
            if self.frame_class[k]:
                column = data.setdefault("frame_class", [""] * len(data["status"]))
                if column[i] != self.frame_class[k]:
                    column[i] = self.frame_class[k]
                    changed = True
        return changed


class TrackFilter(Stage):
    """Base of track filters: they decide over a clip's :class:`TrackTable`; images pass through unchanged."""

    Params: ClassVar[type[StageParams]] = FilterParams
    params: FilterParams
    over_clip: ClassVar[bool] = True

    def __call__(self, items: list[Item]) -> list[Item]:
        return items

    def apply(self, table: TrackTable) -> None:
        """Record this filter's decisions on ``table`` in place."""
        for hit, code in self.decide(table):
            mark(table.status, table.reason, hit, code, self.params.action)

    def decide(self, table: TrackTable) -> Iterator[tuple[np.ndarray, str]]:
        """Yield ``(rows that fail, reason code)`` pairs."""
        raise NotImplementedError


def _track_lengths(table: TrackTable) -> np.ndarray:
    """Per row: on how many frames its track has a row not dropped."""
    active = table.active
    ids, inverse = np.unique(table.track, return_inverse=True)
    frames = np.zeros(len(ids), dtype=np.int64)
    if active.any():
        pairs = np.unique(np.stack([inverse[active], table.position[active]], axis=1), axis=0)
        frames = np.bincount(pairs[:, 0], minlength=len(ids))
    return frames[inverse]


class TrackLengthParams(FilterParams):
    min_frames: int = Field(default=3, ge=1)  # sampled frames a track must last


class TrackLength(TrackFilter):
    """Drop tracks seen on fewer than ``min_frames`` sampled frames (``short_track``): flickers, not objects."""

    Params = TrackLengthParams
    params: TrackLengthParams

    def decide(self, table: TrackTable) -> Iterator[tuple[np.ndarray, str]]:
        yield _track_lengths(table) < self.params.min_frames, "short_track"


class TrackScoreParams(FilterParams):
    threshold: float = Field(default=0.3, ge=0.0, le=1.0)  # mean known score a track must reach


class TrackScore(TrackFilter):
    """Drop tracks whose mean known score is below ``threshold`` (``low_track_score``); unknown scores pass."""

    Params = TrackScoreParams
    params: TrackScoreParams

    def decide(self, table: TrackTable) -> Iterator[tuple[np.ndarray, str]]:
        ids, inverse = np.unique(table.track, return_inverse=True)
        scored = table.active & ~np.isnan(table.confidence)
        total = np.bincount(inverse[scored], weights=table.confidence[scored], minlength=len(ids))
        count = np.bincount(inverse[scored], minlength=len(ids))
        mean = np.divide(total, count, out=np.full(len(ids), np.nan), where=count > 0)
        yield mean[inverse] < self.params.threshold, "low_track_score"  # nan < x is False


class TrackClass(TrackFilter):
    """One class per track: the class with the highest summed score over the track's rows not dropped (a row of
    unknown score votes 1; ties: the ontology's order). Changes classes, drops nothing."""

    Params = StageParams

    def apply(self, table: TrackTable) -> None:
        active = table.active
        if not active.any():
            return
        order = {name: k for k, name in enumerate(self.context.ontology.classes)}
        names = sorted({str(c) for c in table.class_name[active]}, key=lambda c: (order.get(c, len(order)), c))
        code = {name: k for k, name in enumerate(names)}
        ids, inverse = np.unique(table.track, return_inverse=True)
        cls = np.array([code.get(str(c), -1) for c in table.class_name], dtype=np.int64)
        weight = np.where(np.isnan(table.confidence), 1.0, table.confidence)
        votes = np.zeros((len(ids), len(names)))
        np.add.at(votes, (inverse[active], cls[active]), weight[active])
        winner = np.asarray(names, dtype=object)[votes.argmax(axis=1)]  # argmax: the first of equal maxima
        voted = votes.sum(axis=1) > 0
        new = np.where(voted[inverse], winner[inverse], table.class_name)
        change = active & (new != table.class_name)
        table.frame_class[change] = table.class_name[change]
        table.class_name = np.where(change, new, table.class_name)
