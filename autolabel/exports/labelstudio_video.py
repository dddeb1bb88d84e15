"""Label Studio video tasks: one task per clip, each track a ``videorectangle`` region with sparse keyframes.

A task::

    {"data": {"video": <reference>, "fps": 10.0, "autolabel_clip_id": 3, "rel_path": "a.mp4"},
     "predictions": [{"model_version": ..., "score": <task score>, "result": [
        {"id": "3_t1", "type": "videorectangle", "from_name": "box", "to_name": "video", "score": <track score>,
         "value": {"framesCount": 300, "duration": 10.0, "labels": ["car"],
                   "sequence": [{"frame": 1, "time": 0.0, "enabled": true, "rotation": 0,
                                 "x": <%>, "y": <%>, "width": <%>, "height": <%>}, ...]}}]}]}

The labeling config (:func:`video_labeling_config`) has a ``Video`` whose ``frameRate`` is the task's ``fps``, a
``VideoRectangle`` named ``box`` and the ontology as ``Labels``. Frames are the file's frame numbers, 1-based (as
Label Studio counts them); ``time`` is the frame's time stamp.

**Keyframes** (the documented rule). Label Studio draws a track's box between two keyframes by linear
interpolation, so a keyframe is written only where it is needed. A track's boxes are split into runs of
consecutive sampled frames (a sampled frame without the track's box ends a run). In each run the first box is a
keyframe; from a keyframe ``a``, the next keyframe is the farthest box ``c`` of the run such that interpolating
linearly (by frame number) from ``a`` to ``c`` gives every box in between within ``keyframe_tolerance`` pixels on
each edge; the run's last box is always a keyframe. The last keyframe of a run has ``enabled: false`` (the track is
not drawn after it until its next run starts); every other keyframe has ``enabled: true``. With a tolerance of 0 a
track moving at constant speed is two keyframes; an erratic one keeps every box.

Task ``score`` = the lowest (``min``, default) or mean track score of the clip, a track's score being the mean of its
boxes' known scores: Label Studio sorts ascending, so the least certain clips come first.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

import numpy as np

from ..ontology import Ontology
from ..store import Store
from ..util import atomic_open
from .labelstudio import LOCAL_FILES, PredictionChecker, config_path_for, image_reference
from .tracks import ClipTracks, Track, clip_tracks

VIDEO = "video"  # the Video object tag's name and the task data key


def video_labeling_config(ontology: Ontology) -> str:
    """The labeling-config XML every video task of this ontology validates against."""
    labels = "".join(f"\n    <Label value={quoteattr(name)}/>" for name in ontology.classes)
    return f"""<View>
  <Video name="{VIDEO}" value="${VIDEO}" frameRate="$fps"/>
  <VideoRectangle name="box" toName="{VIDEO}"/>
  <Labels name="videoLabels" toName="{VIDEO}" allowEmpty="true">{labels}
  </Labels>
</View>
"""


def keyframes(frames: np.ndarray, boxes: np.ndarray, tolerance: float) -> list[int]:
    """Indices of the keyframes of one run (``frames`` increasing, ``boxes`` (K, 4)), by the module's rule.

    >>> f = np.arange(5)
    >>> keyframes(f, np.stack([f, f, f + 2, f + 2], axis=1).astype(float), 0.5)
    [0, 4]
    >>> keyframes(f, np.array([[0, 0, 1, 1], [0, 0, 1, 1], [9, 9, 10, 10], [9, 9, 10, 10], [9, 9, 10, 10]], float), 0.5)
    [0, 1, 2, 4]
    """
    frames = np.asarray(frames, dtype=np.float64)
    boxes = np.asarray(boxes, dtype=np.float64)
    out, a, n = [0], 0, len(frames)
    while a < n - 1:
        best = a + 1
        for c in range(a + 2, n):
            t = (frames[a + 1:c] - frames[a]) / (frames[c] - frames[a])
            between = boxes[a] + t[:, None] * (boxes[c] - boxes[a])
            if np.abs(between - boxes[a + 1:c]).max() > tolerance:
                break
            best = c
        out.append(best)
        a = best
    return out


def track_region(track: Track, clip: ClipTracks, tolerance: float) -> dict[str, Any]:
    """One track as a ``videorectangle`` region with its keyframes. Pure."""
    w, h = clip.clip.width, clip.clip.height
    order = {position: k for k, (position, _, _) in enumerate(clip.frames)}
    runs: list[list[Any]] = []
    for box in track.boxes:
        if runs and order[box.position] == order[runs[-1][-1].position] + 1:
            runs[-1].append(box)
        else:
            runs.append([box])
    sequence = []
    for run in runs:
        frames = np.array([b.frame for b in run])
        boxes = np.array([b.annotation.xyxy for b in run])
        keys = keyframes(frames, boxes, tolerance)
        for n, k in enumerate(keys):
            box = run[k]
            x1, y1, x2, y2 = box.annotation.xyxy
            sequence.append({"frame": box.frame + 1, "time": round(box.time, 6), "enabled": n < len(keys) - 1,
                             "rotation": 0, "x": _pct(x1, w), "y": _pct(y1, h), "width": _pct(x2 - x1, w),
                             "height": _pct(y2 - y1, h)})
    fps = clip.clip.fps or 0.0
    duration = clip.clip.duration or (clip.frame_count / fps if fps else 0.0)
    region: dict[str, Any] = {
        "id": f"{clip.clip.id}_t{track.id}", "type": "videorectangle", "from_name": "box", "to_name": VIDEO,
        "value": {"framesCount": clip.frame_count, "duration": round(duration, 6), "labels": [track.class_name],
                  "sequence": sequence},
    }
    if track.score is not None:
        region["score"] = round(track.score, 5)
    return region


def _pct(value: float, size: int) -> float:
    return round(min(max(float(value) / size * 100.0, 0.0), 100.0), 4)


def video_task(clip: ClipTracks, video_root: str = LOCAL_FILES, model_version: str = "autolabel",
               score: str = "min", tolerance: float = 1.0) -> dict[str, Any]:
    """One Label Studio task (data + one prediction) for one clip. Pure: no I/O."""
    result = [track_region(t, clip, tolerance) for t in clip.tracks]
    prediction: dict[str, Any] = {"model_version": model_version, "result": result}
    scores = [t.score for t in clip.tracks if t.score is not None]
    if scores:
        prediction["score"] = round(float(min(scores) if score == "min" else np.mean(scores)), 5)
    c = clip.clip
    return {"data": {VIDEO: image_reference(c.rel_path, video_root), "fps": c.fps or 25.0,
                     "autolabel_clip_id": c.id, "rel_path": c.rel_path},
            "predictions": [prediction]}


def write_labelstudio_video(
    store: Store, ontology: Ontology, path: str | Path, video_root: str = LOCAL_FILES,
    model_version: str = "autolabel", score: str = "min", tolerance: float = 1.0, min_score: float = 0.0,
    flagged: bool = True,
) -> list[str]:
    """Write the video tasks JSON (one task per line) and the labeling config beside it; return both paths."""
    path = Path(path)
    config = video_labeling_config(ontology)
    checker = PredictionChecker(config)
    config_path = config_path_for(path)
    with atomic_open(path) as out:
        out.write("[")
        for n, clip in enumerate(clip_tracks(store, ontology, min_score=min_score, flagged=flagged)):
            item = video_task(clip, video_root, model_version, score, tolerance)
            checker.check(item)
            out.write(("," if n else "") + "\n" + json.dumps(item, separators=(",", ":"), ensure_ascii=False))
        out.write("\n]\n")
        with atomic_open(config_path) as xml:
            xml.write(config)
    return [str(path), str(config_path)]
