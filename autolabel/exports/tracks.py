"""Store clips → what every video export writes: per clip, its tracks, each a list of exportable boxes in frame order.

The boxes are chosen exactly as the image exports choose theirs (:func:`autolabel.exports.rows.image_row`: dropped
boxes out, flagged ones unless excluded, ``min_score``, boxes without an ontology class out, clipped to the frame),
and among them those with a track id. A track's class is the one most of its boxes have (ties: the ontology's
order): with the ``track_class`` filter in the pipeline every box of a track already has it.

One clip's tracks are held in memory at a time (its boxes and their RLE masks: bounded by ``video.max_frames``),
never the whole store's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import AutolabelError
from ..ontology import Ontology
from ..store import Store
from ..video.store import ClipRow, ClipStatus, ClipStore
from .rows import Annotation, class_ids, image_row


@dataclass(frozen=True)
class TrackBox:
    """One box of a track on one sampled frame."""

    position: int  # sampled position in the clip
    frame: int  # 0-based decode index in the file
    time: float  # seconds
    annotation: Annotation


@dataclass
class Track:
    """One track of a clip: its id, its boxes in frame order, its class."""

    id: int
    boxes: list[TrackBox] = field(default_factory=list)
    class_name: str = ""
    category: int = 0  # 0-based position of the class in the ontology

    @property
    def score(self) -> float | None:
        """The mean of its boxes' known scores (None when none is known)."""
        known = [b.annotation.score for b in self.boxes if b.annotation.score is not None]
        return sum(known) / len(known) if known else None


@dataclass
class ClipTracks:
    """A labeled clip: its row, every sampled frame ``(position, index, time)``, and its tracks by id order."""

    clip: ClipRow
    frames: list[tuple[int, int, float]]
    tracks: list[Track]

    # what a push needs of a row (as of an image's ImageRow)
    @property
    def id(self) -> int:
        return self.clip.id

    @property
    def path(self) -> str:
        return self.clip.path

    @property
    def rel_path(self) -> str:
        return self.clip.rel_path

    @property
    def sha256(self) -> str | None:
        return self.clip.sha256

    @property
    def frame_count(self) -> int:
        """Frames in the file, as far as known: its duration times its rate, else up to the last sampled one."""
        c = self.clip
        last = self.frames[-1][1] + 1 if self.frames else 0
        if c.duration and c.fps:
            return max(round(c.duration * c.fps), last)
        return last


def require_clips(store: Store) -> ClipStore:
    """The store's clips, or one line saying there are none labeled (nothing to export)."""
    clips = ClipStore(store)
    if clips.count(ClipStatus.DONE) == 0:
        failed = clips.count(ClipStatus.FAILED)
        why = (f"all {failed} clips failed (see run.json)" if failed
               else "run a pipeline over video files (mp4, mov, mkv, webm, avi) into this folder first")
        raise AutolabelError(f"{store.path}: no labeled clips in the store; nothing to export ({why})")
    return clips


def clip_tracks(store: Store, ontology: Ontology, min_score: float = 0.0, flagged: bool = True) -> Iterator[ClipTracks]:
    """Every labeled clip of the store with its tracks, one clip at a time, in id order."""
    clips = require_clips(store)
    ids = class_ids(ontology)
    order = list(ontology.classes)
    for clip in clips.clips(ClipStatus.DONE):
        frames: list[tuple[int, int, float]] = []
        tracks: dict[int, Track] = {}
        for f in clips.frames(clip.id):
            frames.append((f.position, f.index, f.time))
            row = {"id": clip.id, "path": clip.path, "rel_path": f"{clip.rel_path}#{f.position}",
                   "width": f.labels["width"], "height": f.labels["height"], "labels": f.labels}
            for ann in image_row(row, ids, min_score=min_score, flagged=flagged).annotations:
                tid = _track_id(ann)
                if tid is not None:
                    tracks.setdefault(tid, Track(tid)).boxes.append(TrackBox(f.position, f.index, f.time, ann))
        for track in tracks.values():
            votes = Counter(b.annotation.class_name for b in track.boxes)
            track.class_name = min(votes, key=lambda c: (-votes[c], order.index(c)))
            track.category = ids[track.class_name]
        yield ClipTracks(clip, frames, [tracks[k] for k in sorted(tracks)])


def _track_id(ann: Annotation) -> int | None:
    value: Any = ann.extra.get("track_id")
    return None if value is None else int(value)


def sequence_names(rel_paths: list[str]) -> list[str]:
    """A folder name per clip for formats with one folder per sequence: its path without the extension, or with
    the extension (``a_mp4``) where two clips would share a name.

    >>> sequence_names(["a.mp4", "b/c.mov", "a.mkv"])
    ['a_mp4', 'b/c', 'a_mkv']
    """
    stems = [p.rsplit(".", 1)[0] if "." in p.rsplit("/", 1)[-1] else p for p in rel_paths]
    counts = Counter(stems)
    return [s if counts[s] == 1 else "_".join(p.rsplit(".", 1)) for s, p in zip(stems, rel_paths)]


def clip_names(store: Store) -> dict[int, str]:
    """:func:`sequence_names` of the store's labeled clips, by clip id."""
    clips = ClipStore(store).clips(ClipStatus.DONE)
    return dict(zip([c.id for c in clips], sequence_names([c.rel_path for c in clips])))
