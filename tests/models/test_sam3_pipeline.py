"""pipelines/sam3.yaml as a user runs it: facebook/sam3 by hub id from the cache (the tiny checkpoint built from its
real files), offline; the SAM 3 filters, the three exports with masks; then calibrate per class on the SAM 3 score
and the report that shows it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from real_checkpoints import CHECKPOINTS, hub_cache, real
from tiny_models import noise_image

from autolabel import Pipeline
from autolabel.cli import main
from autolabel.errors import ExitCode
from autolabel.records import from_record
from autolabel.store import Store

PIPELINE = Path(__file__).parents[2] / "pipelines" / "sam3.yaml"
COMMIT = "3c879f39826c281e95690f02c7821c4de09afae7"
#: the tiny checkpoint's scores are lower than the real model's: candidates from 0.2, the operating point 0.55
OVERRIDES = ["stages.concepts.threshold=0.2", "stages.concepts.max_instances=6", "stages.score.threshold=0.55"]


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub_cache(cache, CHECKPOINTS["sam3"], real("sam3"), COMMIT)
    return cache


@pytest.mark.slow
def test_the_sam3_pipeline_labels_every_class_with_masks_into_coco_yolo_and_label_studio_then_calibrates(
    tmp_path, offline_hub, capsys
):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for k in range(4):
        noise_image(96 + 8 * k, 64, seed=10 + k).save(inputs / f"img{k}.png")
    out = tmp_path / "out"
    summary = Pipeline.from_yaml(PIPELINE, OVERRIDES).run(input=inputs, output=out)
    assert summary.status == "ok" and summary.counts["labeled"] == 4
    run = json.loads((out / "run.json").read_text())
    assert run["versions"]["models"]["sam3"] == {"type": "sam3", "id": "facebook/sam3", "revision": COMMIT}

    with Store(out) as store:
        rows = {Path(r["rel_path"]).name: from_record(r["labels"]) for r in store.images()}
    det = rows["img0.png"].detections
    assert set(det.data["class_name"]) == {"person", "car", "truck", "dog"}  # every class of the ontology
    assert det.data["has_mask"].all() and (det.confidence >= 0.2).all()
    assert np.allclose(det.confidence, det.data["query_score"] * det.data["presence_score"], rtol=1e-5)
    reasons = {r for labels in rows.values() for r in labels.detections.data["reason"]}
    assert {"low_score", "mask_nms"} <= reasons  # the operating point and the cross-class duplicates decided
    kept = det.data["status"] == "kept"
    assert kept.any() and len(set(det.data["class_name"][kept])) >= 2

    # exports: COCO polygons, YOLO segment lines, Label Studio brush masks — kept rows only
    n_kept = sum(int((labels.detections.data["status"] != "dropped").sum()) for labels in rows.values())
    coco = json.loads((out / "coco.json").read_text())
    assert len(coco["annotations"]) == n_kept and all(a["segmentation"] for a in coco["annotations"])
    assert {c["name"] for c in coco["categories"]} == {"person", "car", "truck", "dog"}
    lines = [line.split() for f in (out / "yolo" / "labels").rglob("*.txt") for line in f.read_text().splitlines()]
    assert len(lines) == n_kept and all(len(parts) > 5 and len(parts) % 2 == 1 for parts in lines)  # polygons
    tasks = json.loads((out / "labelstudio_tasks.json").read_text())
    brushes = [r for t in tasks for p in t["predictions"] for r in p["result"] if r["type"] == "brushlabels"]
    assert len(brushes) == n_kept

    # calibrate per class on the SAM 3 score: ground truth = the car boxes scoring at least their median
    cars = [(name, box, score) for name, labels in rows.items() for box, score, c, s, why in zip(
        labels.detections.xyxy, labels.detections.confidence, labels.detections.data["class_name"],
        labels.detections.data["status"], labels.detections.data["reason"])
        if c == "car" and (s != "dropped" or why == "low_score")]  # calibrate's candidates
    car_scores = sorted(s for _, _, s in cars)
    median = car_scores[len(car_scores) // 2]
    images = [{"id": i, "file_name": name, "width": 96 + 8 * i, "height": 64} for i, name in
              enumerate(sorted(rows))]
    ids = {im["file_name"]: im["id"] for im in images}
    anns = [{"id": k + 1, "image_id": ids[name], "category_id": 2, "bbox": [float(b[0]), float(b[1]),
             float(b[2] - b[0]), float(b[3] - b[1])], "area": float((b[2] - b[0]) * (b[3] - b[1])), "iscrowd": 0}
            for k, (name, b, s) in enumerate(cars) if s >= median]
    categories = [{"id": i, "name": n} for i, n in enumerate(["person", "car", "truck", "dog"], 1)]
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"images": images, "annotations": anns, "categories": categories}))
    capsys.readouterr()
    code = main(["calibrate", str(out), "--gt", str(gt), "--target-precision", "0.5", "--unreached", "drop"])
    assert code == ExitCode.OK, capsys.readouterr().err
    report = json.loads((out / "calibration.json").read_text())
    assert report["stage"] == "score"
    car = report["per_class"]["car"]
    assert car["status"] == "ok" and car["threshold"] in {float(s) for _, _, s in cars}  # a SAM 3 score of a car
    thresholds = yaml.safe_load((out / "thresholds.yaml").read_text())
    assert thresholds["stages.score.per_class.car"] == car["threshold"]
    assert thresholds["stages.score.per_class.dog"] == 1.0  # no dog in the ground truth: dropped (--unreached)

    assert main(["report", str(out)]) == ExitCode.OK
    html = (out / "report" / "index.html").read_text()
    assert '<section id="calibration"><h2>Calibrated thresholds</h2>' in html
    assert "SAM 3 score = query_score × presence_score" in html
    assert 'data-class="car"' in html and "scores of car" in html
