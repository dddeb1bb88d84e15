"""What ``autolabel train`` does with inputs it cannot use: every kind counted and reported in one line, the rest
trained on; nothing to train on, and bad options, are one-line errors. And every ground-truth format ``eval --gt``
reads (and a run's output folder) gives the same training examples."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from autolabel.cli import main
from autolabel.errors import ExitCode
from autolabel.train.data import load

PREFIX = "autolabel: train: "


def coco(folder: Path, images: list[tuple[str, tuple[int, int], list[tuple[str, list[float]]]]],
         classes=("dog", "cat", "bird"), write=True) -> Path:
    """A COCO file for ``images`` (name, size, [(class, xyxy)]) and, with ``write``, the image files."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    data = {"images": [], "annotations": [], "categories": [{"id": i + 1, "name": c} for i, c in enumerate(classes)]}
    for k, (name, size, boxes) in enumerate(images):
        if write:
            Image.new("RGB", size, (40 * k % 255, 90, 200)).save(folder / "images" / name)
        data["images"].append({"id": k + 1, "file_name": name, "width": size[0], "height": size[1]})
        for cls, (x1, y1, x2, y2) in boxes:
            data["annotations"].append({"id": len(data["annotations"]) + 1, "image_id": k + 1,
                                        "category_id": classes.index(cls) + 1, "bbox": [x1, y1, x2 - x1, y2 - y1]})
    path = folder / "coco.json"
    path.write_text(json.dumps(data))
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    pytest.importorskip("torch")
    from train_fixtures import built

    return str(built(width=16, heads=2))


def test_inputs_that_cannot_be_used_are_counted_in_one_line_each_and_the_rest_trains(model, tmp_path, capsys):
    size = (200, 100)
    gt = coco(tmp_path, [
        ("ok.png", size, [("dog", [10, 10, 60, 60])]),
        ("bird.png", size, [("cat", [10, 10, 60, 60]), ("bird", [70, 10, 120, 60])]),
        ("edge.png", size, [("dog", [150, 50, 260, 140])]),
        ("out.png", size, [("dog", [300, 10, 350, 60]), ("cat", [10, 10, 50, 50])]),
        ("gone.png", size, [("dog", [10, 10, 60, 60])]),
        ("crowd.png", size, [("dog", [10, 10, 40, 40]), ("cat", [50, 10, 90, 40]), ("dog", [100, 10, 150, 40])]),
        ("wrong_size.png", size, []),
    ])
    (tmp_path / "images" / "gone.png").unlink()
    Image.new("RGB", (100, 200)).save(tmp_path / "images" / "wrong_size.png")  # rotated against what COCO says
    code = main(["train", "--model", model, "--gt", str(gt), "--images", str(tmp_path / "images"), "-o",
                 str(tmp_path / "out"), "--classes", "dog,cat", "--max-target-tokens", "12", "--full", "--epochs", "1",
                 "--val-fraction", "0", "--eval-beams", "1", "--no-progress"])
    assert code == ExitCode.OK
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith(PREFIX)]
    assert lines[:-1] == [PREFIX + line for line in [
        "images missing or unreadable: 1, left out (e.g. gone.png: not found); check --images and the files",
        "images whose size differs from the ground truth's: 1, left out (e.g. wrong_size.png: 200x100 vs 100x200); "
        "fix the ground truth's width/height, or the EXIF orientation of the files",
        "boxes of classes outside the ontology: 1, left out (e.g. 'bird'); add the classes with --classes, or map "
        "them to classes in the pipeline's ontology",
        "boxes partly outside the image: 1, clipped to the image (e.g. edge.png); fix the ground truth if they are "
        "wrong",
        "boxes with nothing inside the image (or no area): 1, left out (e.g. out.png); fix the ground truth",
        "answers longer than the model's maximum (12 tokens): 1, left out (e.g. crowd.png: 15 tokens); raise "
        "--max-target-tokens up to the model's limit, or split crowded images",
    ]]
    assert lines[-1].startswith(PREFIX + "1 epochs, 1 steps;")
    lineage = json.loads((tmp_path / "out" / "lineage.json").read_text())
    assert lineage["data"]["pairs"] == {"train": 4, "val": 0}  # ok, bird, edge, out
    assert {k: v["count"] for k, v in lineage["data"]["left_out"].items()} == {
        "missing_image": 1, "size_mismatch": 1, "outside_ontology": 1, "clipped": 1, "outside_image": 1, "too_long": 1}


def test_an_empty_set_is_one_line_and_exit_2(model, tmp_path, capsys):
    gt = coco(tmp_path, [])
    args = ["train", "--model", model, "--gt", str(gt), "-o", str(tmp_path / "out"), "--no-progress"]
    assert main(args) == ExitCode.CONFIG
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"autolabel: error: --gt {gt}: nothing to train on, no usable image left (the ground truth lists "
                   "no image)"]
    gt = coco(tmp_path, [("a.png", (64, 64), [("dog", [1, 1, 30, 30])])], write=False)
    assert main(args) == ExitCode.CONFIG
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"autolabel: error: --gt {gt}: nothing to train on, no usable image left (images missing or "
                   "unreadable: 1, left out (e.g. a.png: not found); check --images and the files)"]
    assert not (tmp_path / "out" / "lineage.json").exists()


def test_no_box_of_the_ontologys_classes_is_nothing_to_learn(model, tmp_path, capsys):
    gt = coco(tmp_path, [("a.png", (64, 64), [("bird", [1, 1, 30, 30])])])
    assert main(["train", "--model", model, "--gt", str(gt), "-o", str(tmp_path / "out"), "--classes", "dog",
                 "--no-progress"]) == ExitCode.CONFIG
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"autolabel: error: --gt {gt}: nothing to train on, no box of the classes dog (boxes of "
                       "classes outside the ontology: 1, left out (e.g. 'bird'); add the classes with --classes, or "
                       "map them to classes in the pipeline's ontology)")


@pytest.mark.parametrize("flag, value, line", [
    ("--lr", "-1", "--lr: input should be greater than 0 (got -1.0)"),
    ("--epochs", "0", "--epochs: input should be greater than or equal to 1 (got 0)"),
    ("--val-fraction", "0.95", "--val-fraction: input should be less than or equal to 0.9 (got 0.95)"),
    ("--max-target-tokens", "5000", "--max-target-tokens: this model writes at most 1022 answer tokens (got 5000)"),
])
def test_an_option_out_of_range_is_one_line_naming_the_flag(model, tmp_path, capsys, flag, value, line):
    gt = coco(tmp_path, [("a.png", (64, 64), [("dog", [1, 1, 30, 30])])])
    code = main(["train", "--model", model, "--gt", str(gt), "-o", str(tmp_path / "out"), flag, value,
                 "--no-progress"])
    assert code == ExitCode.CONFIG
    assert capsys.readouterr().err.strip().splitlines() == [f"autolabel: error: {line}"]


def test_an_image_over_the_pixel_limit_counts_as_unreadable(tmp_path):
    gt = coco(tmp_path, [("big.png", (300, 300), [("dog", [1, 1, 30, 30])]), ("small.png", (20, 20), [])])
    dataset = load(gt, tmp_path / "images", max_pixels=10_000)
    assert [e.name for e in dataset.examples] == ["small.png"]
    assert dataset.tally.examples["missing_image"][0].startswith("big.png: too large: 300x300 = 90,000 pixels")


def test_every_ground_truth_format_and_a_run_folder_give_the_same_examples(tmp_path):
    """COCO, YOLO, Pascal VOC and a run's kept labels, for the same two images."""
    from autolabel.labels import Labels
    from autolabel.records import to_record
    from autolabel.store import ImageResult, Store

    import supervision as sv

    boxes = {"a.png": [("dog", [10, 20, 110, 70])], "b.png": [("cat", [0, 0, 50, 50]), ("dog", [60, 10, 190, 90])]}
    gt = coco(tmp_path / "coco", [(name, (200, 100), b) for name, b in boxes.items()], classes=("dog", "cat"))
    images = tmp_path / "coco" / "images"
    yolo = tmp_path / "yolo"
    (yolo / "images" / "train").mkdir(parents=True)
    (yolo / "labels" / "train").mkdir(parents=True)
    voc = tmp_path / "voc"
    voc.mkdir()
    store_dir = tmp_path / "run"
    with Store(store_dir) as store:
        run_id = store.begin_run("h", {"ontology": ["dog", "cat"]})
        for name, rows in boxes.items():
            Image.open(images / name).save(yolo / "images" / "train" / name)
            lines = [f"{['dog', 'cat'].index(c)} {(x1 + x2) / 400} {(y1 + y2) / 200} {(x2 - x1) / 200} "
                     f"{(y2 - y1) / 100}" for c, (x1, y1, x2, y2) in rows]
            (yolo / "labels" / "train" / name.replace(".png", ".txt")).write_text("\n".join(lines))
            objects = "".join(f"<object><name>{c}</name><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax>"
                              f"<ymax>{y2}</ymax></bndbox></object>" for c, (x1, y1, x2, y2) in rows)
            (voc / name.replace(".png", ".xml")).write_text(
                f"<annotation><filename>{name}</filename><size><width>200</width><height>100</height></size>"
                f"{objects}</annotation>")
            labels = Labels(200, 100)
            det = sv.Detections(xyxy=np.array([b for _, b in rows] + [[5, 5, 9, 9]], dtype=np.float32),
                                data={"class_name": np.array([c for c, _ in rows] + ["dog"], dtype=object),
                                      "status": np.array(["kept"] * len(rows) + ["dropped"], dtype=object)})
            labels.add(det, stage="detect")
            store.commit([ImageResult(str(images / name), name, "x", "done", 200, 100, labels=to_record(labels))],
                         run_id, "h")
    (yolo / "data.yaml").write_text("path: .\ntrain: images/train\nnames: [dog, cat]\n")

    def examples(dataset):
        return {e.name: (sorted(e.classes), np.round(e.xyxy[np.argsort(e.xyxy[:, 0])], 3).tolist())
                for e in dataset.examples}

    want = examples(load(gt, images))
    assert want == {name: (sorted(c for c, _ in rows), sorted(b for _, b in rows)) for name, rows in boxes.items()}
    assert examples(load(yolo / "data.yaml")) == want
    assert examples(load(voc, images)) == want
    assert examples(load(store_dir)) == want  # the dropped box of the run is not learned
    assert load(store_dir).classes == ["dog", "cat"] and load(voc, images).source["format"] == "voc"


def test_more_images_than_a_training_set_holds_is_one_line(tmp_path, monkeypatch):
    from autolabel.train import data

    monkeypatch.setattr(data, "MAX_IMAGES", 1)
    gt = coco(tmp_path, [("a.png", (20, 20), []), ("b.png", (20, 20), [])])
    with pytest.raises(data.DataError) as err:
        load(gt, tmp_path / "images")
    assert str(err.value) == f"--gt {gt}: 2 images; a training set holds at most 1 (train on a sample)"


def test_a_prompt_longer_than_the_encoder_reads_is_counted(tmp_path):
    pytest.importorskip("transformers")
    from real_checkpoints import fixture
    from transformers import AutoProcessor

    from autolabel.train import samples
    from autolabel.train.data import assign_splits

    gt = coco(tmp_path, [("a.png", (64, 64), [("dog", [1, 1, 30, 30])])])
    dataset = load(gt, tmp_path / "images", classes=["dog", "cat", "bird"])
    assign_splits(dataset.examples, 0, 0)
    processor = AutoProcessor.from_pretrained(fixture("florence2"))
    assert samples.build(dataset, "grounding", processor, max_answer=100, max_prompt=8) == []
    assert dataset.tally.lines() == ["prompts longer than the model's encoder reads (8 tokens): 1, left out (e.g. "
                                     "a.png: 13 tokens); use fewer or shorter classes"]
