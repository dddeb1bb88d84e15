"""A generated clip with known tracks, and a test tracker that finds them in the pixels.

The scene (64x48 px, 30 frames at 10 fps): a red ``car`` drives left to right and leaves on the right; a green
``person`` walks right to left in front of it (they cross around frame 14: the person hides part of the car) and
leaves on the left; a blue ``ball`` falls in from the top at frame 9 and out at the bottom; a yellow ``ghost``
blinks on frames 5 and 6 only. Every object is a flat colour on black; :func:`render` gives each frame's pixels
and each object's *visible* mask (z-order applied), which is the ground truth.

Clips are written losslessly (x264 ``qp=0`` in 4:4:4, or FFV1) so the colours decode within a few levels, and
:class:`ColourTracks` (``type: video_scene:ColourTracks``) recovers each object's mask from them: a tracker whose
answers come from the frame it is given, so a frame handed to the wrong position, an id renumbered wrongly at a
chunk seam, or a frame decoded at the wrong time shows as a wrong box.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import supervision as sv
from pydantic import Field

from autolabel.stage import Item, ModelStageParams, Stage, StageParams

W, H, FRAMES, FPS = 64, 48, 30, 10


@dataclass(frozen=True)
class Thing:
    name: str  # its track's name in the ground truth
    class_name: str
    colour: tuple[int, int, int]
    z: int  # drawn in increasing z: higher hides lower


THINGS = [
    Thing("car", "car", (255, 0, 0), 0),
    Thing("person", "person", (0, 255, 0), 1),
    Thing("ball", "ball", (0, 0, 255), 2),
    Thing("ghost", "ghost", (255, 255, 0), 3),
]
ONTOLOGY = ["car", "person", "ball", "ghost"]


def _rect(f: int, thing: Thing) -> tuple[int, int, int, int] | None:
    """The object's full rectangle (x1, y1, x2, y2; may reach outside the frame) on frame ``f``, or None."""
    if thing.name == "car":
        return 2 * f, 14, 2 * f + 14, 24
    if thing.name == "person":
        return 56 - 2 * f, 18, 64 - 2 * f, 34
    if thing.name == "ball" and f >= 9:
        y = 4 * (f - 9) - 4
        return 26, y, 32, y + 6
    if thing.name == "ghost" and f in (5, 6):
        return 50, 2, 54, 6
    return None


def render(f: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Frame ``f``'s RGB pixels (H, W, 3) and each visible object's mask (only objects with visible pixels)."""
    pixels = np.zeros((H, W, 3), dtype=np.uint8)
    owner = np.full((H, W), -1, dtype=np.int64)
    for k, thing in sorted(enumerate(THINGS), key=lambda kt: kt[1].z):
        rect = _rect(f, thing)
        if rect is None:
            continue
        x1, y1, x2, y2 = (max(rect[0], 0), max(rect[1], 0), min(rect[2], W), min(rect[3], H))
        if x2 > x1 and y2 > y1:
            pixels[y1:y2, x1:x2] = thing.colour
            owner[y1:y2, x1:x2] = k
    masks = {THINGS[k].name: owner == k for k in range(len(THINGS)) if (owner == k).any()}
    return pixels, masks


def truth(frames: range | list[int] = range(FRAMES)) -> dict[int, dict[str, tuple[float, float, float, float]]]:
    """Frame → object name → visible box (xyxy, pixel edges) on the given frames."""
    out = {}
    for f in frames:
        _, masks = render(f)
        out[f] = {name: tuple(float(v) for v in sv.mask_to_xyxy(m[None])[0] + np.array([0, 0, 1, 1]))
                  for name, m in masks.items()}
    return out


def write_clip(path: str | Path, frames: int = FRAMES, fps: int = FPS, codec: str | None = None,
               loop: bool = False) -> Path:
    """Write the scene's first ``frames`` frames to ``path`` (container from the extension), losslessly; ``loop``:
    the scene again and again (for clips longer than it)."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ext = path.suffix.lower()
    codec = codec or {".webm": "libvpx-vp9", ".avi": "ffv1", ".mkv": "ffv1"}.get(ext, "libx264")
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = W, H
        if codec == "libx264":
            stream.pix_fmt, stream.options = "yuv444p", {"qp": "0"}
        elif codec == "libvpx-vp9":
            stream.pix_fmt, stream.options = "yuv444p", {"lossless": "1"}
        elif codec == "ffv1":
            stream.pix_fmt = "bgr0"
        for f in range(frames):
            pixels, _ = render(f % FRAMES if loop else f)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


class ColourTracksParams(StageParams):
    first_id: int = 0  # chunk-local ids count from here, in the order objects first appear in the chunk
    ghost_score: float = Field(default=0.9, ge=0.0, le=1.0)
    ball_score: float = 0.25  # low: a track_score filter drops the ball
    miscall_person_every: int = 0  # >0: every N-th frame (by position) calls the person a car, at score 0.3
    scramble: bool = False  # chunk-local ids depend on where the chunk starts (not in first-appearance order)
    calls_file: str | None = None  # append one line per call: the positions it was given
    sleep: float = Field(default=0.0, ge=0.0)  # seconds per call (or $VIDEO_SCENE_SLEEP: not in the pipeline hash)


class ColourTracks(Stage):
    """A tracker over one chunk: each colour's pixels are one object (mask, box), numbered by first appearance.

    Scores: car 0.9, person 0.8, ball ``ball_score``, ghost ``ghost_score``; ``track_id`` chunk-local (the loop
    stitches them onto the clip's). On an image (no ``item.frame``) it numbers within the image alone.
    """

    Params = ColourTracksParams
    params: ColourTracksParams
    temporal = True

    def __call__(self, items: list[Item]) -> list[Item]:
        if self.params.calls_file:
            with open(self.params.calls_file, "a") as f:
                f.write(" ".join(str(i.frame.position if i.frame else -1) for i in items) + "\n")
        pause = self.params.sleep or float(os.environ.get("VIDEO_SCENE_SLEEP", "0"))
        if pause:
            time.sleep(pause)
        chunk = items[0].frame.chunk if items and items[0].frame is not None else 0
        scores = {"car": 0.9, "person": 0.8, "ball": self.params.ball_score, "ghost": self.params.ghost_score}
        ids: dict[str, int] = {}
        for item in items:
            pixels = np.asarray(item.image.convert("RGB"), dtype=np.int16)
            rows = []
            for thing in THINGS:
                mask = np.abs(pixels - np.array(thing.colour)).sum(axis=-1) < 60
                if mask.any():
                    rows.append((thing, mask))
            if not rows:
                continue
            position = item.frame.position if item.frame is not None else 0
            names, classes, confidence = [], [], []
            for thing, _ in rows:
                k = len(ids)
                ids.setdefault(thing.name, self.params.first_id + ((5 * k + chunk) % 97 if self.params.scramble else k))
                miscall = (thing.name == "person" and self.params.miscall_person_every
                           and position % self.params.miscall_person_every == 0)
                names.append(thing.name)
                classes.append("car" if miscall else thing.class_name)
                confidence.append(0.3 if miscall else scores[thing.name])
            masks = np.stack([m for _, m in rows])
            det = sv.Detections(
                xyxy=sv.mask_to_xyxy(masks).astype(np.float32) + np.array([0, 0, 1, 1], dtype=np.float32),
                mask=masks,
                confidence=np.array(confidence, dtype=np.float32),
                data={"class_name": np.array(classes, dtype=object), "phrase": np.array(names, dtype=object),
                      "track_id": np.array([float(ids[n]) for n in names])},
            )
            item.labels.add(det, stage=self.name, provenance={"model": "colour-tracks", "task": "track"})
        return items


class ModelColourTracksParams(ColourTracksParams, ModelStageParams):
    """Names a declared model, to exercise the cache of model stages' outputs."""


class ModelColourTracks(ColourTracks):
    """ColourTracks naming a declared model (never loaded), so that its output is cached like a model stage's."""

    Params = ModelColourTracksParams


class NoModel:
    """A model type for ModelColourTracks: loading it is never needed."""

    @classmethod
    def load(cls, spec):
        raise AssertionError("ModelColourTracks never loads its model")


#: ``models:`` declaring the model ModelColourTracks names
MODELS = {"colours": {"type": "video_scene:NoModel", "id": "colours"}}


class ColourBoxes(Stage):
    """A detector for the scene: each colour's bounding box, class and a fixed score, no track ids (what
    ``track_boxes`` seeds from). Scores: car 0.9, person 0.8, ball 0.7, ghost 0.6."""

    def __call__(self, items: list[Item]) -> list[Item]:
        scores = {"car": 0.9, "person": 0.8, "ball": 0.7, "ghost": 0.6}
        for item in items:
            pixels = np.asarray(item.image.convert("RGB"), dtype=np.int16)
            rows = [(t, np.abs(pixels - np.array(t.colour)).sum(axis=-1) < 60) for t in THINGS]
            rows = [(t, m) for t, m in rows if m.any()]
            if not rows:
                continue
            masks = np.stack([m for _, m in rows])
            det = sv.Detections(
                xyxy=sv.mask_to_xyxy(masks).astype(np.float32) + np.array([0, 0, 1, 1], dtype=np.float32),
                confidence=np.array([scores[t.name] for t, _ in rows], dtype=np.float32),
                data={"class_name": np.array([t.class_name for t, _ in rows], dtype=object),
                      "phrase": np.array([t.name for t, _ in rows], dtype=object)},
            )
            item.labels.add(det, stage=self.name, provenance={"model": "colour-boxes", "task": "detect"})
        return items
