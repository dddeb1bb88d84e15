"""The clip loop: each clip's sampled frames, chunk by chunk, through the pipeline's stages into the store.

Per clip: hash the file (a clip of the same content and plan already done is skipped), read its header and check
the limits, then for each chunk (:mod:`.chunks`): restore the chunk's cached model outputs, run the frame stages
over the chunk in batches of ``batch_size`` and the tracking stages (``temporal``) over the whole chunk, stitch
the chunk's track ids onto the clip's, and commit the chunk's new frames with the clip's progress in one
transaction. After the last chunk the track filters (``over_clip``) decide over the clip's tracks and the clip is
marked done. A stop request (Ctrl-C) is honoured between chunks; a killed run resumes at the chunk in flight.

One bad clip costs one clip: a decoding problem, a limit crossed or a stage's error fails it with a one-line reason
(what it committed stays, and the next run carries on from there); errors that end the run (a model that cannot
load) end it.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import cache
from ..cache import canonical_json
from ..errors import StageError, one_line
from ..labels import Labels
from ..records import from_record, to_record
from ..stage import Item
from .chunks import TRACK, Chunk, FrameRef, Tracks, chunk_start, chunks, first_seen, stitch, track_ids
from .decode import file_digest, file_size, frames, limit_problem, probe
from .spec import VideoSpec, is_video_name
from .store import ClipStatus, ClipStore, FrameRow

if TYPE_CHECKING:
    from ..config import PipelineSpec
    from ..intake import Source
    from ..pipeline import Pipeline
    from ..store import Store


def split_sources(sources: Sequence[Source]) -> tuple[list[Source], list[Source]]:
    """``(images, clips)``: every source that is not a clip by its name is an image (a bad one is reported so)."""
    images, clips = [], []
    for source in sources:
        (clips if is_video_name(source.path) else images).append(source)
    return images, clips


def plan_hash(spec: PipelineSpec, video: VideoSpec) -> str:
    """What decides a clip's labels: the pipeline's hash and the sampling and chunking (not the limits)."""
    return hashlib.sha256(canonical_json([spec.hash, video.plan_identity()])).hexdigest()[:16]


@dataclass
class ClipOutcome:
    """What became of one clip (the runner counts these beside images)."""

    path: str
    rel_path: str
    status: str  # labeled | skipped | failed | stopped
    reason: str = ""
    frames: int = 0  # frames labeled by this run
    decisions: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # (class, status, reason) per box


def label_clips(
    pipeline: Pipeline, store: Store, run_id: int, sources: Sequence[Source], stop: Any, clock: Counter[str],
    report: Callable[[ClipOutcome], None],
) -> bool:
    """Label every clip of ``sources`` in this process; ``report`` each outcome. True when stopped early."""
    labeler = ClipLabeler(pipeline, store, run_id, clock)
    for source in sources:
        outcome = labeler.label(source, stop)
        report(outcome)
        if outcome.status == "stopped" or stop.requested:
            return True
    return False


class ClipLabeler:
    """Labels clips with one pipeline into one store (see the module docstring)."""

    def __init__(self, pipeline: Pipeline, store: Store, run_id: int, clock: Counter[str]):
        self.pipeline, self.store, self.run_id, self.clock = pipeline, store, run_id, clock
        self.video: VideoSpec = pipeline.config.video
        self.clips = ClipStore(store)
        self.plan = plan_hash(pipeline.spec, self.video)
        stages = pipeline.stages
        self.end = next((i for i, s in enumerate(stages) if s.over_clip), len(stages))  # frame stages: [0, end)
        self.keys = pipeline.spec.stage_keys[: self.end]

    def label(self, source: Source, stop: Any) -> ClipOutcome:
        path, rel = source.path, source.rel_path
        t0 = time.perf_counter()
        try:
            size = file_size(path)
            if size is not None and size > self.video.max_bytes:
                raise ValueError(f"too large: {size:,} bytes exceeds video.max_bytes {self.video.max_bytes:,} "
                                 "(raise it, or cut the clip)")
            sha, size = file_digest(path)
        except FileNotFoundError:
            return self._fail(source, None, "file not found")
        except IsADirectoryError:
            return self._fail(source, None, "is a folder, not a video")
        except (OSError, ValueError) as err:
            return self._fail(source, None, one_line(err))
        finally:
            self.clock["hashing clips"] += time.perf_counter() - t0
        row = self.clips.get(path)
        if row is not None and row.status == ClipStatus.DONE and row.sha256 == sha and row.plan_hash == self.plan:
            return ClipOutcome(path, rel, "skipped")
        if size == 0:
            return self._fail(source, sha, "empty file (0 bytes)")
        try:
            info = probe(path)
        except ValueError as err:
            return self._fail(source, sha, str(err))
        problem = limit_problem(info, size, self.video)
        if problem:
            return self._fail(source, sha, problem)
        clip = self.clips.begin(path, rel, sha, vars(info), self.plan, self.video.sampling(), self.run_id)
        outcome = ClipOutcome(path, rel, "labeled")
        try:
            for chunk in self._chunks(path, clip.next_frame):
                self._label_chunk(clip.id, path, sha, chunk, outcome)
                if stop.requested:
                    outcome.status = "stopped"
                    return outcome
            self._finish(clip.id, outcome)
        except (ValueError, StageError) as err:
            return self._fail(source, sha, str(err), outcome.frames)
        return outcome

    def _fail(self, source: Source, sha: str | None, reason: str, frames: int = 0) -> ClipOutcome:
        self.clips.fail(source.path, source.rel_path, sha, reason, self.run_id)
        return ClipOutcome(source.path, source.rel_path, "failed", reason, frames)

    def _chunks(self, path: str, committed: int) -> Iterator[Chunk]:
        """The chunks still to label: from the one in flight when the clip was left (its overlap re-decoded)."""
        first = chunk_start(committed, self.video.overlap)
        stream = chunks(frames(path, self.video, start=first), self.video.chunk, self.video.overlap, first)
        while True:
            t0 = time.perf_counter()
            chunk = next(stream, None)
            self.clock["decoding clips"] += time.perf_counter() - t0
            if chunk is None:
                return
            yield chunk

    def _label_chunk(self, clip_id: int, path: str, sha: str, chunk: Chunk, outcome: ClipOutcome) -> None:
        t0 = time.perf_counter()
        items, rows = self._run_stages(path, sha, chunk)
        self.clock["stages"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        clip = self.clips.get(outcome.path)
        assert clip is not None
        mapping, next_track = self._stitch(clip_id, chunk, items, clip.next_track)
        new = []
        for frame, item in zip(chunk.frames[chunk.fresh:], items[chunk.fresh:]):
            _renumber(item.labels, mapping)
            new.append((frame.position, frame.index, frame.time, to_record(item.labels)))
        self.clips.commit_chunk(clip_id, new, chunk.end, next_track, rows)
        outcome.frames += len(new)
        for frame in chunk.frames[: len(chunk.frames) - self.video.overlap]:
            frame.image = None  # done with (the last ``overlap`` frames start the next chunk)
        self.clock["commit"] += time.perf_counter() - t0

    def _run_stages(self, path: str, sha: str, chunk: Chunk) -> tuple[list[Item], list[cache.Row]]:
        """The frame stages over a chunk, each from the chunk's last cached model output on."""
        pipeline, n = self.pipeline, len(chunk.frames)
        identity = hashlib.sha256(canonical_json(self.video.plan_identity())).hexdigest()[:12]
        shas = [f"clip:{sha}:{identity}:{chunk.start}:{f.position}" for f in chunk.frames]
        restored = [cache.restore(self.store, s, self.keys) for s in shas]
        if len({r.start for r in restored}) != 1:
            restored = [cache.Restored()] * n  # a chunk is cached whole or not at all; anything else: from scratch
        items = []
        for frame, r in zip(chunk.frames, restored):
            item = r.item(frame.image, f"{path}#{frame.position}")
            item.frame = FrameRef(path, frame.position, frame.index, frame.time, chunk.start)
            items.append(item)
        write_back = cache.WriteBack(self.keys + [None] * (len(pipeline.stages) - self.end), list(shas))
        batch_size = pipeline.config.batch_size
        for j in range(restored[0].start, self.end):
            stage = pipeline.stages[j]
            groups = [list(range(n))] if stage.temporal else [list(range(k, min(k + batch_size, n)))
                                                               for k in range(0, n, batch_size)]
            for group in groups:
                def after(stage_index: int, k: int, labels: Labels, group: list[int] = group) -> None:
                    write_back(stage_index, group[k], labels)

                out = pipeline([items[k] for k in group], starts=[j] * len(group), after=after, end=j + 1)
                for k, item in zip(group, out):
                    items[k] = item
        return items, write_back.rows

    def _stitch(self, clip_id: int, chunk: Chunk, items: list[Item], next_track: int) -> tuple[dict[int, int], int]:
        """Chunk-local track ids → the clip's (the overlap frames' committed labels read back from the store)."""
        previous = []
        if chunk.fresh:
            stored = list(self.clips.frames(clip_id, chunk.start, chunk.start + chunk.fresh))
            if [f.position for f in stored] != list(range(chunk.start, chunk.start + chunk.fresh)):
                raise ValueError(f"the store lacks the overlap frames {chunk.start}..{chunk.start + chunk.fresh - 1} "
                                 "of this clip; label it again (delete its row) or report this")
            previous = [Tracks.of(from_record(f.labels).detections) for f in stored]
        current = [Tracks.of(item.labels.detections) for item in items[: chunk.fresh]]
        fresh = [_all_ids(item.labels) for item in items[chunk.fresh:]]
        return stitch(previous, current, first_seen(fresh), next_track, self.video.stitch_iou)

    def _finish(self, clip_id: int, outcome: ClipOutcome) -> None:
        """The track filters over the clip's tracks (two passes over its stored frames), then done."""
        t0 = time.perf_counter()
        filters = self.pipeline.stages[self.end:]
        table = None
        if filters:
            from ..filters.tracks import TrackTable

            table = TrackTable.gather((f.position, f.labels) for f in self.clips.frames(clip_id))
            for stage in filters:
                s0 = time.perf_counter()
                stage.apply(table)
                self.pipeline.timings[stage.name] += time.perf_counter() - s0
                self.pipeline.calls[stage.name] += 1
        def rewrite(frame: FrameRow) -> dict[str, Any] | None:
            changed = table is not None and table.write(frame.position, frame.labels)
            tally(outcome.decisions, frame.labels)
            return frame.labels if changed else None

        self.clips.finish(clip_id, rewrite)
        self.clock["track filters"] += time.perf_counter() - t0


def _all_ids(labels: Labels) -> Tracks:
    """Every row's track id of a frame, dropped rows too (all of a chunk's ids must be renumbered)."""
    ids = track_ids(labels.detections)
    keep = ~np.isnan(ids)
    return Tracks(ids[keep].astype(np.int64), labels.detections.xyxy[keep])


def _renumber(labels: Labels, mapping: dict[int, int]) -> None:
    """Give a frame's rows their clip track ids."""
    det = labels.detections
    if TRACK not in det.data or not len(det):
        return
    ids = track_ids(det)
    det.data[TRACK] = np.array([np.nan if np.isnan(v) else float(mapping[int(v)]) for v in ids], dtype=np.float64)


def tally(decisions: Counter[tuple[str, str, str]], record: dict[str, Any]) -> None:
    """Count a frame's boxes by (class, status, reason), as the runner counts an image's."""
    data = record["boxes"]["data"]
    decisions.update(zip(data["class_name"], data["status"], data["reason"]))
