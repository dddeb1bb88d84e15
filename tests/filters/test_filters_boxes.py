"""Box filters on hand-made cases: what each keeps, drops or flags, and why."""

from __future__ import annotations

import math

import numpy as np
import pytest
import supervision as sv

from autolabel.errors import ConfigError
from autolabel.filters import overlap
from autolabel.labels import Labels
from filter_cases import build, make_labels, reasons, run, status

NAN = float("nan")


# ---- score_threshold ----------------------------------------------------------------------------------------------


def test_score_threshold_drops_low_scores_and_passes_unknown_ones() -> None:
    (lab,) = run("score_threshold", make_labels([[0, 0, 10, 10]] * 3, scores=[0.9, 0.2, NAN]))
    assert status(lab) == ["kept", "dropped", "kept"]
    assert reasons(lab) == ["", "low_score", ""]


def test_score_threshold_per_class() -> None:
    lab = make_labels([[0, 0, 10, 10]] * 2, scores=[0.9, 0.9], classes=["person", "car"])
    run("score_threshold", lab, per_class={"car": 0.95})
    assert status(lab) == ["kept", "dropped"]


def test_score_threshold_on_empty_and_all_dropped() -> None:
    empty, low = make_labels([]), make_labels([[0, 0, 10, 10]] * 2, scores=[0.1, 0.2])
    run("score_threshold", empty, low)
    assert status(empty) == [] and status(low) == ["dropped", "dropped"]
    assert low.kept().xyxy.shape == (0, 4)


def test_drop_overrides_a_flag_and_keeps_a_first_drop() -> None:
    lab = make_labels([[0, 0, 10, 10]] * 3, scores=[0.1, 0.1, 0.9])
    lab.detections.data["status"][:2] = ["flagged", "dropped"]
    lab.detections.data["reason"][:2] = ["touches_border", "nms"]
    run("score_threshold", lab)
    assert status(lab) == ["dropped", "dropped", "kept"]
    assert reasons(lab) == ["low_score", "nms", ""]


def test_action_flag_records_without_dropping() -> None:
    (lab,) = run("score_threshold", make_labels([[0, 0, 10, 10]] * 2, scores=[0.9, 0.2]), action="flag")
    assert status(lab) == ["kept", "flagged"] and reasons(lab) == ["", "low_score"]
    assert len(lab.kept()) == 2  # flagged boxes stay in the labels, for review


def test_per_class_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"^per_class: unknown class 'cat' \(known: person, car, dog\)$"):
        build("score_threshold", per_class={"cat": 0.5})
    with pytest.raises(ConfigError, match=r"^per_class\.car\.threshold: input should be less than or equal to 1"):
        build("score_threshold", per_class={"car": 1.5})
    with pytest.raises(ConfigError, match=r"^per_class\.car\.iou: not settable per class \(per-class keys: thres"):
        build("score_threshold", per_class={"car": {"iou": 0.5}})


# ---- known_classes, confident_image, max_per_image ----------------------------------------------------------------


def test_known_classes() -> None:
    lab = make_labels([[0, 0, 10, 10]] * 3, scores=[0.9] * 3, classes=["person", "", "car"])
    run("known_classes", lab)
    assert reasons(lab) == ["", "unknown_class", ""]
    run("known_classes", lab, classes=["person"])
    assert reasons(lab) == ["", "unknown_class", "excluded_class"]
    with pytest.raises(ConfigError, match=r"^classes: unknown class 'cat'"):
        build("known_classes", classes=["cat"])


def test_confident_image_is_owl_st_rule() -> None:
    confident = make_labels([[0, 0, 10, 10]] * 3, scores=[0.5, 0.2, 0.05])
    weak = make_labels([[0, 0, 10, 10]] * 2, scores=[0.25, 0.15])
    unknown = make_labels([[0, 0, 10, 10]], scores=[NAN])
    run("confident_image", confident, weak, unknown, make_labels([]))
    assert reasons(confident) == ["", "", "low_score"]
    assert reasons(weak) == ["no_confident_box", "no_confident_box"]
    assert status(unknown) == ["kept"]


def test_confident_image_ignores_dropped_confident_boxes() -> None:
    lab = make_labels([[0, 0, 10, 10]] * 2, scores=[0.9, 0.2])
    lab.detections.data["status"][0] = "dropped"
    run("confident_image", lab)
    assert reasons(lab) == ["", "no_confident_box"]


def test_max_per_image_keeps_top_scores_ties_in_order() -> None:
    lab = make_labels([[0, 0, 10, 10]] * 4, scores=[0.1, 0.9, 0.5, 0.9])
    other = make_labels([[0, 0, 10, 10]] * 2, scores=[0.1, 0.2])
    run("max_per_image", lab, other, max_boxes=2)
    assert status(lab) == ["dropped", "kept", "dropped", "kept"]
    assert reasons(lab) == ["over_cap", "", "over_cap", ""]
    assert status(other) == ["kept", "kept"]


def test_max_per_image_per_class_cap_and_dropped_rows_do_not_count() -> None:
    lab = make_labels([[0, 0, 10, 10]] * 5, scores=[0.99, 0.8, 0.7, 0.9, 0.6],
                      classes=["car", "person", "car", "car", "person"])
    lab.detections.data["status"][0] = "dropped"
    run("max_per_image", lab, per_class={"car": 1})
    assert status(lab) == ["dropped", "kept", "dropped", "kept", "kept"]
    assert reasons(lab) == ["", "", "over_cap", "", ""]


# ---- geometry -----------------------------------------------------------------------------------------------------


def test_degenerate_boxes_clip_or_drop() -> None:
    boxes = [[10, 10, 50, 50], [-10, 20, 30, 60], [120, 10, 150, 40], [10, 10, 11, 50], [50, 50, 40, 60],
             [90, 90, 130, 101]]
    (lab,) = run("degenerate_boxes", make_labels(boxes, scores=[0.9] * 6))
    assert reasons(lab) == ["", "", "outside_image", "degenerate", "degenerate", ""]
    clipped = [[10, 10, 50, 50], [0, 20, 30, 60], [90, 90, 100, 100]]
    np.testing.assert_array_equal(lab.detections.xyxy[[0, 1, 5]], clipped)
    (lab,) = run("degenerate_boxes", make_labels(boxes, scores=[0.9] * 6), clip=False)
    assert reasons(lab) == ["", "outside_image", "outside_image", "degenerate", "degenerate", "outside_image"]
    np.testing.assert_array_equal(lab.detections.xyxy[1], [-10, 20, 30, 60])


def test_degenerate_box_after_clipping() -> None:
    (lab,) = run("degenerate_boxes", make_labels([[-10, 0, 1, 50]], scores=[0.9]))
    assert reasons(lab) == ["degenerate"]  # 1 px wide once clipped


def test_box_area_bounds_as_fraction_and_pixels() -> None:
    boxes = [[0, 0, 5, 5], [0, 0, 200, 100], [0, 0, 195, 98], [0, 0, 150, 100], [0, 0, 10, 10], [0, 0, 20, 20]]
    classes = ["person"] * 5 + ["car"]
    lab = make_labels(boxes, scores=[0.9] * 6, classes=classes, size=(200, 100))
    run("box_area", lab, per_class={"car": {"min_pixels": 1000}})
    assert reasons(lab) == ["too_small", "too_large", "too_large", "", "", "too_small"]
    lab = make_labels([[0, 0, 20, 10]], scores=[0.9], size=(200, 100))
    run("box_area", lab, min_area=0.02)  # 200 px² = 1 % of the image
    assert reasons(lab) == ["too_small"]


def test_aspect_ratio_bounds_per_class() -> None:
    lab = make_labels([[0, 0, 99, 1], [0, 0, 99, 0.9], [0, 0, 40, 20], [0, 0, 40, 20], [0, 0, 0, 5]],
                      scores=[0.9] * 5, classes=["car", "car", "person", "car", "car"])
    run("aspect_ratio", lab, per_class={"person": {"max_ratio": 1.5}})
    assert reasons(lab) == ["", "bad_aspect", "bad_aspect", "", ""]


def test_border_flags_boxes_touching_the_edge() -> None:
    boxes = [[1, 100, 50, 200], [3, 2, 50, 200], [100, 100, 998.5, 200], [100, 400, 200, 499.5]]
    lab = make_labels(boxes, scores=[0.9, 0.9, 0.9, 0.1], size=(1000, 500))  # margin: 2 px across, 1 px down
    run("border", lab)
    assert status(lab) == ["flagged", "kept", "flagged", "flagged"]
    assert reasons(lab) == ["touches_border", "", "touches_border", "touches_border"]
    run("score_threshold", lab)
    assert status(lab)[3] == "dropped" and reasons(lab)[3] == "low_score"


@pytest.mark.parametrize("chunk_rows", [128, 5])
def test_batch_decisions_equal_one_image_at_a_time(chunk_rows: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(overlap, "CHUNK_ROWS", chunk_rows)  # NMS over several images per call, or few

    def images() -> list[Labels]:
        rng_ = np.random.default_rng(1)  # the same images each call
        out = []
        for _ in range(6):
            w, h = int(rng_.integers(50, 400)), int(rng_.integers(50, 400))
            n = int(rng_.integers(0, 12))
            xy = rng_.uniform(-20, 0.8 * min(w, h), (n, 2))
            wh = rng_.uniform(0, 200, (n, 2))
            out.append(make_labels(np.hstack([xy, xy + wh]), scores=rng_.uniform(0, 1, n),
                                   classes=rng_.choice(["person", "car", ""], n), size=(w, h)))
        return out

    steps = [("degenerate_boxes", {}), ("soft_nms", {"threshold": 0.3}), ("nms", {"per_class": {"car": 0.3}}),
             ("nms", {"class_agnostic": True, "iou": 0.7}), ("max_per_image", {"max_boxes": 5}), ("known_classes", {}),
             ("box_area", {"min_area": 0.05}), ("aspect_ratio", {"max_ratio": 3}), ("border", {}),
             ("confident_image", {"high": 0.6}), ("score_threshold", {"per_class": {"car": 0.5}})]
    together, alone = images(), images()
    for stage_type, params in steps:
        run(stage_type, *together, **params)
        for lab in alone:
            run(stage_type, lab, **params)
    for a, b in zip(together, alone):
        assert status(a) == status(b) and reasons(a) == reasons(b)
        np.testing.assert_array_equal(a.detections.xyxy, b.detections.xyxy)
        np.testing.assert_array_equal(a.detections.confidence, b.detections.confidence)
    assert sum(len(lab.detections) for lab in together) > 10
    seen = {r for lab in together for r in reasons(lab)}
    assert {"too_small", "low_score", "unknown_class", "over_cap", "nms", "soft_nms"} <= seen, seen


def test_chunks_split_between_images_only() -> None:
    image = np.array([0, 0, 1, 1, 1, 2, 3, 3])
    assert [c.tolist() for c in overlap.chunks(image, limit=3)] == [[0, 1], [2, 3, 4], [5, 6, 7]]
    assert [c.tolist() for c in overlap.chunks(np.array([0, 0, 0, 0, 0, 1]), limit=3)] == [[0, 1, 2, 3, 4], [5]]


# ---- nms, soft_nms ------------------------------------------------------------------------------------------------


def overlapping() -> Labels:
    # rows 0 and 1: IoU 90 / 110 = 0.82; row 2 is row 1's box as a car; row 3 stands apart
    return make_labels([[0, 0, 10, 10], [1, 0, 11, 10], [1, 0, 11, 10], [50, 50, 60, 60]],
                       scores=[0.9, 0.8, 0.7, 0.1], classes=["person", "person", "car", "person"])


def test_nms_class_aware_and_agnostic() -> None:
    (lab,) = run("nms", overlapping())
    assert reasons(lab) == ["", "nms", "", ""]
    (lab,) = run("nms", overlapping(), class_agnostic=True)
    assert reasons(lab) == ["", "nms", "nms", ""]
    (lab,) = run("nms", overlapping(), per_class={"person": 0.9})
    assert reasons(lab) == ["", "", "", ""]


def test_nms_unknown_score_ranks_last_and_dropped_boxes_do_not_suppress() -> None:
    (lab,) = run("nms", make_labels([[0, 0, 10, 10], [1, 0, 11, 10]], scores=[NAN, 0.2]))
    assert reasons(lab) == ["nms", ""]
    lab = make_labels([[0, 0, 10, 10], [1, 0, 11, 10]], scores=[0.9, 0.2])
    lab.detections.data["status"][0] = "dropped"
    run("nms", lab)
    assert status(lab) == ["dropped", "kept"]


def test_nms_single_and_empty() -> None:
    one, empty = make_labels([[0, 0, 10, 10]], scores=[0.5]), make_labels([])
    run("nms", one, empty)
    assert status(one) == ["kept"] and status(empty) == []


def test_nms_per_class_needs_class_aware() -> None:
    from autolabel import Pipeline

    stages = [{"type": "plugins:CenterBox", "label": "car"},
              {"type": "nms", "class_agnostic": True, "per_class": {"car": 0.3}}]
    with pytest.raises(ConfigError, match=r"^stages\[1\]: per_class IoUs need class_agnostic: false \(class-agnostic"):
        Pipeline.from_dict({"ontology": ["car"], "stages": stages})


def test_soft_nms_rescores_and_keeps_the_raw_score() -> None:
    lab = make_labels([[0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60], [70, 70, 80, 80]],
                      scores=[0.9, 0.8, 0.1, NAN])
    run("soft_nms", lab, threshold=0.2)
    decayed = 0.8 * math.exp(-1.0 / 0.5)  # IoU 1 with a better box: score * exp(-iou² / sigma)
    np.testing.assert_allclose(lab.detections.confidence[:3], [0.9, decayed, 0.1], rtol=1e-6)
    assert math.isnan(lab.detections.confidence[3])
    np.testing.assert_allclose(lab.detections.data["raw_confidence"][:3], [0.9, 0.8, 0.1], rtol=1e-6)
    assert reasons(lab) == ["", "soft_nms", "low_score", ""]
    run("soft_nms", lab, threshold=0.2)  # a second pass decays nothing new and keeps the first raw scores
    np.testing.assert_allclose(lab.detections.data["raw_confidence"][:3], [0.9, 0.8, 0.1], rtol=1e-6)


def test_soft_nms_default_floor_only_rescores() -> None:
    (lab,) = run("soft_nms", make_labels([[0, 0, 10, 10], [0, 0, 10, 10]], scores=[0.9, 0.8]))
    assert status(lab) == ["kept", "kept"]
    assert lab.detections.confidence[1] < 0.11


# ---- wbf ----------------------------------------------------------------------------------------------------------


def two_models() -> Labels:
    lab = make_labels([[10, 10, 50, 50]], scores=[0.9], stage="a")
    lab.add(sv.Detections(xyxy=np.array([[12, 10, 52, 50], [70, 70, 90, 90]], dtype=np.float32),
                          confidence=np.array([0.7, 0.6], dtype=np.float32),
                          data={"class_name": np.array(["person", "car"], dtype=object),
                                "phrase": np.array(["a man", "car"], dtype=object)}),
            stage="b", provenance={"task": "od"})
    lab.detections.data["phrase"][0] = "person"
    return lab


def test_wbf_fuses_across_stages_with_agreement() -> None:
    (lab,) = run("wbf", two_models())
    det = lab.detections
    assert status(lab) == ["dropped", "dropped", "dropped", "kept", "kept"]
    assert reasons(lab)[:3] == ["fused"] * 3
    weighted = [(0.9 * 10 + 0.7 * 12) / 1.6, 10, (0.9 * 50 + 0.7 * 52) / 1.6, 50]  # score-weighted corners
    np.testing.assert_allclose(det.xyxy[3], weighted, atol=1e-3)
    np.testing.assert_allclose(det.xyxy[4], [70, 70, 90, 90], atol=1e-3)
    np.testing.assert_allclose(det.confidence[3:], [0.8, 0.6 / 2], atol=1e-6)  # seen by 1 of 2 models: halved
    assert list(det.data["agreement"][3:]) == [2, 1]
    assert list(det.data["class_name"][3:]) == ["person", "car"]
    assert list(det.data["phrase"][3:]) == ["person", "car"]  # the best-scoring member's phrase
    assert list(det.data["stage"][3:]) == ["wbf", "wbf"]
    assert lab.provenance["wbf"]["sources"] == ["a", "b"]


def test_wbf_min_agreement_flags_boxes_one_model_saw() -> None:
    (lab,) = run("wbf", two_models(), min_agreement=2)
    assert status(lab)[3:] == ["kept", "flagged"] and reasons(lab)[3:] == ["", "low_agreement"]


def test_wbf_on_empty_and_single_box() -> None:
    empty, one = make_labels([]), make_labels([[10, 10, 50, 50]], scores=[0.5])
    run("wbf", empty, one)
    assert status(empty) == []
    assert status(one) == ["dropped", "kept"] and list(one.detections.data["agreement"][1:]) == [1]
    np.testing.assert_allclose(one.detections.xyxy[1], [10, 10, 50, 50], atol=1e-3)


def test_wbf_leaves_masks_and_ocr_lines_and_other_stages_alone() -> None:
    lab = two_models()
    masks = np.zeros((1, 100, 100), dtype=bool)
    masks[0, 10:50, 10:50] = True
    lab.add(make_labels([[10, 10, 50, 50]], scores=[0.9], masks=masks).detections, stage="seg")
    lab.add(make_labels([[10, 10, 50, 50]], scores=[0.9], quad=np.array([[10, 10, 50, 10, 50, 50, 10, 50]])).detections,
            stage="reader", provenance={"task": "ocr_with_region"})
    run("wbf", lab, from_stages=["a"])
    assert status(lab) == ["dropped", "kept", "kept", "kept", "kept", "kept"]
    assert list(lab.detections.data["stage"][5:]) == ["wbf"]


def test_wbf_stages_must_be_earlier_stages() -> None:
    from autolabel import Pipeline

    stages = [{"type": "plugins:CenterBox", "name": "a", "label": "person"},
              {"type": "wbf", "from_stages": ["a", "b"]},
              {"type": "plugins:CenterBox", "name": "b", "label": "person"}]
    with pytest.raises(ConfigError, match=r"^stages\[1\]\.from_stages: 'b' is not an earlier stage \(earlier"):
        Pipeline.from_dict({"ontology": ["person"], "stages": stages})
