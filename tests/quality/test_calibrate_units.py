"""calibrate's parts on boxes built by hand: which boxes are candidates, ties in score, each status and override,
the bounds at their edges, the files it writes and the table it prints."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import yaml

from autolabel.quality.calibrate import (CalibrateError, calibrate, fit_calibration, format_report, lower_bound,
                                         min_boxes, pick_threshold, thresholds_yaml)
from autolabel.quality.data import Paired, Side
from autolabel.quality.match import ClassMatch, ImageMatch


def obj(values: list) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def side(rows: list[tuple], seg: bool = False) -> Side:
    """rows: (image, x1, class, score, status, reason) — each box 10 px wide at x1, on its image."""
    return Side(np.array([r[0] for r in rows], dtype=np.int32),
                np.array([[r[1], 0, r[1] + 10, 10] for r in rows], dtype=np.float64).reshape(-1, 4),
                obj([r[2] for r in rows]), np.array([r[3] for r in rows], dtype=np.float64),
                obj([r[4] for r in rows]), obj([r[5] for r in rows]), obj(["model"] * len(rows)),
                [None] * len(rows))


def paired(run: list[tuple], gt: list[tuple], classes: tuple[str, ...] = ("cat", "dog"), images: int = 4) -> Paired:
    return Paired([f"{k}.png" for k in range(images)], np.full((images, 2), 100), side(run),
                  side([(i, x, c, 1.0, status, "") for i, x, c, status in gt]),
                  ImageMatch([], {"rel_path": images, "name": 0, "sha256": 0}, [], []),
                  ClassMatch({c: c for c in classes}, {c: c for c in classes}), images, images)


PIPELINE = {"stages": [{"type": "model_stage"}, {"type": "score_threshold", "name": "cut", "threshold": 0.3},
                       {"type": "score_threshold", "name": "review", "action": "flag", "threshold": 0.0}]}


# -- the bounds ----------------------------------------------------------------------------------------------------
def test_bounds_at_their_edges() -> None:
    assert lower_bound(np.array([0, 0]), np.array([5, 0])).tolist() == [0.0, 0.0]  # no hit: 0, whatever n
    assert lower_bound(np.array([0, 3]), np.array([0, 3]), method="wilson")[0] == 0.0  # n = 0: 0
    assert lower_bound(np.array(3), np.array(3), 0.95) == pytest.approx(0.05 ** (1 / 3))  # CP: p^n = alpha
    assert lower_bound(np.array(3), np.array(3), 0.5) > lower_bound(np.array(3), np.array(3), 0.99)
    assert lower_bound(np.array(3), np.array(3)) == lower_bound(np.array(3), np.array(3), 0.95)  # 95 % unless told
    z = 1.6448536269514722  # the one-sided 95 % normal quantile
    assert lower_bound(np.array([1, 0]), np.array([1, 1]), method="wilson") == pytest.approx([1 / (1 + z * z), 0.0])
    with pytest.raises(ValueError, match=r"unknown bound 'exact' \(known: clopper-pearson, wilson\)"):
        lower_bound(np.array(1), np.array(2), method="exact")


def test_min_boxes_is_the_fewest_all_right_boxes_whose_bound_reaches_the_target() -> None:
    for target, confidence, method in ((0.9, 0.95, "clopper-pearson"), (0.5, 0.9, "clopper-pearson"),
                                       (0.9, 0.95, "wilson"), (0.999, 0.95, "clopper-pearson"), (0.01, 0.95, "wilson"),
                                       (0.9, 0.9, "wilson"), (0.7, 0.8, "wilson")):  # Wilson's far below CP's
        n = min_boxes(target, confidence, method)
        assert lower_bound(np.array(n), np.array(n), confidence, method) >= target
        assert n == 1 or lower_bound(np.array(n - 1), np.array(n - 1), confidence, method) < target
    assert (min_boxes(0.5, 0.9), min_boxes(0.9, 0.95, "wilson"), min_boxes(0.999)) == (4, 25, 2995)


# -- one class's threshold -------------------------------------------------------------------------------------------
def test_boxes_of_equal_score_are_kept_or_dropped_together() -> None:
    score = np.array([0.9, 0.8, 0.8, 0.8, 0.7])
    tp = np.array([True, True, False, True, True])
    # at 0.8 the three boxes of that score come in together: 3 of 4 right; no threshold between them
    out = pick_threshold(score, tp, 5, 0.5, 0.5, "clopper-pearson")
    assert out | {} == {"candidates": 5, "gt": 5, "threshold": 0.7, "precision": 0.8, "precision_lower_bound":
                        pytest.approx(float(lower_bound(np.array(4), np.array(5), 0.5))), "recall": 0.8, "kept": 5,
                        "status": "ok"}
    strict = pick_threshold(score, tp, 5, 0.6, 0.8, "clopper-pearson")  # 1 of 1 is not enough, 3 of 4 neither
    assert (strict["status"], strict["boxes_needed"], strict["best_precision"]) == ("unreachable", 4, 1.0)
    assert strict["best_lower_bound"] == pytest.approx(float(lower_bound(np.array(4), np.array(5), 0.8)))  # of all
    # the order of boxes with equal scores does not matter
    again = pick_threshold(score[[0, 3, 2, 1, 4]], tp[[0, 3, 2, 1, 4]], 5, 0.5, 0.5, "clopper-pearson")
    assert again == out


def test_the_lowest_threshold_that_reaches_the_target_wins_not_the_first() -> None:
    score = np.array([0.9, 0.8, 0.6, 0.5, 0.4])
    tp = np.array([True, False, True, True, True])  # precision 1, 0.5, 0.67, 0.75, 0.8 going down
    out = pick_threshold(score, tp, 4, 0.6, 0.5, "clopper-pearson")
    ok = [k for k in range(1, 6) if lower_bound(np.array(tp[:k].sum()), np.array(k), 0.5) >= 0.6]
    assert out["status"] == "ok" and out["kept"] == max(ok) and out["threshold"] == score[max(ok) - 1]
    assert out["recall"] == tp[:max(ok)].sum() / 4


def test_each_status_of_a_class_without_a_threshold() -> None:
    none = pick_threshold(np.zeros(0), np.zeros(0, bool), 3, 0.9, 0.95, "clopper-pearson")
    assert none == {"candidates": 0, "gt": 3, "threshold": None, "precision": None, "precision_lower_bound": None,
                    "recall": None, "kept": 0, "status": "no_predictions"}
    nogt = pick_threshold(np.array([0.5]), np.array([False]), 0, 0.9, 0.95, "clopper-pearson")
    assert nogt["status"] == "no_ground_truth" and nogt["candidates"] == 1
    thin = pick_threshold(np.linspace(0.9, 0.5, 28), np.ones(28, bool), 28, 0.9, 0.95, "clopper-pearson")
    assert (thin["status"], thin["boxes_needed"], thin["best_precision"]) == ("thin_evidence", 29, 1.0)
    assert thin["best_lower_bound"] == pytest.approx(0.05 ** (1 / 28))
    bad = pick_threshold(np.linspace(0.9, 0.1, 29), np.arange(29) % 3 == 0, 29, 0.9, 0.95, "clopper-pearson")
    assert bad["status"] == "unreachable" and bad["best_precision"] == 1.0  # the top box alone is right
    prefixes = [lower_bound(np.array((np.arange(k) % 3 == 0).sum()), np.array(k), 0.95) for k in range(1, 30)]
    assert bad["best_lower_bound"] == pytest.approx(float(max(prefixes)))


# -- calibrate over a run --------------------------------------------------------------------------------------------
def two_classes() -> Paired:
    """cat: 30 right boxes (one per x position) kept, two wrong ones, one right box the threshold stage dropped, one
    another stage dropped, one without a score; dog: one right box (thin evidence)."""
    run = [(0, 20 * k % 400, "cat", 0.9 - k * 0.01, "kept", "") for k in range(30)]
    run += [(1, 500, "cat", 0.95, "kept", ""), (1, 600, "cat", 0.05, "flagged", "low_score")]
    run += [(2, 0, "cat", 0.2, "dropped", "low_score"), (2, 100, "cat", 0.99, "dropped", "nms"),
            (2, 200, "cat", float("nan"), "kept", ""), (3, 0, "dog", 0.8, "kept", "")]
    gt = [(0, 20 * k % 400, "cat", "kept") for k in range(30)]
    gt += [(2, 0, "cat", "kept"), (2, 100, "cat", "kept"), (2, 200, "cat", "kept"), (3, 0, "dog", "kept")]
    gt += [(3, 900, "dog", "crowd")]
    return paired(run, gt)


def test_candidates_are_the_kept_boxes_and_the_threshold_stages_own_drops() -> None:
    report, overrides = calibrate(two_classes(), target=0.8, pipeline=PIPELINE, confidence=0.9)
    cat = report["per_class"]["cat"]
    # kept 30 + 1 wrong, flagged 1 wrong, dropped by the threshold 1 right: 33; not the nms drop, not the unscored
    assert (cat["candidates"], cat["gt"]) == (33, 33)
    # 31 of 33 right down to the lowest score (the flagged wrong box, 0.05): the bound 0.85 reaches 0.8 there
    assert (cat["status"], cat["threshold"], cat["kept"]) == ("ok", 0.05, 33)
    assert cat["precision"] == cat["recall"] == pytest.approx(31 / 33)
    assert cat["precision_lower_bound"] == pytest.approx(float(lower_bound(np.array(31), np.array(33), 0.9)))
    assert overrides == {"stages.cut.per_class.cat": 0.05, "stages.review.per_class.dog": 1.0}
    dog = report["per_class"]["dog"]  # one right box of the 11 that 0.8 at 90 % needs; the crowd box is no target
    assert (dog["status"], dog["action"], dog["gt"], dog["boxes_needed"]) == ("thin_evidence", "flag", 1, 11)
    assert (report["stage"], report["review_stage"], report["unreached"], report["flagged"]) == (
        "cut", "review", "flag", "include")
    assert report["version"] == 1 and report["bound"] == "clopper-pearson" and report["iou_threshold"] == 0.5
    excluded, _ = calibrate(two_classes(), target=0.8, pipeline=PIPELINE, confidence=0.9, flagged="exclude")
    assert excluded["per_class"]["cat"]["candidates"] == 32  # the flagged wrong box left out


def test_unreached_classes_are_dropped_or_flagged_on_the_named_stages() -> None:
    _, dropped = calibrate(two_classes(), target=0.8, pipeline=PIPELINE, unreached="drop", confidence=0.9)
    assert dropped["stages.cut.per_class.dog"] == 1.0 and "stages.review.per_class.dog" not in dropped
    other = {"stages": PIPELINE["stages"] + [{"type": "score_threshold", "name": "late", "threshold": 0.5}]}
    report, named = calibrate(two_classes(), target=0.8, pipeline=other, stage="late", review_stage="cut",
                              confidence=0.9)
    assert set(named) == {"stages.late.per_class.cat", "stages.cut.per_class.dog"} and report["stage"] == "late"


def test_a_pipeline_without_the_stages_calibrate_needs_is_one_line() -> None:
    plain = {"stages": [{"type": "score_threshold", "threshold": 0.3}]}  # named by its type; no flag stage
    report, overrides = calibrate(two_classes(), target=0.8, pipeline=plain, unreached="drop", confidence=0.9)
    assert report["stage"] == "score_threshold"
    with pytest.raises(CalibrateError) as err:
        calibrate(two_classes(), target=0.8, pipeline=plain, confidence=0.9)
    assert str(err.value).startswith("--review-stage: name the score_threshold stage that flags for review")
    with pytest.raises(CalibrateError) as err:
        calibrate(two_classes(), target=0.8, pipeline={"stages": [{"type": "nms"}]}, confidence=0.9)
    assert str(err.value).startswith("the run's pipeline has no score_threshold stage that drops")
    with pytest.raises(CalibrateError):
        calibrate(two_classes(), target=0.8, pipeline=None, confidence=0.9)


# -- fitting, the file and the table -------------------------------------------------------------------------------
def test_a_fit_per_class_skips_what_it_cannot_fit_and_maps_scores_monotonically() -> None:
    rng = np.random.default_rng(0)
    score = rng.uniform(0, 1, 60)
    tp = rng.uniform(0, 1, 60) < score  # right about as often as the score says
    cls = obj(["cat"] * 50 + ["dog"] * 6 + ["cow"] * 4)
    tp[56:] = True  # cow: all right
    out = fit_calibration(score, tp, cls, "platt", "class")
    assert (out["method"], out["scope"], list(out["groups"])) == ("platt", "class", ["cat", "dog", "cow"])
    cat = out["groups"]["cat"]
    assert cat["n"] == 50 and cat["mapping"]["coef"] > 0 and cat["ece_after"] >= 0
    assert out["groups"]["dog"]["skipped"].startswith("too few samples") and "mapping" not in out["groups"]["dog"]
    assert out["groups"]["cow"]["skipped"] and out["groups"]["cow"]["n"] == 4
    with pytest.warns(UserWarning, match="cat: 50 samples: isotonic calibration tends to overfit below 1000"):
        iso = fit_calibration(score, tp, cls, "isotonic", "class")
    ys = iso["groups"]["cat"]["mapping"]["y"]
    assert ys == sorted(ys) and ys[0] >= 0.0 and ys[-1] <= 1.0
    assert ys[0] < 0.2 and ys[-1] > 0.8  # low scores mostly wrong, high ones mostly right
    pooled = fit_calibration(score, tp, cls, "platt", "pooled")
    assert list(pooled["groups"]) == ["__all__"] and pooled["groups"]["__all__"]["n"] == 60


def test_the_thresholds_file_says_where_it_came_from_and_reads_back_as_the_overrides() -> None:
    report = {"created": "2026-01-02T03:04:05+00:00", "target_precision": 0.9, "confidence": 0.95,
              "bound": "wilson"}
    text = thresholds_yaml({"stages.cut.per_class.cat": 0.42, "stages.cut.per_class.big dog": 1.0}, report, "p.yaml")
    assert text.splitlines()[:2] == [
        "# written by autolabel calibrate 2026-01-02T03:04:05+00:00: target precision 0.9 at 95% confidence "
        "(wilson lower bound)", "# apply with: autolabel run p.yaml --set-file thresholds.yaml"]
    assert list(yaml.safe_load(text).items()) == [("stages.cut.per_class.cat", 0.42),
                                                  ("stages.cut.per_class.big dog", 1.0)]
    assert thresholds_yaml({}, report).endswith("autolabel run PIPELINE --set-file thresholds.yaml\n{}\n")


def test_the_report_table_has_a_line_per_class_and_per_fit() -> None:
    report, _ = calibrate(two_classes(), target=0.8, pipeline=PIPELINE, confidence=0.9, fit="platt")
    lines = format_report(report).splitlines()
    assert lines[0] == "target precision 0.8 (clopper-pearson, 90% lower bound), stage 'cut'"
    assert lines[1].split() == ["class", "status", "threshold", "P", "P_low", "R", "kept", "of"]
    assert set(lines[2]) == {"-"} and len(lines[2]) == len(lines[1])
    cat = report["per_class"]["cat"]
    assert lines[3].split() == ["cat", "ok", f"{cat['threshold']:.4f}", f"{cat['precision']:.3f}",
                                f"{cat['precision_lower_bound']:.3f}", f"{cat['recall']:.3f}", "33", "33"]
    assert lines[4].split() == ["dog", "thin_evidence→flag", "-", "-", "-", "-", "0", "1"]
    fit = report["fit"]["groups"]
    assert lines[5] == (f"calibration fit (platt, cat): ECE {fit['cat']['ece_before']:.4f} → "
                        f"{fit['cat']['ece_after']:.4f}")
    assert lines[6] == f"calibration fit (platt, dog): ECE {fit['dog']['ece_before']:.4f} → {fit['dog']['skipped']}"


# -- the command line ----------------------------------------------------------------------------------------------
def test_eval_and_calibrate_parse_their_defaults_and_every_option_says_what_it_does() -> None:
    from autolabel.cli import _parser, _subcommands

    parser = _parser()
    args = parser.parse_args(["calibrate", "out", "--gt", "g.json", "--target-precision", "0.9"])
    assert (args.output_dir, args.gt, args.target_precision, args.confidence, args.bound, args.stage) == (
        "out", "g.json", 0.9, 0.95, "clopper-pearson", None)
    assert (args.unreached, args.review_stage, args.fit, args.fit_scope, args.path, args.iou, args.flagged,
            args.pipeline) == ("flag", None, None, "class", None, 0.5, "include", None)
    args = parser.parse_args(["eval", "out", "--gt", "g", "--iou", "0.75", "--flagged", "exclude", "--json"])
    assert (args.iou, args.flagged, args.json, args.path) == (0.75, "exclude", True, None)
    for argv in (["eval", "out"], ["calibrate", "out", "--gt", "g"], ["eval", "out", "--gt", "g", "--flagged", "x"],
                 ["calibrate", "out", "--gt", "g", "--target-precision", "0.9", "--bound", "exact"],
                 ["calibrate", "out", "--gt", "g", "--target-precision", "0.9", "--fit", "spline"]):
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args(argv)
        assert exit_.value.code == 2
    for name in ("eval", "calibrate", "report"):
        sub = _subcommands(parser)[name]
        assert sub.description and sub.format_help().startswith(f"usage: autolabel {name}")
        for action in sub._actions:
            assert action.help, (name, action.dest)  # `autolabel NAME --help` explains every option
    listed = {a.dest: a.help for group in parser._subparsers._group_actions for a in group._choices_actions}
    assert all(listed[name] for name in ("eval", "calibrate", "report"))  # a line each in `autolabel --help`


def test_a_fits_ece_after_comes_from_the_stated_split_out_of_fold() -> None:
    # The ECE after a fit is the ECE of out-of-fold predictions over a shuffled, stratified split with seed 0 —
    # 5 folds, or as many as the rarer outcome has boxes (at least 2) — so the same run calibrates the same way
    # twice, and no fit is scored on the boxes it learnt from. Scores sorted by outcome: an unshuffled split (or
    # sklearn's default 5-fold one) would put whole score ranges in one fold and predict differently.
    from sklearn.isotonic import IsotonicRegression
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    from autolabel.quality.eval import ece

    rng = np.random.default_rng(3)
    score = np.sort(rng.uniform(0, 1, 40))
    for positives, folds in ((12, 5), (3, 3)):
        tp = np.zeros(40, dtype=bool)
        tp[rng.choice(40, positives, replace=False, p=score / score.sum())] = True
        y = tp.astype(np.int64)
        split = StratifiedKFold(n_splits=folds, shuffle=True, random_state=0)
        for method, est, fit_x, kw in (
                ("platt", LogisticRegression(), score[:, None], {"method": "predict_proba"}),
                ("isotonic", IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0), score, {})):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # isotonic below its minimum sample
                got = fit_calibration(score, tp, obj(["cat"] * 40), method, "class")["groups"]["cat"]
            predicted = cross_val_predict(est, fit_x, y, cv=split, **kw)
            predicted = predicted[:, 1] if method == "platt" else predicted
            assert got["ece_after"] == pytest.approx(ece(predicted, tp), abs=1e-12), (method, positives)
            others = [cross_val_predict(est, fit_x, y, cv=cv, **kw) for cv in
                      (StratifiedKFold(n_splits=folds), StratifiedKFold(n_splits=folds, shuffle=True, random_state=1),
                       StratifiedKFold(n_splits=2, shuffle=True, random_state=0))]
            others = [p[:, 1] if method == "platt" else p for p in others]
            assert all(ece(p, tp) != pytest.approx(got["ece_after"], abs=1e-9) for p in others), (method, positives)
