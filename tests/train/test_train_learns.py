"""``autolabel train`` end to end: a tiny Florence-2 built from the real checkpoint's tokenizer and processor learns
eight images with known boxes (AP from 0 to 1.0, measured by ``autolabel eval`` on what a pipeline labels with the
trained folder), answers in the pipeline as it did in training, and its lineage reaches run.json and every label."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
from train_fixtures import CLASSES, built, write_dataset

from autolabel.cli import main
from autolabel.config import ModelSpec
from autolabel.errors import ExitCode
from autolabel.pipeline import Pipeline
from autolabel.quality.api import evaluate_run
from autolabel.store import Store
from autolabel.models.lineage import summary

PIPELINE = """
version: 1
models:
  florence:
    type: florence2
    id: {model}
    generation: {{num_beams: 1, max_new_tokens: 16}}
ontology: [dog, cat]
stages:
  - {{name: detect, type: florence2, model: florence, task: od}}
"""


def label(model: Path, images: Path, out: Path, tmp: Path) -> Path:
    pipeline = tmp / f"{out.name}.yaml"
    pipeline.write_text(PIPELINE.format(model=model))
    assert main(["run", str(pipeline), "-i", str(images), "-o", str(out), "--no-progress"]) == ExitCode.OK
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("learn")
    base = built(width=64, heads=4)
    gt = write_dataset(tmp / "data")
    images = tmp / "data" / "images"
    before = evaluate_run(label(base, images, tmp / "before", tmp), gt)
    out = tmp / "trained"
    code = main(["train", "--model", str(base), "--gt", str(gt), "--images", str(images), "-o", str(out), "--full",
                 "--lr", "1e-2", "--epochs", "60", "--batch-size", "8", "--val-fraction", "0", "--eval-every", "10",
                 "--patience", "1", "--eval-beams", "1", "--no-progress"])
    assert code == ExitCode.OK
    after_run = label(out, images, tmp / "after", tmp)
    return {"tmp": tmp, "base": base, "gt": gt, "before": before, "out": out, "after_run": after_run,
            "after": evaluate_run(after_run, gt)}


def test_a_tiny_florence2_learns_eight_images_from_ap_0_to_1(trained):
    assert trained["before"]["overall"]["ap"] == 0.0  # a random model's boxes match nothing
    assert trained["after"]["overall"]["ap"] == 1.0
    assert trained["after"]["overall"]["tp"] == 8 and trained["after"]["overall"]["fp"] == 0
    report = json.loads((trained["out"] / "train.json").read_text())
    vals = [h["val"]["ap"] for h in report["history"] if "val" in h]
    result = report["lineage"]["result"]
    assert result["val_ap"] == 1.0 == max(vals) and vals[0] < 1.0  # it got there by learning
    assert result["stopped_early"] and result["epochs"] < 60  # patience 1: stopped at the first validation no better
    assert result["best_epoch"] == 10 * (vals.index(1.0) + 1) < result["epochs"]


def test_the_trained_folder_answers_in_a_pipeline_as_it_did_in_training(trained):
    report = json.loads((trained["out"] / "train.json").read_text())
    with Store(trained["after_run"]) as store:
        got = {}
        for row in store.images():
            boxes = row["labels"]["boxes"]
            got[row["rel_path"]] = sorted([c, *xyxy] for c, xyxy in zip(boxes["data"]["class_name"], boxes["xyxy"]))
    want = {name: sorted(p[:5] for p in rows) for name, rows in report["predictions"].items()}
    assert got == want and len(got) == 8


def test_lineage_reaches_run_json_and_every_labels_provenance(trained):
    lineage = json.loads((trained["out"] / "lineage.json").read_text())
    assert lineage["base"] == {"id": str(trained["base"].resolve()), "revision": None}
    assert lineage["task"] == "od" and lineage["mode"] == "full" and lineage["saved_as"] == "merged"
    assert lineage["data"]["gt"] == str(trained["gt"]) and lineage["data"]["classes"] == CLASSES
    assert lineage["data"]["images"] == {"train": 8, "val": 0} and len(lineage["data"]["digest"]) == 16
    assert lineage["settings"]["lr"] == 0.01 and lineage["settings"]["mode"] == "full"
    run = json.loads((trained["after_run"] / "run.json").read_text())
    model = run["versions"]["models"]["florence"]
    assert model["revision"] == lineage["weights"] and model["lineage"] == summary(lineage)
    with Store(trained["after_run"]) as store:
        provenance = [row["labels"]["provenance"]["detect"] for row in store.images()]
    assert len(provenance) == 8
    assert all(p["lineage"] == summary(lineage) and p["revision"] == lineage["weights"] for p in provenance)


def test_a_retrained_folder_relabels_instead_of_reading_the_cache(trained, tmp_path):
    """The pipeline's hash covers the trained weights' digest: the same folder with other weights is another model."""
    spec = ModelSpec(type="florence2", id=str(trained["out"]))
    lineage = json.loads((trained["out"] / "lineage.json").read_text())
    assert spec.identity()["weights"] == lineage["weights"]
    first = Pipeline.from_yaml(trained["tmp"] / "after.yaml").spec.hash
    copy = tmp_path / "retrained"
    copy.mkdir()
    (copy / "lineage.json").write_text(json.dumps(lineage | {"weights": "0" * 16}))
    (trained["tmp"] / "copy.yaml").write_text(PIPELINE.format(model=copy))
    other = Pipeline.from_yaml(trained["tmp"] / "copy.yaml").spec.hash
    (trained["tmp"] / "plain.yaml").write_text(PIPELINE.format(model=trained["base"]))
    assert first != other
    assert "weights" not in ModelSpec(type="florence2", id=str(trained["base"])).identity()  # plain folders: as before
