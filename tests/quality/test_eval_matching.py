"""What eval and calibrate count as a hit: the greedy box matcher (COCO's rule) and the image / class matching,
on their edge cases — IoU exactly at the threshold, touching and empty boxes, ties in score, classes by name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from autolabel.ontology import Ontology
from autolabel.quality.assign import greedy, xywh
from autolabel.quality.data import Paired, Side
from autolabel.quality.match import ClassMatch, ImageMatch, file_sha256, match_classes, match_images


def side(boxes: list[tuple], image: list[int] | None = None, cls: list[str] | None = None,
         score: list[float] | None = None) -> Side:
    """Boxes (x1, y1, x2, y2) on images (default all on image 0), of classes (default cat), with scores."""
    n = len(boxes)

    def objects(values: list) -> np.ndarray:
        out = np.empty(n, dtype=object)
        out[:] = values
        return out

    return Side(np.array(image or [0] * n, dtype=np.int32), np.array(boxes, dtype=np.float64).reshape(-1, 4),
                objects(cls or ["cat"] * n), np.array(score if score is not None else [1.0] * n, dtype=np.float64),
                objects(["kept"] * n), objects([""] * n), objects([""] * n), [None] * n)


def match(run: Side, gt: Side, iou: float = 0.5, class_aware: bool = True) -> list[int]:
    return greedy(run, np.arange(len(run)), gt, np.arange(len(gt)), iou, class_aware).tolist()


def test_xywh_is_width_and_height_not_the_far_corner() -> None:
    assert xywh(np.array([[2.0, 3.0, 10.0, 7.0]])).tolist() == [[2.0, 3.0, 8.0, 4.0]]
    assert xywh([1, 1, 4, 9]).tolist() == [[1.0, 1.0, 3.0, 8.0]]  # one box, any sequence
    assert xywh([1, 1, 4, 9]).dtype == np.float64  # doubles, as pycocotools' iou takes them


def test_an_iou_exactly_at_the_threshold_is_a_match_and_just_below_it_is_not() -> None:
    truth = side([(0, 0, 10, 10)])
    half = side([(0, 0, 10, 5)])  # IoU 50 / 100
    assert match(half, truth, 0.5) == [0]
    assert match(half, truth, 0.5 + 1e-9) == [-1]
    third = side([(0, 0, 10, 5), (0, 5, 10, 10)])
    assert match(third, truth, 0.5) == [0, -1]  # the second half is left: its box is taken


def test_boxes_match_within_their_class_unless_asked_otherwise() -> None:
    # eval's operating point and calibrate count a box on another class's ground truth as a miss; only the
    # confusion table matches across classes
    dog = side([(0, 0, 10, 10)], cls=["dog"])
    cat = side([(0, 0, 10, 10)])
    assert greedy(cat, np.arange(1), dog, np.arange(1), 0.5).tolist() == [-1]
    assert match(cat, dog, class_aware=False) == [0]


def test_touching_and_empty_boxes_never_match() -> None:
    truth = side([(0, 0, 10, 10)])
    assert match(side([(10, 0, 20, 10)]), truth, 1e-9) == [-1]  # shares an edge: IoU 0
    assert match(side([(5, 5, 5, 8)]), truth, 1e-9) == [-1]  # no area
    assert match(side([(0, 0, 10, 10)]), side([(3, 3, 3, 3)]), 1e-9) == [-1]
    assert match(side([(0, 0, 10, 10)]), truth, 1.0) == [0]  # identical: IoU 1 reaches even 1.0


def test_the_higher_score_takes_the_box_first_and_ties_keep_the_row_order() -> None:
    truth = side([(0, 0, 10, 10)])
    assert match(side([(0, 0, 10, 9), (0, 0, 10, 10)], score=[0.4, 0.9]), truth) == [-1, 0]  # not the first row
    assert match(side([(0, 0, 10, 9), (0, 0, 10, 10)], score=[0.9, 0.4]), truth) == [0, -1]  # not the best IoU
    assert match(side([(0, 0, 10, 9), (0, 0, 10, 10)], score=[0.7, 0.7]), truth) == [0, -1]  # a tie: rows in order
    assert match(side([(0, 0, 10, 10), (0, 0, 10, 9)], score=[0.7, 0.7]), truth) == [0, -1]
    assert match(side([(0, 0, 10, 9), (0, 0, 10, 10)], score=[np.nan, 0.1]), truth) == [-1, 0]  # unknown: last


def test_twin_ground_truth_boxes_are_taken_in_row_order_among_many_images() -> None:
    """Equal IoUs go to the earlier ground-truth row, as COCOeval does, also when the rows of 40 boxes on two images
    interleave (a sort that is not stable reorders rows 5 and 7 of image 0 among these)."""
    image = [1, 0] * 20
    boxes = [(100 + 20 * k, 0, 110 + 20 * k, 10) for k in range(40)]
    boxes[5] = boxes[7] = (0, 0, 10, 10)  # twins on image 0
    truth = side(boxes, image=image)
    run = side([(0, 0, 10, 10), (0, 0, 10, 10)], image=[0, 0], score=[0.9, 0.8])
    assert match(run, truth) == [5, 7]


def test_each_prediction_takes_the_box_it_overlaps_most_else_the_next_one_left() -> None:
    truth = side([(0, 0, 10, 10), (2, 0, 12, 10)])
    # IoU with the first 80/120, with the second 100/100: the second, though listed second
    assert match(side([(2, 0, 12, 10)]), truth) == [1]
    # the best box taken by a higher score, the next one (IoU 80/120 = 0.67) still reaches 0.5
    assert match(side([(2, 0, 12, 10), (2, 0, 12, 10)], score=[0.9, 0.8]), truth) == [1, 0]
    # ... but not 0.7
    assert match(side([(2, 0, 12, 10), (2, 0, 12, 10)], score=[0.9, 0.8]), truth, 0.7) == [1, -1]


def test_classes_must_agree_unless_the_matching_is_class_agnostic() -> None:
    truth = side([(0, 0, 10, 10), (20, 0, 30, 10)], cls=["dog", "cat"])
    run = side([(0, 0, 10, 10), (20, 0, 30, 10)], cls=["cat", "cat"], score=[0.9, 0.8])
    assert match(run, truth) == [-1, 1]
    assert match(run, truth, class_aware=False) == [0, 1]
    # class-agnostic: the higher-scored box takes the best overlap whatever its class
    assert match(side([(0, 0, 10, 9), (0, 0, 10, 10)], cls=["dog", "cat"], score=[0.9, 0.1]),
                 side([(0, 0, 10, 10)], cls=["cat"]), class_aware=False) == [0, -1]


def test_boxes_match_only_on_their_own_image_whatever_the_order_of_the_rows() -> None:
    truth = side([(0, 0, 10, 10), (0, 0, 10, 10), (50, 50, 60, 60)], image=[2, 0, 1])
    run = side([(50, 50, 60, 60), (0, 0, 10, 10), (0, 0, 10, 10), (0, 0, 10, 10)], image=[1, 2, 3, 0],
               score=[0.5, 0.6, 0.7, 0.8])
    assert match(run, truth) == [2, 0, -1, 1]  # image 3 has no ground truth
    # a subset of rows, given out of order: the answer is per given row
    rows, gt_rows = np.array([3, 0]), np.array([2, 1])
    assert greedy(run, rows, truth, gt_rows, 0.5).tolist() == [1, 2]
    assert greedy(run, np.array([], dtype=int), truth, gt_rows, 0.5).tolist() == []
    assert greedy(run, rows, truth, np.array([], dtype=int), 0.5).tolist() == [-1, -1]


def test_two_predictions_on_a_later_image_compete_for_its_one_ground_truth_box() -> None:
    run = side([(0, 0, 5, 5), (0, 0, 10, 10), (0, 0, 10, 10)], image=[0, 1, 1], score=[0.9, 0.8, 0.7])
    assert match(run, side([(0, 0, 10, 10)], image=[1])) == [-1, 0, -1]  # taken once, by the higher score


def test_an_image_with_no_ground_truth_between_others_does_not_shift_the_match() -> None:
    truth = side([(0, 0, 10, 10), (0, 0, 10, 10)], image=[0, 2])
    run = side([(0, 0, 10, 10)] * 3, image=[0, 1, 2], score=[0.3, 0.2, 0.1])
    assert match(run, truth) == [0, -1, 1]


# -- images and classes ------------------------------------------------------------------------------------------
def test_images_match_by_path_then_unique_name_then_content_hash(tmp_path: Path) -> None:
    (tmp_path / "x.png").write_bytes(b"same bytes")
    (tmp_path / "y.png").write_bytes(b"other bytes")
    digest = file_sha256(tmp_path / "x.png")
    run = [("a/b.png", None), ("c/d.png", None), ("e/twin.png", None), ("f/twin.png", None), ("g/renamed.png", digest),
           ("h/left.png", "0" * 64)]
    gt = [(".\\a\\b.png", None),  # a Windows path with ./: the same relative path
          ("elsewhere/d.png", None),  # a unique name on both sides
          ("twin.png", None),  # two run images have that name: not by name
          ("other.png", tmp_path / "x.png"),  # by content
          ("unknown.png", tmp_path / "y.png"), ("gone.png", tmp_path / "missing.png")]
    found = match_images(run, gt)
    assert found.pairs == [(0, 0), (1, 1), (4, 3)]
    assert found.matched_by == {"rel_path": 1, "name": 1, "sha256": 1}
    assert found.unmatched_run == ["e/twin.png", "f/twin.png", "h/left.png"]
    assert found.unmatched_gt == ["gone.png", "twin.png", "unknown.png"]
    assert file_sha256(tmp_path / "missing.png") is None


def test_a_path_match_wins_over_a_name_and_each_image_is_taken_once() -> None:
    run = [("a.png", "h1"), ("sub/a.png", "h2")]
    gt = [("sub/a.png", None), ("a.png", None)]
    found = match_images(run, gt)
    assert found.pairs == [(0, 1), (1, 0)] and found.matched_by == {"rel_path": 2, "name": 0, "sha256": 0}
    # the same name twice in the ground truth: neither is matched by name
    found = match_images([("x/a.png", None)], [("y/a.png", None), ("z/a.png", None)])
    assert found.pairs == [] and found.unmatched_gt == ["y/a.png", "z/a.png"]


def test_a_content_hash_match_needs_both_sides_left_and_a_hash(tmp_path: Path) -> None:
    (tmp_path / "p.png").write_bytes(b"pixels")
    digest = file_sha256(tmp_path / "p.png")
    found = match_images([("q.png", digest), ("r.png", digest)], [("s.png", tmp_path / "p.png")])
    assert len(found.pairs) == 1 and found.matched_by["sha256"] == 1
    none = match_images([("q.png", None)], [("s.png", tmp_path / "p.png")])
    assert none.pairs == [] and none.matched_by == {"rel_path": 0, "name": 0, "sha256": 0}


def test_file_sha256_reads_files_larger_than_one_chunk(tmp_path: Path) -> None:
    import hashlib

    data = bytes(range(256)) * 5000  # 1.2 MiB: two chunks of 1 MiB
    (tmp_path / "big.bin").write_bytes(data)
    assert file_sha256(tmp_path / "big.bin") == hashlib.sha256(data).hexdigest()


def test_classes_match_through_the_ontology_and_the_first_name_stands_for_a_class() -> None:
    ontology = Ontology.from_config({"person": ["person", "man"], "car": None, "bus": None})
    found = match_classes(ontology, ["Persons", "man", "Cars", "truck", "car"])
    assert found.gt_to_run == {"Persons": "person", "man": "person", "Cars": "car", "car": "car"}
    assert found.matched == {"person": "Persons", "car": "Cars"}  # in ontology order, the first name of each
    assert found.unmatched_run == ["bus"] and found.unmatched_gt == ["truck"]
    assert list(match_classes(ontology, ["bus", "person"]).matched) == ["person", "bus"]


# -- what each filter's drops cost ------------------------------------------------------------------------------------
def paired(run: Side, gt: Side, classes: tuple[str, ...] = ("cat",)) -> Paired:
    images = int(max(run.image.max(initial=0), gt.image.max(initial=0))) + 1
    return Paired([f"{k}.png" for k in range(images)], np.full((images, 2), 100), run, gt,
                  ImageMatch([], {"rel_path": images, "name": 0, "sha256": 0}, [], []),
                  ClassMatch({c: c for c in classes}, {c: c for c in classes}), images, images)


def test_a_dropped_box_would_have_been_a_hit_only_on_ground_truth_no_kept_box_found() -> None:
    from autolabel.quality.eval import filters

    truth = side([(0, 0, 10, 10), (50, 50, 60, 60), (80, 80, 90, 90)])
    run = side([(0, 0, 10, 10), (0, 0, 10, 10), (50, 50, 60, 60), (80, 80, 90, 90), (50, 50, 60, 60)],
               score=[0.9, 0.8, 0.2, 0.1, 0.3])
    run.status[:] = ["kept", "dropped", "dropped", "dropped", "flagged"]
    run.reason[:] = ["", "nms", "low_score", "low_score", "touches_border"]
    run.stage[:] = ["model"] * 5
    pair = paired(run, truth)
    op = np.array([0])  # flagged boxes excluded from the operating point here
    match = greedy(run, op, truth, np.arange(3), 0.5)
    out = filters(pair, op, match, np.arange(3), 0.5, [("nms", "nms", "drop"), ("cut", "score_threshold", "drop"),
                                                       ("b", "border", "flag")])
    # the nms drop duplicates ground truth 0, which the kept box found: a false positive. Ground truths 1 and 2
    # were missed: the boxes left out compete for them as kept boxes would (highest score first), so the flagged
    # box (0.3) takes 1 from the low-score drop (0.2), and the other low-score drop would have found 2
    assert out == {
        "b/touches_border": {"stage": "b", "reason": "touches_border", "dropped": 0, "true_positives": 0,
                             "false_positives": 0, "flagged": 1, "flagged_true_positives": 1},
        "cut/low_score": {"stage": "cut", "reason": "low_score", "dropped": 2, "true_positives": 1,
                          "false_positives": 1, "flagged": 0, "flagged_true_positives": 0},
        "nms/nms": {"stage": "nms", "reason": "nms", "dropped": 1, "true_positives": 0, "false_positives": 1,
                    "flagged": 0, "flagged_true_positives": 0},
    }
    assert list(out) == sorted(out)


def test_mask_ap_needs_a_class_with_masks_on_both_sides() -> None:
    from autolabel.quality.eval import evaluate

    square = {"size": [100, 100], "counts": "0"}  # an empty RLE is still a mask
    truth = side([(0, 0, 10, 10), (20, 20, 30, 30)], cls=["cat", "dog"])
    truth.segmentation[1] = square
    run = side([(0, 0, 10, 10), (20, 20, 30, 30)], cls=["cat", "dog"], score=[0.9, 0.8])
    run.segmentation[0] = square  # masks on both sides, but never of the same class
    result = evaluate(paired(run, truth, ("cat", "dog")))
    assert result["overall"]["mask_ap"] is None and result["per_class"]["cat"]["mask_ap"] is None
    assert result["overall"]["ap"] == pytest.approx(1.0)
