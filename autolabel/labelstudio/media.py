"""What a push sends: images (one task per image) or clips (one video task per clip) — a project holds one kind.

Each kind gives the push its labeling config, the task data key (``image`` / ``video``), the store's rows, the
builder of one task (the exports' own: :func:`autolabel.exports.labelstudio.task`,
:func:`autolabel.exports.labelstudio_video.video_task`) and the hash of what a task's prediction is made from.
``media: auto`` pushes what the store holds; a store holding both is refused with the fix (push each kind to a
project of its own with ``--media``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ..config import PipelineSpec, PushSpec
from ..errors import AutolabelError
from ..store import Store


@dataclass(frozen=True)
class Media:
    """One kind of task a push sends."""

    name: str  # images | videos
    data_key: str  # the task data key holding the media reference
    config: str  # the labeling config
    rows: Callable[[], Iterator[Any]]  # rows with id, path, rel_path, sha256 (ImageRow or ClipTracks)
    task: Callable[[Any], dict[str, Any]]  # one task (data + prediction) of a row
    input_hash: Callable[[Any], str]  # what the row's prediction is made from


def _digest(parts: list[Any]) -> str:
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def media_for(store: Store, spec: PipelineSpec, options: PushSpec, version: str) -> Media:
    """The kind of task this push sends (see the module docstring)."""
    from .. import __version__

    kind = options.media
    if kind == "auto":
        from ..video.store import ClipStatus, ClipStore

        clips, images = ClipStore(store).count(ClipStatus.DONE), store.count("done")
        if clips and images:
            raise AutolabelError(
                f"{store.path}: the store holds {images} labeled images and {clips} labeled clips, and a Label Studio "
                "project holds one kind: push with --media images (push.media: images) and again with --media videos "
                "to another project"
            )
        kind = "videos" if clips else "images"
    ontology = spec.ontology
    if kind == "videos":
        from ..exports.labelstudio_video import VIDEO, video_labeling_config, video_task
        from ..exports.tracks import clip_tracks

        def video_rows() -> Iterator[Any]:
            return clip_tracks(store, ontology, min_score=options.min_score, flagged=options.flagged == "include")

        def video_hash(clip: Any) -> str:
            tracks = [[t.id, t.class_name, [(b.frame, b.annotation.xyxy, b.annotation.score) for b in t.boxes]]
                      for t in clip.tracks]
            return _digest([__version__, version, options.task_score, options.keyframe_tolerance, clip.id,
                            clip.rel_path, clip.clip.fps, clip.frame_count, tracks])

        return Media("videos", VIDEO, video_labeling_config(ontology), video_rows,
                     lambda clip: video_task(clip, model_version=version, score=options.task_score,
                                             tolerance=options.keyframe_tolerance),
                     video_hash)
    from ..exports.labelstudio import IMAGE, labeling_config, task
    from ..exports.rows import image_rows

    def image_rows_() -> Iterator[Any]:
        return image_rows(store, ontology, min_score=options.min_score, flagged=options.flagged == "include")

    def image_hash(row: Any) -> str:
        from .push import input_hash

        return input_hash(row, version, options)

    def image_task(row: Any) -> dict[str, Any]:
        item = task(row, model_version=version, score=options.task_score, masks=options.masks)
        item["data"].update(width=row.width, height=row.height)
        return item

    return Media("images", IMAGE, labeling_config(ontology), image_rows_, image_task, image_hash)
