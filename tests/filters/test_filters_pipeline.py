"""Filters in a real pipeline run: decisions reach the run store and the COCO export carries flag reasons."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from autolabel import Pipeline
from autolabel.store import Store


def test_pipeline_records_decisions_in_store_and_coco(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    Image.fromarray(np.full((40, 80, 3), 200, dtype=np.uint8)).save(tmp_path / "in" / "bright.png")
    Image.fromarray(np.full((40, 80, 3), 50, dtype=np.uint8)).save(tmp_path / "in" / "dark.png")
    pipeline = Pipeline.from_dict({
        "ontology": ["thing"],
        "stages": [
            {"type": "plugins:CenterBox", "name": "box", "label": "thing"},  # the middle half: 25 % of the image
            {"type": "score_threshold", "threshold": 0.5},  # scores are brightness: 0.78 and 0.2
            {"type": "box_area", "max_area": 0.2, "action": "flag"},
        ],
        "exports": [{"format": "coco"}],
    })
    summary = pipeline.run(input=tmp_path / "in", output=tmp_path / "out")
    assert summary.counts["labeled"] == 2

    with Store(tmp_path / "out") as store:
        decided = {row["rel_path"]: row["labels"]["boxes"]["data"] for row in store.images()}
    assert (decided["bright.png"]["status"], decided["bright.png"]["reason"]) == (["flagged"], ["too_large"])
    assert (decided["dark.png"]["status"], decided["dark.png"]["reason"]) == (["dropped"], ["low_score"])

    coco = json.loads((tmp_path / "out" / "coco.json").read_text())
    files = {im["id"]: im["file_name"] for im in coco["images"]}
    (ann,) = coco["annotations"]  # the dropped box is not exported
    assert files[ann["image_id"]] == "bright.png"
    assert ann["bbox"] == [20.0, 10.0, 40.0, 20.0]
    assert ann["attributes"]["status"] == "flagged" and ann["attributes"]["reason"] == "too_large"
