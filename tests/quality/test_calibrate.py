"""autolabel calibrate: thresholds with a stated confidence, written as --set overrides the next run applies
without running any model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from eval_scripted import coco_gt, make_images, pipeline
from scipy.stats import binomtest

from autolabel.cli import main
from autolabel.errors import ExitCode
from autolabel.quality.calibrate import lower_bound, min_boxes, pick_threshold

N = 40
FALSE = {5, 12, 31, 33, 35, 37, 39}  # these images get a box off their cat: a false positive (and a miss)
NAMES = [f"img{i:02d}.png" for i in range(N)] + ["dog0.png", "dog1.png", "dog2.png"]
CAT, OFF, DOG = [8, 8, 40, 40], [44, 44, 60, 60], [10, 20, 30, 50]


def score(i: int) -> float:
    return round(0.985 - i * 0.01, 3)


def answers() -> dict:
    out = {f"img{i:02d}.png": [["cat", *(OFF if i in FALSE else CAT), score(i)]] for i in range(N)}
    return out | {name: [["dog", *DOG, 0.9]] for name in NAMES[N:]}


def ground_truth(path: Path) -> Path:
    return coco_gt(path, {f"img{i:02d}.png": [["cat", *CAT]] for i in range(N)}
                   | {name: [["dog", *DOG]] for name in NAMES[N:]})


def expected_cat_threshold(target: float) -> tuple[float, int, int]:
    """Independently: keep the top k boxes; scipy's exact (Clopper-Pearson) 90 % two-sided interval's low end is
    the 95 % one-sided lower bound; the lowest score whose bound reaches the target."""
    best = None
    tp = 0
    for k in range(1, N + 1):
        tp += (k - 1) not in FALSE
        if binomtest(tp, k).proportion_ci(confidence_level=0.90, method="exact").low >= target:
            best = (score(k - 1), k, tp)
    assert best is not None
    return best


def write_pipeline(tmp_path: Path, **extra: object) -> Path:
    data = pipeline(answers(), threshold=0.0, calls=tmp_path / "calls", **extra)
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def run(tmp_path: Path, pipeline_file: Path, *args: str) -> int:
    return main(["run", str(pipeline_file), "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"),
                 "--no-progress", *args])


def kept(out: Path) -> list[tuple[str, float]]:
    coco = json.loads((out / "coco.json").read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    return sorted((names[a["category_id"]], a["score"]) for a in coco["annotations"]
                  if a.get("attributes", {}).get("status", "kept") == "kept")


def n_calls(tmp_path: Path) -> int:
    return len((tmp_path / "calls").read_text().splitlines())


@pytest.mark.parametrize("method, scipy_method", [("clopper-pearson", "exact"), ("wilson", "wilson")])
def test_lower_bounds_equal_scipys_intervals(method: str, scipy_method: str) -> None:
    tp, n = np.array([0, 3, 9, 29, 50, 7]), np.array([4, 3, 10, 29, 61, 7])
    ours = lower_bound(tp, n, 0.95, method)
    theirs = [binomtest(int(k), int(m)).proportion_ci(0.90, method=scipy_method).low for k, m in zip(tp, n)]
    assert ours == pytest.approx(theirs, abs=1e-9)


def test_a_target_the_data_rule_out_is_unreachable_and_too_few_boxes_are_thin_evidence() -> None:
    scores = np.linspace(0.9, 0.1, 60)
    half = np.arange(60) % 2 == 0  # every other box right: precision 0.5 at every threshold
    assert pick_threshold(scores, half, 30, 0.9, 0.95, "clopper-pearson")["status"] == "unreachable"
    few = pick_threshold(scores[:28], np.ones(28, dtype=bool), 28, 0.9, 0.95, "clopper-pearson")
    assert few["status"] == "thin_evidence" and few["best_precision"] == 1.0 and few["threshold"] is None
    assert min_boxes(0.9) == 29 and 0.95 ** 28 > 0.9 ** 28 and 0.9 ** 29 < 0.05 < 0.9 ** 28  # CP: p^n = alpha
    assert min_boxes(0.99) == 299
    plenty = pick_threshold(scores, np.ones(60, dtype=bool), 60, 0.9, 0.95, "clopper-pearson")
    assert plenty["status"] == "ok" and plenty["threshold"] == pytest.approx(0.1) and plenty["recall"] == 1.0


def test_calibrated_thresholds_apply_on_the_next_run_without_any_model_call(tmp_path: Path, capsys) -> None:
    make_images(tmp_path / "in", NAMES)
    pipeline_file = write_pipeline(tmp_path)
    assert run(tmp_path, pipeline_file) == ExitCode.OK
    assert n_calls(tmp_path) == len(NAMES)
    out, gt = tmp_path / "out", ground_truth(tmp_path / "gt.json")

    code = main(["calibrate", str(out), "--gt", str(gt), "--target-precision", "0.8", "--unreached", "drop"])
    assert code == ExitCode.OK
    threshold, k, tp = expected_cat_threshold(0.8)
    report = json.loads((out / "calibration.json").read_text())
    cat, dog = report["per_class"]["cat"], report["per_class"]["dog"]
    assert cat["status"] == "ok" and cat["threshold"] == pytest.approx(threshold, abs=1e-6)
    assert (cat["kept"], cat["recall"], cat["precision"]) == (k, pytest.approx(tp / N), pytest.approx(tp / k))
    assert dog["status"] == "thin_evidence" and dog["action"] == "drop"  # 3 of 3 right: too few to be 95 % sure
    thresholds = yaml.safe_load((out / "thresholds.yaml").read_text())
    assert thresholds == {"stages.score_threshold.per_class.cat": pytest.approx(threshold, abs=1e-6),
                          "stages.score_threshold.per_class.dog": 1.0}
    assert "thin_evidence" in capsys.readouterr().out

    assert run(tmp_path, pipeline_file, "--set-file", str(out / "thresholds.yaml")) == ExitCode.OK
    assert n_calls(tmp_path) == len(NAMES)  # decisions changed; no model ran
    after = kept(out)
    assert len(after) == k and all(c == "cat" and s >= threshold - 1e-6 for c, s in after)
    # --stage names the stage the thresholds are for (a pipeline file may hold several)
    assert main(["calibrate", str(out), "--gt", str(gt), "--target-precision", "0.8", "--unreached", "drop",
                 "--stage", "late", "--confidence", "0.9", "--flagged", "exclude"]) == ExitCode.OK
    written = json.loads((out / "calibration.json").read_text())
    assert (written["confidence"], written["flagged"]) == (0.9, "exclude")
    assert sorted(yaml.safe_load((out / "thresholds.yaml").read_text())) == ["stages.late.per_class.cat",
                                                                             "stages.late.per_class.dog"]


def test_unreached_classes_can_be_flagged_for_review_instead(tmp_path: Path) -> None:
    make_images(tmp_path / "in", NAMES)
    review = {"type": "score_threshold", "name": "review", "action": "flag", "threshold": 0.0}
    data = pipeline(answers(), threshold=0.0, calls=tmp_path / "calls")
    data["stages"].append(review)
    pipeline_file = tmp_path / "pipeline.yaml"
    pipeline_file.write_text(yaml.safe_dump(data))
    assert run(tmp_path, pipeline_file) == ExitCode.OK
    out = tmp_path / "out"
    assert main(["calibrate", str(out), "--gt", str(ground_truth(tmp_path / "gt.json")),
                 "--target-precision", "0.9"]) == ExitCode.OK
    report = json.loads((out / "calibration.json").read_text())
    # 40 boxes (29 would do if all were right), but the 6th is wrong: no threshold is 95 % sure of 0.9
    assert report["per_class"]["cat"]["status"] == "unreachable"
    assert report["per_class"]["dog"]["status"] == "thin_evidence"  # 3 boxes
    assert yaml.safe_load((out / "thresholds.yaml").read_text()) == {"stages.review.per_class.cat": 1.0,
                                                                    "stages.review.per_class.dog": 1.0}
    assert run(tmp_path, pipeline_file, "--set-file", str(out / "thresholds.yaml")) == ExitCode.OK
    coco = json.loads((out / "coco.json").read_text())
    assert {a["attributes"]["status"] for a in coco["annotations"]} == {"flagged"}
    assert len(coco["annotations"]) == len(NAMES) and n_calls(tmp_path) == len(NAMES)


def test_flagging_without_a_review_stage_says_what_to_add(tmp_path: Path, capsys) -> None:
    make_images(tmp_path / "in", NAMES)
    assert run(tmp_path, write_pipeline(tmp_path)) == ExitCode.OK
    capsys.readouterr()
    code = main(["calibrate", str(tmp_path / "out"), "--gt", str(ground_truth(tmp_path / "gt.json")),
                 "--target-precision", "0.8"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == ExitCode.CONFIG and len(err) == 1 and "action: flag" in err[0] and "--unreached drop" in err[0]
    assert not (tmp_path / "out" / "thresholds.yaml").exists()


def test_fit_reports_calibration_error_before_and_after(tmp_path: Path) -> None:
    make_images(tmp_path / "in", NAMES)
    assert run(tmp_path, write_pipeline(tmp_path)) == ExitCode.OK
    out, gt = tmp_path / "out", str(ground_truth(tmp_path / "gt.json"))
    args = ["calibrate", str(out), "--gt", gt, "--target-precision", "0.8", "--unreached", "drop"]
    assert main([*args, "--fit", "platt", "--fit-scope", "pooled"]) == ExitCode.OK
    fit = json.loads((out / "calibration.json").read_text())["fit"]
    pooled = fit["groups"]["__all__"]
    assert pooled["n"] == len(NAMES) and 0 <= pooled["ece_after"] < pooled["ece_before"]
    assert set(pooled["mapping"]) == {"coef", "intercept"} and pooled["mapping"]["coef"] > 0
    with pytest.warns(UserWarning, match="isotonic calibration tends to overfit"):
        assert main([*args, "--fit", "isotonic"]) == ExitCode.OK
    groups = json.loads((out / "calibration.json").read_text())["fit"]["groups"]
    assert "warning" in groups["cat"] and "skipped" in groups["dog"]  # dog: all true positives, nothing to fit
