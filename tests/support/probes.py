"""Stages that make a run's mistakes visible, loaded like users' own: ``type: probes:MarkerBox``.

* :class:`MarkerBox` boxes the image's red marker, so a wrong orientation, a wrong image in a batch slot or a
  stale cached answer shows in the box itself.
* :class:`KillAt` ends its own process (``os._exit``, SIGKILL) or signals it (SIGTERM, SIGINT, twice) when it
  meets a chosen image, so tests know exactly which batch was in flight.

The store-side kill points (inside a commit, right after one) live in :mod:`killpoints`.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import supervision as sv
from PIL import Image

from autolabel.stage import Item, ModelStageParams, Stage, StageParams

EXIT_CODE = 86  # what os._exit kills exit with: tells "killed on purpose" from any other crash


class MarkerBoxParams(StageParams):
    label: str
    calls_file: str | None = None  # one line per image seen: counts model calls
    fail_while: str | None = None  # while this file exists, fail on the images it names (one basename a line)


class MarkerBox(Stage):
    """One box around the red pixels (R > 128, G < 128), scored by the share of the image they cover."""

    Params = MarkerBoxParams

    def __call__(self, items: list[Item]) -> list[Item]:
        failing = self.params.fail_while
        names = set(Path(failing).read_text().split()) if failing and os.path.exists(failing) else set()
        for item in items:
            if os.path.basename(item.key) in names:
                raise RuntimeError(f"told to fail on {os.path.basename(item.key)}")
        if self.params.calls_file:
            with open(self.params.calls_file, "a") as f:
                f.writelines(f"{os.path.basename(item.key)}\n" for item in items)
        for item in items:
            rgb = np.asarray(item.image)
            rows, cols = np.nonzero((rgb[..., 0] > 128) & (rgb[..., 1] < 128))
            if not len(rows):
                continue
            det = sv.Detections(
                xyxy=np.array([[cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]], dtype=np.float32),
                confidence=np.array([len(rows) / rgb[..., 0].size], dtype=np.float32),
                data={"class_name": np.array([self.params.label], dtype=object),
                      "phrase": np.array([self.params.label], dtype=object)},
            )
            item.labels.add(det, stage=self.name, provenance={"model": "marker-box", "task": "test"})
        return items


class ModelMarkerBoxParams(MarkerBoxParams, ModelStageParams):
    """Names a declared model, so the stage is a model stage: its output is cached by content."""


class ModelMarkerBox(MarkerBox):
    Params = ModelMarkerBoxParams


def marker_image(width: int, height: int, box: tuple[int, int, int, int]) -> Image.Image:
    """A white image with a red rectangle ``box`` = (x1, y1, x2, y2), exclusive ends: MarkerBox's answer."""
    rgb = np.full((height, width, 3), 255, dtype=np.uint8)
    x1, y1, x2, y2 = box
    rgb[y1:y2, x1:x2] = (230, 20, 20)
    return Image.fromarray(rgb)


def marker_box(i: int) -> tuple[int, int, int, int]:
    """Where image ``i`` of a test set has its marker: every image a different place and size."""
    return (1 + 3 * (i % 9), 2 + 2 * (i % 7), 5 + 3 * (i % 9) + i % 4, 6 + 2 * (i % 7) + i % 3)


class KillAtParams(StageParams):
    at: str  # the basename of the image that triggers it
    how: str = "exit"  # exit (os._exit) | sigkill | sigterm | sigint | sigint-twice
    once_file: str | None = None  # if set, trigger only while this file does not exist (and create it)


class KillAt(Stage):
    """Passes items through; on meeting image ``at`` ends or signals its own process (in the stage, mid-batch)."""

    Params = KillAtParams

    def __call__(self, items: list[Item]) -> list[Item]:
        if not any(os.path.basename(item.key) == self.params.at for item in items):
            return items
        once = self.params.once_file
        if once is not None:
            if os.path.exists(once):
                return items
            open(once, "w").close()
        how = self.params.how
        if how == "exit":
            os._exit(EXIT_CODE)
        if how == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        if how == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)
        if how in ("sigint", "sigint-twice"):
            os.kill(os.getpid(), signal.SIGINT)
        if how == "sigint-twice":
            time.sleep(0.05)  # the handler runs between bytecodes: let it see the first one
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)  # the second one must interrupt this
            raise AssertionError("the second Ctrl-C did not stop the run")
        return items


def make_marker_images(
    folder: str | os.PathLike, names: list[str], width: int = 40, height: int = 30
) -> dict[str, list[float]]:
    """Save ``names`` (PNGs) with image ``i``'s marker at ``marker_box(i)``; return name → expected COCO bbox."""
    expected = {}
    for i, name in enumerate(names):
        path = Path(folder) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        x1, y1, x2, y2 = marker_box(i)
        marker_image(width, height, (x1, y1, x2, y2)).save(path)
        expected[name] = [float(x1), float(y1), float(x2 - x1), float(y2 - y1)]
    return expected


def coco_boxes(path: str | os.PathLike) -> dict[str, list[list[float]]]:
    """A COCO export as file name → its boxes (each image once, or the assertion says which is twice)."""
    coco = json.loads(Path(path).read_text())
    names = {im["id"]: im["file_name"] for im in coco["images"]}
    assert len(names) == len(set(names.values())), "an image appears twice"
    out: dict[str, list[list[float]]] = {name: [] for name in names.values()}
    for a in coco["annotations"]:
        out[names[a["image_id"]]].append(a["bbox"])
    return out


def calls(path: str | os.PathLike) -> list[str]:
    """The images a stage with ``calls_file: path`` saw, in order (and then forgets them)."""
    if not os.path.exists(path):
        return []
    seen = Path(path).read_text().split()
    os.remove(path)
    return seen
