"""The exports, read by the tools users train with, installed for real: Ultralytics trains on the YOLO datasets;
torchvision's CocoDetection and supervision's DetectionDataset load the COCO file; COCOeval of it against itself.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from plugins import EXPORT_ONTOLOGY, export_pipeline, make_export_images
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from autolabel import Pipeline
from autolabel.exports.splits import split_of

SMALL = 18  # a small first run: an 80/20 split of it leaves val empty for one seed in ~55


def make_images(folder: Path, n: int) -> None:
    """``n`` distinct 64x64 PNGs (noise, so their content hashes differ), big enough for Ultralytics (>= 10 px)."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(folder / f"img{i:02d}.png")


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run over 18 images with YOLO detect and segment exports, and the seed that draws no image for val."""
    from autolabel.store import Store

    root = tmp_path_factory.mktemp("small")
    make_images(root / "in", SMALL)
    Pipeline.from_dict(export_pipeline()).run(input=root / "in", output=root / "out")
    with Store(root / "out") as store:
        hashes = [row["sha256"] for row in store.images(labels=False)]
    fractions = {"train": 0.8, "val": 0.2}
    seed = next(s for s in range(10_000) if all(split_of(h, fractions, s) == "train" for h in hashes))
    exports = [{"format": "yolo", "path": f"yolo_{task}", "task": task, "seed": seed} for task in ("detect", "segment")]
    Pipeline.from_dict(export_pipeline(exports=exports)).run(input=root / "in", output=root / "out")
    return root / "out"


def yolo_labels(root: Path, split: str) -> list[list[str]]:
    return [p.read_text().splitlines() for p in sorted((root / "labels" / split).glob("*.txt"))]


@pytest.mark.parametrize("task", ["detect", "segment"])
def test_the_seed_that_drew_no_val_image_still_fills_val(small: Path, task: str) -> None:
    root = small / f"yolo_{task}"
    train, val = yolo_labels(root, "train"), yolo_labels(root, "val")
    assert (len(train), len(val)) == (SMALL - 1, 1)  # the one image nearest val's interval moved there
    assert len(list((root / "images" / "val").iterdir())) == 1


TRAIN = """
import json, sys
from pathlib import Path
from ultralytics import YOLO

data_yaml, model_yaml, project = sys.argv[1:4]
model = YOLO(model_yaml)
metrics = model.train(data=data_yaml, epochs=1, imgsz=64, batch=8, device="cpu", workers=0, plots=False,
                      amp=False, project=project, name="train", exist_ok=True, verbose=False)
trainer = model.trainer
def read(dataset):
    return [{"cls": [int(c) for c in label["cls"].ravel()], "points": [len(s) for s in label.get("segments", [])]}
            for label in dataset.labels]
print(json.dumps({"fitness": "fitness" in metrics.results_dict, "save_dir": str(trainer.save_dir),
                  "train": read(trainer.train_loader.dataset), "val": read(trainer.test_loader.dataset)}))
"""


def train_one_epoch(data_yaml: Path, model_yaml: str, project: Path, env: dict[str, str]) -> dict[str, Any]:
    """One epoch of a from-scratch model on CPU, offline, at 64 px, in a process of its own (importing ultralytics
    patches ``PIL.Image.open`` for the whole process); returns what its datasets read, per split."""
    env = env | {"YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(project / "config")}
    out = subprocess.run([sys.executable, "-c", TRAIN, str(data_yaml), model_yaml, str(project)], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    trained = json.loads(out.stdout.strip().splitlines()[-1])
    assert trained["fitness"]
    assert (Path(trained["save_dir"]) / "results.csv").is_file()
    assert (Path(trained["save_dir"]) / "weights" / "last.pt").is_file()
    return trained


@pytest.mark.slow
@pytest.mark.parametrize("task, model_yaml", [("detect", "yolov8n.yaml"), ("segment", "yolov8n-seg.yaml")])
def test_ultralytics_trains_an_epoch_on_the_export(
    small: Path, task: str, model_yaml: str, tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    root = small / f"yolo_{task}"
    trained = train_one_epoch(root / "data.yaml", model_yaml, tmp_path, subprocess_env)
    ours = {split: yolo_labels(root, split) for split in ("train", "val")}
    for split in ("train", "val"):
        labels = trained[split]
        assert len(labels) == len(ours[split])  # every image was read, none rejected
        assert sum(len(label["cls"]) for label in labels) == sum(map(len, ours[split]))
        classes = sorted(c for label in labels for c in label["cls"])
        assert classes == sorted(int(line.split()[0]) for lines in ours[split] for line in lines)
    if task == "segment":  # one polygon per instance, as many points as we wrote
        points = sorted(n for label in trained["train"] for n in label["points"])
        assert points == sorted((len(line.split()) - 1) // 2 for lines in ours["train"] for line in lines)


# ---- COCO -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def coco_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The export tests' images (square, wide, tall in a sub-folder, EXIF-rotated) and COCO exports of them."""
    root = tmp_path_factory.mktemp("coco_tools")
    make_export_images(root / "in")
    exports = [{"format": "coco"}, {"format": "coco", "path": "coco_rle.json", "segmentation": "rle"}]
    Pipeline.from_dict(export_pipeline(exports=exports)).run(input=root / "in", output=root / "out")
    return root / "in", root / "out"


def test_torchvision_coco_detection_loads_every_image_and_box(coco_run: tuple[Path, Path]) -> None:
    from torchvision.datasets import CocoDetection

    images, out = coco_run
    doc = json.loads((out / "coco.json").read_text())
    with contextlib.redirect_stdout(io.StringIO()):
        dataset = CocoDetection(root=str(images), annFile=str(out / "coco.json"))
    assert len(dataset) == len(doc["images"]) == 4
    for k, image_id in enumerate(dataset.ids):
        entry = next(i for i in doc["images"] if i["id"] == image_id)
        image, targets = dataset[k]
        # torchvision opens the file as stored; the COCO sizes (and boxes) are of the displayed, EXIF-rotated image
        stored = image.size[::-1] if entry["file_name"] == "rotated.jpg" else image.size
        assert stored == (entry["width"], entry["height"])
        ours = [a for a in doc["annotations"] if a["image_id"] == image_id]
        assert [t["bbox"] for t in targets] == [a["bbox"] for a in ours] and len(ours) == 4


def test_supervision_loads_the_coco_export(coco_run: tuple[Path, Path]) -> None:
    import supervision as sv

    images, out = coco_run
    doc = json.loads((out / "coco.json").read_text())
    dataset = sv.DetectionDataset.from_coco(images_directory_path=str(images), annotations_path=str(out / "coco.json"),
                                            force_masks=True)
    assert dataset.classes == EXPORT_ONTOLOGY
    assert len(dataset) == 4
    by_name = {i["file_name"]: i for i in doc["images"]}
    for path, _, detections in dataset:
        entry = by_name[Path(path).relative_to(images).as_posix()]
        ours = [a for a in doc["annotations"] if a["image_id"] == entry["id"]]
        xywh = np.array([a["bbox"] for a in ours])
        np.testing.assert_allclose(detections.xyxy, np.c_[xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], atol=1e-6)
        assert detections.class_id.tolist() == [a["category_id"] - 1 for a in ours]
        assert detections.mask.shape == (len(ours), entry["height"], entry["width"])
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(str(out / "coco.json"))
        for mask, ann in zip(detections.mask, ours):  # supervision fills polygons with OpenCV, edges included
            reference = coco.annToMask(ann).astype(bool)
            assert (mask & reference).sum() / (mask | reference).sum() > 0.75


@pytest.mark.parametrize("name", ["coco.json", "coco_rle.json"])
def test_cocoeval_of_the_export_against_itself_is_1(coco_run: tuple[Path, Path], name: str) -> None:
    _, out = coco_run
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(out / name))
        # each annotation as a detection: its mask as RLE (what loadRes reads), its score (all known here)
        detections = [a | {"segmentation": gt.annToRLE(a)} for a in gt.dataset["annotations"]]
        assert all(a["iscrowd"] == 0 for a in gt.dataset["annotations"])  # nothing COCOeval would ignore
        dt = gt.loadRes(detections)
        for iou_type in ("bbox", "segm"):
            evaluation = COCOeval(gt, dt, iou_type)
            evaluation.evaluate()
            evaluation.accumulate()
            evaluation.summarize()
            assert evaluation.stats[0] == pytest.approx(1.0) and evaluation.stats[8] == pytest.approx(1.0)  # AP, AR@100
