"""Every task ``autolabel train`` teaches goes through the whole loop: its pairs, a step, validation through the
``florence2`` stage and autolabel's AP, a model folder (one epoch of a tiny model: the plumbing, not the learning)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
from PIL import Image
from train_fixtures import built

from autolabel.train.api import train

LINES = [("STOP", [10, 10, 60, 30]), ("EXIT 4", [20, 50, 110, 70])]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Two images: one dog and one cat box each, or two OCR lines (COCO ``attributes.text``)."""
    tmp = tmp_path_factory.mktemp("tasks")
    (tmp / "images").mkdir()
    coco = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "dog"}, {"id": 2, "name": "cat"},
                                                            {"id": 3, "name": "text"}]}
    ocr = json.loads(json.dumps(coco))
    for k in range(2):
        Image.new("RGB", (160, 120), (200 * k, 80, 40)).save(tmp / "images" / f"{k}.png")
        for doc in (coco, ocr):
            doc["images"].append({"id": k + 1, "file_name": f"{k}.png", "width": 160, "height": 120})
        for cat, box in ((1, [5, 5, 60, 50]), (2, [70, 40, 150, 110])):
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": k + 1, "category_id": cat,
                                        "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]})
        for text, (x1, y1, x2, y2) in LINES:
            ocr["annotations"].append({"id": len(ocr["annotations"]) + 1, "image_id": k + 1, "category_id": 3,
                                       "bbox": [x1, y1, x2 - x1, y2 - y1], "attributes": {"text": text}})
    (tmp / "coco.json").write_text(json.dumps(coco))
    (tmp / "ocr.json").write_text(json.dumps(ocr))
    return tmp


@pytest.mark.parametrize("task, gt, pairs", [
    ("ovd", "coco.json", 4),  # one question per image and class
    ("grounding", "coco.json", 2),
    ("region_category", "coco.json", 4),  # one per box
    ("ocr_regions", "ocr.json", 2),
])
def test_each_task_trains_validates_and_writes_a_model(data, tmp_path, task, gt, pairs):
    options = {"classes": ["dog", "cat"]} if gt == "coco.json" else {}
    summary = train(str(built(width=16, heads=2)), data / gt, tmp_path / "out", data / "images", task=task,
                    mode="full", epochs=1, batch_size=4, val_fraction=0, eval_beams=1, progress=False, notes=None,
                    **options)
    lineage = summary.lineage
    assert lineage["task"] == task and lineage["data"]["pairs"] == {"train": pairs, "val": 0}
    validation = summary.report["history"][-1]["val"]
    assert set(validation) == {"ap", "ap50", "per_class"} and 0.0 <= validation["ap"] <= 1.0
    assert sorted(summary.report["predictions"]) == ["0.png", "1.png"]
    if task == "region_category":  # the boxes it names are the ground truth's own
        rows = summary.report["predictions"]["0.png"]
        assert sorted(r[1:5] for r in rows) == [[5.0, 5.0, 60.0, 50.0], [70.0, 40.0, 150.0, 110.0]]
    assert (tmp_path / "out" / "lineage.json").is_file() and (tmp_path / "out" / "model.safetensors").is_file()
