"""The merge rule of ``autolabel refine``, on hand-made labels: what fuses, what stays, and the round of each label."""

from __future__ import annotations

import numpy as np
import pytest
import supervision as sv

from autolabel.labels import Labels
from autolabel.train.merge import NO_AGREEMENT, match, merge, tag


def labels(rows, stage="detect", provenance=None) -> Labels:
    """Labels of a 200x100 image from rows (class, xyxy, score[, status])."""
    out = Labels(200, 100)
    if rows:
        det = sv.Detections(
            xyxy=np.array([r[1] for r in rows], dtype=np.float32),
            confidence=np.array([r[2] for r in rows], dtype=np.float32),
            data={"class_name": np.array([r[0] for r in rows], dtype=object),
                  "status": np.array([r[3] if len(r) > 3 else "kept" for r in rows], dtype=object),
                  "phrase": np.array([f"{r[0]} {stage}" for r in rows], dtype=object)})
        out.add(det, stage=stage)
    out.provenance[stage] = provenance or {"model": stage}
    return out


def rows(result: Labels) -> list[tuple]:
    d = result.detections
    return sorted((str(d.data["class_name"][i]), [round(float(v), 3) for v in d.xyxy[i]],
                   round(float(d.confidence[i]), 4), int(d.data["round"][i]), str(d.data["found_in"][i]),
                   str(d.data["stage"][i]), str(d.data["status"][i]), str(d.data["reason"][i]))
                  for i in range(len(d)))


OLD = [("dog", [0, 0, 100, 100], 0.6), ("cat", [120, 0, 180, 50], 0.9), ("dog", [0, 0, 10, 10], 0.5, "dropped")]
NEW = [("dog", [10, 0, 110, 100], 0.2), ("cat", [120, 60, 180, 100], 0.7)]


def test_a_box_both_rounds_found_fuses_and_keeps_the_round_that_made_it_first():
    merged = merge(tag(labels(OLD, provenance={"model": "base"}), 0), tag(labels(NEW, provenance={"model": "r1"}), 1))
    assert rows(merged) == [
        ("cat", [120.0, 0.0, 180.0, 50.0], 0.9, 0, "0", "detect@round-0", "kept", ""),
        ("cat", [120.0, 60.0, 180.0, 100.0], 0.7, 1, "1", "detect@round-1", "kept", ""),
        # score-weighted: (0.6 * 0 + 0.2 * 10) / 0.8 = 2.5; the mean score; round 0 made it, round 1 confirmed it
        ("dog", [2.5, 0.0, 102.5, 100.0], 0.4, 0, "0,1", "detect@round-0", "kept", ""),
    ]
    assert merged.provenance == {"detect@round-0": {"model": "base", "round": 0},
                                 "detect@round-1": {"model": "r1", "round": 1}}
    fused = list(merged.detections.data["class_name"]).index("dog")
    assert merged.detections.data["phrase"][fused] == "dog detect"  # the newer round's own columns


def test_agreement_keeps_only_what_both_rounds_found_the_rest_dropped_with_a_reason():
    merged = merge(tag(labels(OLD), 0), tag(labels(NEW), 1), rule="agreement")
    statuses = {(r[0], r[4]): (r[6], r[7]) for r in rows(merged)}
    assert statuses == {("dog", "0,1"): ("kept", ""), ("cat", "0"): ("dropped", NO_AGREEMENT),
                        ("cat", "1"): ("dropped", NO_AGREEMENT)}


def test_a_later_round_merges_with_the_merged_labels_of_the_rounds_before():
    one = merge(tag(labels(OLD), 0), tag(labels(NEW), 1))
    two = merge(one, tag(labels([("dog", [5, 0, 105, 100], 0.8), ("bird", [0, 0, 50, 50], 0.9)]), 2))
    found = {(r[0], r[4]): (r[3], r[5]) for r in rows(two)}
    assert found[("dog", "0,1,2")] == (0, "detect@round-0")
    assert found[("bird", "2")] == (2, "detect@round-2")
    assert tag(one, 5) is one  # labels already tagged keep their rounds


@pytest.mark.parametrize("new, pairs", [
    ([("cat", [0, 0, 100, 100], 0.9)], []),  # another class never fuses
    ([("dog", [60, 0, 160, 100], 0.9)], []),  # IoU 0.25 < 0.55
    ([("dog", [0, 10, 100, 110], 0.9), ("dog", [5, 0, 105, 100], 0.8)], [(0, 1)]),  # one to one: the best overlap
])
def test_boxes_pair_one_to_one_within_a_class_above_the_iou(new, pairs):
    a = labels([("dog", [0, 0, 100, 100], 0.5)]).detections
    b = labels(new).detections
    assert match(a, b, 0.55) == pairs
