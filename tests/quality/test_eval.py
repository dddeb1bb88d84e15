"""autolabel eval: a run's store against ground truth, with answers known in advance (AP exact)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eval_scripted import coco_gt, make_images, pipeline

from autolabel import Pipeline
from autolabel.cli import main
from autolabel.errors import AutolabelError, ExitCode
from autolabel.quality.eval import format_table

NAMES = ["a.png", "b.png", "c.png"]
GT = {"a.png": [["cat", 0, 0, 20, 20], ["dog", 30, 30, 60, 60]],
      "b.png": [["cat", 10, 10, 40, 40]],
      "c.png": [["dog", 5, 5, 25, 25]]}
# cat: a false cat scored highest (0.95), then two exact cats; dog: one exact, one off by IoU 1/7 (a miss)
ANSWERS = {"a.png": [["cat", 0, 0, 20, 20, 0.92], ["dog", 30, 30, 60, 60, 0.83]],
           "b.png": [["cat", 10, 10, 40, 40, 0.74], ["cat", 45, 45, 60, 60, 0.95]],
           "c.png": [["dog", 15, 15, 35, 35, 0.64]]}


def labeled(tmp_path: Path, answers: dict = ANSWERS, threshold: float = 0.0, **extra: object) -> Path:
    make_images(tmp_path / "in", NAMES)
    out = tmp_path / "out"
    Pipeline.from_dict(pipeline(answers, threshold=threshold, **extra)).run(tmp_path / "in", out)
    return out


def run_eval(out: Path, gt: Path, *args: str) -> dict:
    assert main(["eval", str(out), "--gt", str(gt), *args]) == ExitCode.OK
    return json.loads((out / "eval.json").read_text())


def test_a_run_image_the_ground_truth_lacks_leaves_the_images_after_it_matched(tmp_path: Path) -> None:
    perfect = {name: [[*row, 0.9] for row in rows] for name, rows in GT.items()}
    out = labeled(tmp_path, perfect)
    later = {name: rows for name, rows in GT.items() if name != "a.png"}  # the run's first image is not in it
    result = run_eval(out, coco_gt(tmp_path / "gt.json", later))
    assert result["images"]["matched"] == 2 and result["overall"]["tp"] == 2 and result["overall"]["fp"] == 0


def test_perfect_answers_score_ap_one(tmp_path: Path) -> None:
    perfect = {name: [[*row, 0.9] for row in rows] for name, rows in GT.items()}
    out = labeled(tmp_path, perfect)
    result = run_eval(out, coco_gt(tmp_path / "gt.json", GT))
    o = result["overall"]
    assert (o["ap"], o["ap50"], o["ap75"]) == (1.0, 1.0, 1.0)
    assert (o["precision"], o["recall"], o["f1"], o["tp"], o["fp"], o["fn"]) == (1.0, 1.0, 1.0, 4, 0, 0)
    assert result["images"]["matched_by"] == {"rel_path": 3, "name": 0, "sha256": 0}


def test_partial_answers_give_the_ap_computed_by_hand(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = labeled(tmp_path)
    result = run_eval(out, coco_gt(tmp_path / "gt.json", GT))
    # cat: ranked FP, TP, TP of 2 -> precision envelope 2/3 at every recall -> AP 2/3 at every IoU
    # dog: TP then FP of 2 -> precision 1 up to recall 0.5, 0 beyond: 51 of COCO's 101 recall points
    cat, dog = result["per_class"]["cat"], result["per_class"]["dog"]
    assert cat["ap"] == pytest.approx(2 / 3) and cat["ap50"] == pytest.approx(2 / 3)
    assert dog["ap"] == pytest.approx(51 / 101) and dog["ap75"] == pytest.approx(51 / 101)
    assert result["overall"]["ap"] == pytest.approx((2 / 3 + 51 / 101) / 2)
    assert (cat["tp"], cat["fp"], cat["fn"], dog["tp"], dog["fp"], dog["fn"]) == (2, 1, 0, 1, 1, 1)
    o = result["overall"]
    assert (o["precision"], o["recall"], o["f1"]) == pytest.approx((3 / 5, 3 / 4, 2 * 3 / 9))
    assert result["curves"]["cat"] == {"score": pytest.approx([0.95, 0.92, 0.74]),
                                       "precision": pytest.approx([0, 1 / 2, 2 / 3]), "recall": [0, 0.5, 1.0]}
    assert result["confusion"] == {"labels": ["cat", "dog", "background"],
                                   "matrix": [[2, 0, 0], [0, 1, 1], [1, 1, 0]]}
    assert {type(n) for row in result["confusion"]["matrix"] for n in row} == {int}  # counts, not 2.0 in eval.json
    rel = result["reliability"]
    assert rel["count"] == [0, 0, 0, 0, 0, 0, 1, 1, 1, 2] and rel["accuracy"][6:] == [0.0, 1.0, 1.0, 0.5]
    # ECE: |0-0.64| + |1-0.74| + |1-0.83| + 2*|0.5-0.935|, over 5
    assert rel["ece"] == pytest.approx((0.64 + 0.26 + 0.17 + 2 * 0.435) / 5, abs=1e-6)
    assert result["overall"]["mask_ap"] is None  # no masks on either side
    table = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split()[1:] for line in table if line.split()[:1] in (["cat"], ["dog"], ["all"])}
    assert rows["cat"][:3] == ["0.667", "0.667", "0.667"] and rows["dog"][:4] == ["0.505", "0.505", "0.505", "-"]
    assert rows["all"][-3:] == ["3", "2", "1"]  # TP FP FN


def test_each_filter_says_how_many_true_positives_it_dropped(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = labeled(tmp_path, threshold=0.75)  # drops b's true cat (0.74) and c's missed dog (0.64)
    capsys.readouterr()
    result = run_eval(out, coco_gt(tmp_path / "gt.json", GT))
    lines = capsys.readouterr().out.splitlines()
    assert lines[lines.index("filters (dropped: true positives lost / false positives removed):") + 1] == (
        "  score_threshold/low_score: dropped 2 (1 TP / 1 FP)")  # nothing flagged: nothing said of it
    assert result["filters"] == {"score_threshold/low_score": {
        "stage": "score_threshold", "reason": "low_score", "dropped": 2, "true_positives": 1, "false_positives": 1,
        "flagged": 0, "flagged_true_positives": 0}}
    assert result["per_class"]["cat"]["recall"] == 0.5


def test_a_drop_is_put_down_to_the_stage_that_drops_and_a_flag_to_the_one_that_flags(tmp_path: Path) -> None:
    # a's true cat scored below the cut (it matches the first ground-truth row); the review stage flags the rest
    answers = {**ANSWERS, "a.png": [["cat", 0, 0, 20, 20, 0.5], ["dog", 30, 30, 60, 60, 0.83]]}
    data = pipeline(answers, threshold=0.7)
    data["stages"].append({"type": "score_threshold", "name": "review", "threshold": 0.85, "action": "flag"})
    make_images(tmp_path / "in", NAMES)
    Pipeline.from_dict(data).run(tmp_path / "in", tmp_path / "out")
    filters = run_eval(tmp_path / "out", coco_gt(tmp_path / "gt.json", GT))["filters"]
    assert {k: (f["dropped"], f["true_positives"], f["flagged"]) for k, f in filters.items()} == {
        "score_threshold/low_score": (2, 1, 0), "review/low_score": (0, 0, 2)}


def test_flagged_boxes_count_as_kept_unless_excluded(tmp_path: Path) -> None:
    out = labeled(tmp_path, threshold=0.0)
    data = pipeline(ANSWERS)
    data["stages"].append({"type": "score_threshold", "name": "review", "threshold": 0.85, "action": "flag"})
    Pipeline.from_dict(data).run(tmp_path / "in", out)
    gt = coco_gt(tmp_path / "gt.json", GT)
    included = run_eval(out, gt)["overall"]
    excluded = run_eval(out, gt, "--flagged", "exclude")
    assert included["predictions"] == 5
    assert excluded["overall"]["predictions"] == 2 and excluded["flagged"] == "exclude"  # 0.95 and 0.92 kept
    assert excluded["filters"]["review/low_score"]["flagged"] == 3


def test_classes_match_through_the_ontology_and_leftovers_are_reported(tmp_path: Path, capsys) -> None:
    out = labeled(tmp_path, ontology={"cat": ["cat", "kitten"], "dog": "dog", "bird": "bird"})
    gt_boxes = {"a.png": [["Kittens", 0, 0, 20, 20], ["Dogs", 30, 30, 60, 60], ["horse", 1, 1, 5, 5]]}
    gt = coco_gt(tmp_path / "gt.json", gt_boxes, names={"Kittens": 1, "Dogs": 2, "horse": 3})
    capsys.readouterr()
    result = run_eval(out, gt)
    assert "classes not in both: run bird; ground truth horse" in capsys.readouterr().out.splitlines()
    no_run_leftover = {**result, "classes": {**result["classes"], "unmatched_run": []}}
    assert "classes not in both: run -; ground truth horse" in format_table(no_run_leftover).splitlines()
    several = {**result, "classes": {**result["classes"], "unmatched_run": ["bird", "cow"],
                                     "unmatched_gt": ["horse", "yak"]}}
    assert "classes not in both: run bird, cow; ground truth horse, yak" in format_table(several).splitlines()
    assert result["classes"] == {"matched": {"cat": "Kittens", "dog": "Dogs"}, "unmatched_run": ["bird"],
                                 "unmatched_gt": ["horse"]}
    assert result["images"]["unmatched_run"] == ["b.png", "c.png"] and result["images"]["unmatched_gt"] == []
    assert result["per_class"]["cat"]["ap"] == pytest.approx(1.0)
    assert "horse" in result["confusion"]["labels"]


def test_images_match_by_name_then_by_content_hash(tmp_path: Path) -> None:
    out = labeled(tmp_path)
    renamed = tmp_path / "gt" / "renamed.png"
    renamed.parent.mkdir()
    renamed.write_bytes((tmp_path / "in" / "c.png").read_bytes())
    gt = coco_gt(tmp_path / "gt" / "gt.json", {"elsewhere/a.png": GT["a.png"], "renamed.png": GT["c.png"],
                                                "other.png": []})
    result = run_eval(out, gt)
    assert result["images"]["matched_by"] == {"rel_path": 0, "name": 1, "sha256": 1}
    assert result["images"]["unmatched_gt"] == ["other.png"] and result["images"]["unmatched_run"] == ["b.png"]


@pytest.mark.parametrize("content, problem", [
    ("{not json", "not a readable COCO JSON file"),
    ('{"images": [], "annotations": []}', "not a COCO instances file"),
    ('{"images": [{"id": 1, "file_name": "a.png"}], "annotations": [], "categories": [{"id": 1, "name": "x"}]}',
     "names no class of the run's ontology (ground truth: x; ontology: cat, dog)"),
    ('{"images": [{"id": 1, "file_name": "a.png"}], "annotations": [], "categories": []}',
     "names no class of the run's ontology (ground truth: none; ontology: cat, dog)"),
    ('{"images": [{"id": 1, "file_name": "zzz.png"}], "annotations": [], "categories": [{"id": 1, "name": "cat"}]}',
     "shares no image with the run (3 run images, 1 ground-truth images, e.g. 'zzz.png'; matched by relative path"),
])
def test_bad_ground_truth_is_one_line_and_exit_2(tmp_path: Path, capsys, content: str, problem: str) -> None:
    out = labeled(tmp_path)
    gt = tmp_path / "gt.json"
    gt.write_text(content)
    capsys.readouterr()
    assert main(["eval", str(out), "--gt", str(gt)]) == ExitCode.CONFIG
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(gt) in err[0] and problem in err[0] and "Traceback" not in err[0]
    assert not (out / "eval.json").exists()


def test_a_yolo_dataset_is_ground_truth_too(tmp_path: Path) -> None:
    perfect = {name: [[*row, 0.9] for row in rows] for name, rows in GT.items()}
    out = labeled(tmp_path, perfect, exports=[{"format": "yolo", "split": {"train": 1.0}}])
    result = run_eval(out, out / "yolo")  # the run's own YOLO export, read back as ground truth
    assert result["gt_format"] == "yolo" and result["images"]["matched"] == 3
    assert result["overall"]["ap"] == pytest.approx(1.0) and result["overall"]["fn"] == 0


def test_mask_ap_where_both_sides_have_masks(tmp_path: Path) -> None:
    from plugins import EXPORT_ONTOLOGY, make_export_images

    make_export_images(tmp_path / "in")
    out = tmp_path / "out"  # per image: a cat with a two-part mask, a dog with a polygon, a text box
    pipeline = Pipeline.from_dict({"ontology": EXPORT_ONTOLOGY, "stages": [{"type": "plugins:RichLabels"}]})
    pipeline.run(tmp_path / "in", out)
    assert main(["export", str(out), "--format", "coco", "--segmentation", "rle", "--path", "truth.json"]) == 0
    result = run_eval(out, out / "truth.json")  # what the run kept, with its masks: everything matches
    assert result["overall"]["ap"] == pytest.approx(1.0) and result["overall"]["mask_ap"] == pytest.approx(1.0)
    assert result["per_class"]["cat"]["mask_ap"] == pytest.approx(1.0)
    assert result["per_class"]["dog"]["mask_ap"] is None  # the run holds no mask for it (a polygon, not a mask)
    assert result["per_class"]["text"]["mask_ap"] is None


@pytest.mark.parametrize("files, problem", [
    ({"a.xml": "<annotation><filename>a.png</filename><object><name>cat</name>"}, "not valid XML"),
    ({"a.xml": "<annotation><filename>a.png</filename><object><name>cat</name><bndbox><xmin>x</xmin></bndbox>"
               "</object></annotation>"}, "not a Pascal VOC annotation"),
    ({"data.yaml": "names: [cat]\ntrain: images\n", "images/a.png": None, "labels/a.txt": "0 0.5 0.5\n"},
     "line 1: not a YOLO label line"),
    ({"data.yaml": "names: [cat]\ntrain: images\n", "images/a.png": None, "labels/a.txt": "3 0.5 0.5 0.1 0.1\n"},
     "class 3 not in names"),
    ({"notes.txt": "hello"}, "found no coco.json, data.yaml or Pascal VOC .xml files"),
])
def test_bad_voc_and_yolo_folders_are_one_line(tmp_path: Path, capsys, files: dict, problem: str) -> None:
    out = labeled(tmp_path)
    gt = tmp_path / "gt"
    for name, text in files.items():
        (gt / name).parent.mkdir(parents=True, exist_ok=True)
        if text is None:
            make_images((gt / name).parent, [Path(name).name])
        else:
            (gt / name).write_text(text)
    capsys.readouterr()
    assert main(["eval", str(out), "--gt", str(gt)]) == ExitCode.CONFIG
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and problem in err[0] and str(gt) in err[0]


def test_a_folder_without_a_run_store_is_one_line(tmp_path: Path, capsys) -> None:
    gt = coco_gt(tmp_path / "gt.json", GT)
    assert main(["eval", str(tmp_path), "--gt", str(gt)]) == ExitCode.FATAL
    assert "no run store" in capsys.readouterr().err
    assert main(["calibrate", str(tmp_path), "--gt", str(gt), "--target-precision", "1.5"]) == ExitCode.CONFIG
    assert "--target-precision: expected a number between 0 and 1" in capsys.readouterr().err


def test_json_output_paths_and_argument_bounds(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import argparse

    from autolabel.quality.commands import _check

    out = labeled(tmp_path)
    gt = coco_gt(tmp_path / "gt.json", GT)
    capsys.readouterr()
    assert main(["eval", str(out), "--gt", str(gt), "--json", "--path", "sub.json", "--iou", "1.0"]) == ExitCode.OK
    captured = capsys.readouterr()
    written = json.loads((out / "sub.json").read_text())
    assert json.loads(captured.out) == written and written["iou_threshold"] == 1.0
    assert captured.err.strip() == f"autolabel: wrote {out / 'sub.json'}" and not (out / "eval.json").exists()
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(json.dumps({"ontology": ["cat", "dog"], "stages": [{"type": "score_threshold",
                                                                            "threshold": 0.1}]}))
    assert main(["calibrate", str(out), "--gt", str(gt), "--target-precision", "0.5", "--unreached", "drop",
                 "--path", "t.yaml", "--pipeline", str(pipeline)]) == ExitCode.OK
    text = (out / "t.yaml").read_text()
    assert "autolabel run " + str(pipeline) + " --set-file thresholds.yaml" in text
    report = json.loads((out / "calibration.json").read_text())
    assert report["thresholds"] == yaml_load(text) and report["stage"] == "score_threshold"
    assert main(["calibrate", str(out), "--gt", str(gt), "--target-precision", "0.5", "--unreached", "drop"]) == 0
    apply = (out / "thresholds.yaml").read_text().splitlines()[1]
    assert apply == "# apply with: autolabel run PIPELINE --set-file thresholds.yaml"  # no file given: a placeholder
    capsys.readouterr()
    assert main(["eval", str(out), "--gt", str(gt)]) == ExitCode.OK
    table = capsys.readouterr().out.splitlines()
    assert table[0] == ("images: 3 matched of 3 run / 3 ground truth (by path 3, name 0, hash 0); unmatched: 0 run, "
                        "0 ground truth")
    assert table[1].split() == ["class", "AP", "AP50", "AP75", "mAP", "P", "R", "F1", "TP", "FP", "FN"]
    assert set(table[2]) == {"-"} and len(table[2]) == len(table[1])
    assert [line.split()[0] for line in table[3:6]] == ["cat", "dog", "all"]
    assert table[5].split()[-3:] == ["3", "2", "1"] and table[5].split()[4] == "-"  # TP FP FN; no mask AP
    assert table[-1].startswith("calibration error (ECE, 10 bins): 0.") and len(table) == 7
    for iou, target, confidence, bad in ((0.0, 0.5, 0.9, "--iou"), (1.01, 0.5, 0.9, "--iou"),
                                         (0.5, 1.0, 0.9, "--target-precision"), (0.5, 0.0, 0.9, "--target-precision"),
                                         (0.5, 0.5, 1.0, "--confidence")):
        with pytest.raises(AutolabelError) as err:
            _check(argparse.Namespace(iou=iou, target_precision=target, confidence=confidence))
        assert str(err.value).startswith(f"{bad}: expected a number between 0 and 1 (got ")
        assert err.value.exit_code == ExitCode.CONFIG
    _check(argparse.Namespace(iou=1.0))  # eval has no target or confidence


def yaml_load(text: str) -> dict:
    import yaml

    return yaml.safe_load(text)


# -- parts of eval.json, on values made by hand ---------------------------------------------------------------------
def test_curves_keep_the_last_box_of_each_score_and_at_most_the_asked_points() -> None:
    import numpy as np

    from autolabel.quality.eval import curve

    c = curve(np.array([0.9, 0.5, 0.9, np.nan, 0.2]), np.array([True, False, True, True, False]), 4)
    assert c == {"score": [0.9, 0.5, 0.2, 0.0], "precision": [1.0, 2 / 3, 0.5, 0.6],
                 "recall": [0.5, 0.5, 0.5, 0.75]}  # unknown scores sort as 0
    assert curve(np.array([0.5]), np.array([True]), 0)["recall"] == [None]
    assert curve(np.zeros(0), np.zeros(0, bool), 3) == {"score": [], "precision": [], "recall": []}
    many = curve(np.linspace(1, 0, 1000), np.ones(1000, bool), 1000, points=10)
    assert len(many["score"]) == 10 and many["score"][0] == 1.0 and many["score"][-1] == 0.0  # both ends kept
    assert many["recall"][-1] == 1.0 and many["recall"] == sorted(many["recall"])


def test_reliability_bins_scores_and_the_ece_weighs_bins_by_their_boxes() -> None:
    import numpy as np

    from autolabel.quality.eval import ece, reliability

    r = reliability(np.array([0.05, 0.15, 0.15, 1.0, np.nan]), np.array([False, True, False, True, True]), bins=4)
    assert r["bins"] == [0.0, 0.25, 0.5, 0.75, 1.0] and r["count"] == [3, 0, 0, 1]  # 1.0: the last bin
    assert r["confidence"] == [pytest.approx(0.35 / 3), None, None, 1.0] and r["accuracy"] == [pytest.approx(1 / 3),
                                                                                                None, None, 1.0]
    assert r["ece"] == pytest.approx(3 / 4 * abs(1 / 3 - 0.35 / 3))
    assert ece(np.array([np.nan]), np.array([True])) is None


def test_the_stage_behind_a_drop_is_named_from_the_pipeline() -> None:
    from autolabel.quality.eval import stage_of, stages_of

    stages = stages_of({"stages": [{"type": "detect", "name": "boxes"}, {"type": "score_threshold"},
                                   {"type": "score_threshold", "name": "late", "action": "flag"},
                                   {"type": "border"}, {"type": "mine:Filter", "name": "own"}, "not a stage",
                                   {"name": "no type"}]})
    assert stages == [("boxes", "detect", "drop"), ("score_threshold", "score_threshold", "drop"),
                      ("late", "score_threshold", "flag"), ("border", "border", "flag"), ("own", "mine:Filter", "drop")]
    assert stage_of("low_score", "boxes", stages) == "score_threshold"
    assert stage_of("low_score", "boxes", stages, "flag") == "late"
    assert stage_of("touches_border", "boxes", stages, "flag") == "border"
    assert stage_of("touches_border", "boxes", stages, "drop") == "border"  # no dropping one: the candidates
    assert stage_of("my_reason", "boxes", stages) == "own"  # a user's filter
    assert stage_of("unmapped_phrase", "boxes", stages) == "boxes" and stage_of("unmapped_phrase", "", stages) == \
        "unknown"
    assert stage_of("nms", "", [("a", "nms", "drop"), ("b", "nms", "drop")]) == "a|b"
    assert stage_of("nms", "", []) == "unknown" and stages_of(None) == [] and stages_of({"stages": None}) == []


def test_scores_without_boxes_or_ground_truth_are_none_not_zero() -> None:
    from autolabel.quality.eval import _scores

    none = {"ap": None, "ap50": None, "ap75": None}
    assert _scores(none, none, 0, 0, 0) | {} == {**none, "mask_ap": None, "precision": None, "recall": None,
                                                 "f1": None, "tp": 0, "fp": 0, "fn": 0, "gt": 0, "predictions": 0}
    s = _scores({"ap": 0.5, "ap50": 0.6, "ap75": 0.4}, {"ap": 0.3}, 2, 4, 3)
    assert (s["precision"], s["recall"], s["f1"], s["fp"], s["fn"], s["mask_ap"]) == (0.5, 2 / 3, 4 / 7, 2, 1, 0.3)
    assert (s["ap"], s["ap50"], s["ap75"], s["gt"], s["predictions"]) == (0.5, 0.6, 0.4, 3, 4)
    assert _scores(none, none, 0, 0, 5)["recall"] == 0.0 and _scores(none, none, 0, 2, 0)["precision"] == 0.0


def test_the_python_calls_take_the_commands_defaults_and_record_their_inputs(tmp_path: Path) -> None:
    from autolabel.quality.api import calibrate_run, evaluate_run

    out = labeled(tmp_path)
    gt = coco_gt(tmp_path / "gt.json", GT)
    result = evaluate_run(out, gt)
    assert (result["iou_threshold"], result["flagged"], result["gt"], result["output"], result["gt_format"]) == (
        0.5, "include", str(gt), str(out), "coco")
    assert not (out / "eval.json").exists()  # a Python call writes nothing
    report, overrides = calibrate_run(out, gt, target_precision=0.5, unreached="drop")
    assert (report["iou_threshold"], report["flagged"], report["confidence"], report["bound"]) == (
        0.5, "include", 0.95, "clopper-pearson")
    assert set(overrides) == {"stages.score_threshold.per_class.cat", "stages.score_threshold.per_class.dog"}


def test_a_pipeline_file_stands_in_for_the_stores_and_a_store_without_a_run_says_so(tmp_path: Path, capsys) -> None:
    import yaml

    from autolabel.store import Store

    out = labeled(tmp_path)  # the run's ontology: cat, dog
    gt = coco_gt(tmp_path / "gt.json", {"a.png": [["Kittens", 0, 0, 20, 20], ["dog", 30, 30, 60, 60]]},
                 names={"Kittens": 1, "dog": 2})
    assert run_eval(out, gt)["classes"]["unmatched_gt"] == ["Kittens"]
    file = tmp_path / "kittens.yaml"
    file.write_text(yaml.safe_dump(pipeline(ANSWERS, ontology={"cat": ["cat", "kitten"], "dog": "dog"})))
    assert run_eval(out, gt, "--pipeline", str(file))["classes"]["matched"] == {"cat": "Kittens", "dog": "dog"}
    assert main(["calibrate", str(out), "--gt", str(gt), "--pipeline", str(file), "--target-precision", "0.9",
                 "--unreached", "drop"]) == ExitCode.OK
    calibration = json.loads((out / "calibration.json").read_text())
    assert calibration["per_class"]["cat"]["gt"] == 1  # the file's ontology matched the ground truth's Kittens
    with Store(tmp_path / "empty"):
        pass
    assert main(["eval", str(tmp_path / "empty"), "--gt", str(gt)]) == ExitCode.FATAL
    assert capsys.readouterr().err.strip().endswith(f"{tmp_path / 'empty'}: the store records no run; pass --pipeline "
                                                    "FILE")


def test_each_image_is_evaluated_at_the_size_the_run_recorded_and_failed_images_not_at_all(tmp_path: Path) -> None:
    # The run's record of an image holds its size (the store skips a row without one), and that is the size
    # pycocotools reads, whatever the ground truth says; an image the run could not read has no record to pair.
    from autolabel.quality.api import open_run

    make_images(tmp_path / "in", NAMES[:2])
    (tmp_path / "in" / "c.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    Pipeline.from_dict(pipeline(ANSWERS)).run(tmp_path / "in", tmp_path / "out")
    paired, _, _ = open_run(tmp_path / "out", coco_gt(tmp_path / "gt.json", GT, size=(80, 48)))
    assert dict(zip(paired.names, paired.sizes.tolist())) == {"a.png": [64, 64], "b.png": [64, 64]}
    assert paired.images.pairs and paired.run_images == 2


def test_a_run_without_boxes_or_ground_truth_without_boxes_is_scored_not_refused(tmp_path: Path) -> None:
    from autolabel.quality.api import evaluate_run

    make_images(tmp_path / "in", NAMES[:2])
    Pipeline.from_dict(pipeline({})).run(tmp_path / "in", tmp_path / "empty")  # the model found nothing
    result = evaluate_run(tmp_path / "empty", coco_gt(tmp_path / "gt.json", {"a.png": GT["a.png"][:1], "b.png": []}))
    cat = result["per_class"]["cat"]
    assert (cat["ap"], cat["recall"], cat["precision"], cat["tp"], cat["fp"], cat["fn"]) == (0.0, 0.0, None, 0, 0, 1)
    assert result["confusion"]["matrix"][0] == [0, 0, 1]  # the cat went unfound
    Pipeline.from_dict(pipeline(ANSWERS)).run(tmp_path / "in", tmp_path / "found")
    result = evaluate_run(tmp_path / "found", coco_gt(tmp_path / "none.json", {"a.png": [], "b.png": []}))
    o = result["overall"]
    assert (o["ap"], o["recall"], o["precision"], o["tp"], o["fp"], o["fn"]) == (None, None, 0.0, 0, 4, 0)
