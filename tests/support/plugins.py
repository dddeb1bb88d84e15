"""Stages used by the core tests, loaded the way users load their own: ``type: plugins:CenterBox``.

They stand in for a model where the test is about the runner, not the model: each emits a box derived from the
image itself (so a wrong size or orientation shows), and can be told to fail or to be slow.
"""

from __future__ import annotations

import os
import time

import numpy as np
import supervision as sv
from pydantic import Field

from autolabel.stage import Item, ModelStageParams, Stage, StageParams


class CenterBoxParams(StageParams):
    label: str
    fail_on: str | None = None  # fail for images whose path contains this
    sleep: float = Field(default=0.0, ge=0.0)  # seconds per batch
    calls_file: str | None = None  # append one line per image seen (to count model calls)


class CenterBox(Stage):
    """One box over the middle half of each image, scored by the image's mean brightness (0..1)."""

    Params = CenterBoxParams

    def __call__(self, items: list[Item]) -> list[Item]:
        if self.params.sleep:
            time.sleep(self.params.sleep)
        for item in items:
            if self.params.fail_on and self.params.fail_on in item.key:
                raise RuntimeError(f"cannot label {os.path.basename(item.key)}")
            w, h = item.image.size
            score = float(np.asarray(item.image, dtype=np.float32).mean() / 255.0)
            det = sv.Detections(
                xyxy=np.array([[w / 4, h / 4, 3 * w / 4, 3 * h / 4]], dtype=np.float32),
                confidence=np.array([score], dtype=np.float32),
                data={"class_name": np.array([self.params.label], dtype=object),
                      "phrase": np.array([self.params.label], dtype=object)},
            )
            item.labels.add(det, stage=self.name, provenance={"model": "center-box", "task": "test"})
        if self.params.calls_file:
            with open(self.params.calls_file, "a") as f:
                f.writelines(f"{item.key}\n" for item in items)
        return items


class ModelCenterBoxParams(CenterBoxParams, ModelStageParams):
    """Names a declared model, to exercise model references (the box itself needs none)."""


class ModelCenterBox(CenterBox):
    """CenterBox that names a model: config validation treats it as a model stage."""

    Params = ModelCenterBoxParams


class BrokenModel:
    """A model type whose weights cannot be found (what a missing checkpoint looks like)."""

    @classmethod
    def load(cls, spec):
        raise OSError(f"no file named model.safetensors in {spec.id}")


class UsesModel(Stage):
    """A stage that loads its model on first call."""

    Params = ModelStageParams

    def __call__(self, items: list[Item]) -> list[Item]:
        self.model  # noqa: B018 — loading is the point
        return items


class RichLabelsParams(StageParams):
    caption: bool = True  # also emit an image-level caption and a page of OCR text


class RichLabels(Stage):
    """Every kind of label an export handles, placed from the image's size (so orientation mistakes show).

    Per image, in this order: a ``cat`` box with a two-part mask (score 0.9); a ``dog`` box with a triangle
    polygon, flagged for review (reason ``test_flag``, score 0.6); an OCR-like ``text`` box reading ``HELLO``
    (score 0.8); a ``cat`` box dropped by a filter (reason ``low_score``, score 0.1); a caption and an OCR page.
    Ontology needed: cat, dog, text.
    """

    Params = RichLabelsParams

    def __call__(self, items: list[Item]) -> list[Item]:
        from autolabel.labels import Text

        for item in items:
            w, h = item.image.size
            at = lambda k, size: float(int(size * k / 8))  # noqa: E731 — whole pixels, k eighths of the side
            masks = np.zeros((4, h, w), dtype=bool)
            masks[0, int(at(1, h)) : int(at(3, h)), int(at(1, w)) : int(at(3, w))] = True
            masks[0, int(at(5, h)) : int(at(7, h)), int(at(5, w)) : int(at(7, w))] = True
            triangle = np.array([[at(4, w), at(1, h)], [at(7, w), at(7, h)], [at(1, w), at(7, h)]], dtype=np.float32)
            polygon = np.empty(4, dtype=object)
            polygon[:] = [None, triangle, None, None]
            det = sv.Detections(
                xyxy=np.array([
                    [at(1, w), at(1, h), at(7, w), at(7, h)],
                    [at(1, w), at(1, h), at(7, w), at(7, h)],
                    [at(1, w), at(4, h), at(4, w), at(5, h)],
                    [0.0, 0.0, at(2, w), at(2, h)],
                ], dtype=np.float32),
                mask=masks,
                confidence=np.array([0.9, 0.6, 0.8, 0.1], dtype=np.float32),
                data={
                    "class_name": np.array(["cat", "dog", "text", "cat"], dtype=object),
                    "phrase": np.array(["a cat", "dog", "HELLO", "cat"], dtype=object),
                    "status": np.array(["kept", "flagged", "kept", "dropped"], dtype=object),
                    "reason": np.array(["", "test_flag", "", "low_score"], dtype=object),
                    "text": np.array(["", "", "HELLO", ""], dtype=object),
                    "has_mask": np.array([True, False, False, False]),
                    "polygon": polygon,
                },
            )
            item.labels.add(det, stage=self.name, provenance={"model": "rich-labels", "task": "test"})
            if self.params.caption:
                item.labels.texts.append(Text("caption", f"a test image of {w}x{h} pixels", 0.7, self.name))
                item.labels.texts.append(Text("ocr", "HELLO", 0.8, self.name))
        return items


#: The ontology RichLabels needs, and a pipeline running CenterBox then RichLabels (what the export tests label).
EXPORT_ONTOLOGY = ["cat", "dog", "text"]


def export_pipeline(**extra: object) -> dict:
    return {
        "name": "export-test", "ontology": list(EXPORT_ONTOLOGY),
        "stages": [{"type": "plugins:CenterBox", "label": "cat"}, {"type": "plugins:RichLabels"}],
    } | extra


def make_export_images(folder: str | os.PathLike) -> None:
    """The export tests' inputs: a square, a wide and a tall (in a sub-folder) PNG, and an EXIF-rotated JPEG.

    ``rotated.jpg`` is stored 80x40, red on its left half and blue on its right, with EXIF orientation 6: displayed
    (rotated 90° clockwise) it is 40x80, red on top. Colour edges lie on 8-pixel block edges and chroma is not
    subsampled, so every JPEG block is flat and decodes exactly.
    """
    from pathlib import Path

    from PIL import Image

    root = Path(folder)
    (root / "sub").mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 64), (200, 100, 50)).save(root / "square.png")
    Image.new("RGB", (96, 48), (20, 100, 250)).save(root / "wide.png")
    Image.new("RGB", (30, 50), (50, 200, 50)).save(root / "sub" / "tall.png")
    stored = np.zeros((40, 80, 3), dtype=np.uint8)
    stored[:, :40] = (255, 0, 0)
    stored[:, 40:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(root / "rotated.jpg", quality=95, subsampling=0, exif=exif)
