"""A scripted "model" for the eval / calibrate tests: it answers, per image file name, exactly the boxes it is told,
so the ground truth built beside it makes AP, precision and recall exact. Used as ``type: eval_scripted:Scripted``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import supervision as sv
from PIL import Image

from autolabel.stage import Item, ModelStageParams, Stage


class ScriptedParams(ModelStageParams):  # names a model, so the run caches its output like a model's
    answers: dict[str, list[list]]  # file name -> [[class, x1, y1, x2, y2, score], ...]
    calls_file: str | None = None  # one line per image seen, to count model calls


class Scripted(Stage):
    Params = ScriptedParams

    def __call__(self, items: list[Item]) -> list[Item]:
        for item in items:
            rows = self.params.answers.get(os.path.basename(item.key), [])
            det = sv.Detections(
                xyxy=np.array([r[1:5] for r in rows], dtype=np.float32).reshape(-1, 4),
                confidence=np.array([r[5] for r in rows], dtype=np.float32),
                data={"class_name": np.array([r[0] for r in rows], dtype=object),
                      "phrase": np.array([r[0] for r in rows], dtype=object)},
            )
            item.labels.add(det, stage=self.name, provenance={"model": "scripted", "task": "test"})
        if self.params.calls_file:
            with open(self.params.calls_file, "a") as f:
                f.writelines(f"{item.key}\n" for item in items)
        return items


def make_images(folder: Path, names: list[str], size: tuple[int, int] = (64, 64)) -> None:
    """Distinct-content PNGs (distinct content hashes) of one size."""
    for i, name in enumerate(names):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, (i * 7 % 256, i * 13 % 256, 90)).save(folder / name)


def pipeline(answers: dict[str, list[list]], threshold: float = 0.0, calls: Path | None = None,
             ontology: object = ("cat", "dog"), **extra: object) -> dict:
    return {
        "name": "eval-test",
        "models": {"m": {"type": "florence2", "id": "unused/the-scripted-stage-loads-no-weights"}},
        "ontology": list(ontology) if not isinstance(ontology, dict) else ontology,
        "stages": [{"type": "eval_scripted:Scripted", "name": "model", "model": "m", "answers": answers,
                    "calls_file": str(calls) if calls else None},
                   {"type": "score_threshold", "threshold": threshold}],
        "exports": [{"format": "coco"}],
    } | extra


def coco_gt(path: Path, boxes: dict[str, list[list]], size: tuple[int, int] = (64, 64),
            names: dict[str, int] | None = None) -> Path:
    """A COCO ground-truth file: ``boxes`` file name -> [[class, x1, y1, x2, y2], ...]."""
    import json

    names = names or {"cat": 1, "dog": 2}
    images, anns = [], []
    for i, (file, rows) in enumerate(boxes.items(), 1):
        images.append({"id": i, "file_name": file, "width": size[0], "height": size[1]})
        for c, x1, y1, x2, y2 in rows:
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": names[c],
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    data = {"images": images, "annotations": anns, "categories": [{"id": v, "name": k} for k, v in names.items()]}
    path.write_text(json.dumps(data))
    return path
