"""Mask filters on hand-made masks: SAM data engine checks, cleanup, consistency, mask NMS."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import supervision as sv

from autolabel.filters.masks import remove_small_regions
from autolabel.labels import Labels
from filter_cases import make_labels, reasons, run, status


def square(size: int, x1: int, y1: int, x2: int, y2: int) -> np.ndarray:
    m = np.zeros((size, size), dtype=bool)
    m[y1:y2, x1:x2] = True
    return m


def with_box_only_row(lab: Labels, box: list[float]) -> Labels:
    """Add a row without a mask (another stage's box) to an image whose rows have masks."""
    lab.add(sv.Detections(xyxy=np.array([box], dtype=np.float32), confidence=np.array([0.9], dtype=np.float32),
                          data={"class_name": np.array(["person"], dtype=object)}), stage="boxes")
    return lab


def test_predicted_iou_floor_and_unknown_values() -> None:
    masks = np.stack([square(10, 0, 0, 5, 5)] * 3)
    lab = make_labels([[0, 0, 5, 5]] * 3, scores=[0.9] * 3, masks=masks, predicted_iou=np.array([0.9, 0.8, np.nan]))
    run("mask_predicted_iou", lab)
    assert reasons(lab) == ["", "low_predicted_iou", ""]


def test_stability_without_logits_passes_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    masks = np.stack([square(10, 0, 0, 5, 5)] * 2)
    lab = make_labels([[0, 0, 5, 5]] * 2, scores=[0.9] * 2, masks=masks)  # no stability_score column
    with caplog.at_level(logging.WARNING, logger="autolabel.filters"):
        run("mask_stability", lab, make_labels([]))
    assert status(lab) == ["kept", "kept"] and reasons(lab) == ["", ""]
    assert "no 'stability_score' column" in caplog.text and "every mask passes" in caplog.text
    lab = make_labels([[0, 0, 5, 5]] * 2, scores=[0.9] * 2, masks=masks, stability_score=np.array([0.96, 0.9]))
    run("mask_stability", lab, per_class={"person": 0.95})
    assert reasons(lab) == ["", "unstable_mask"]


def test_mask_area_drops_whole_image_masks_only() -> None:
    masks = np.stack([square(10, 0, 0, 10, 10), square(10, 0, 0, 5, 10), square(10, 0, 0, 10, 9)])
    masks[0, 0, :4] = False  # 96 of 100 px
    lab = make_labels([[0, 0, 10, 10], [0, 0, 5, 10], [0, 0, 10, 9]], scores=[0.9] * 3, masks=masks, size=(10, 10))
    with_box_only_row(lab, [0, 0, 10, 10])  # a whole-image box without a mask: not this filter's business
    run("mask_area", lab)
    assert reasons(lab) == ["whole_image_mask", "", "", ""]


def test_remove_small_regions_follows_sam() -> None:
    mask = square(20, 2, 2, 12, 12)
    mask[5:7, 5:7] = False  # a 4 px hole
    mask[15:17, 15:17] = True  # a 4 px island
    assert remove_small_regions(mask, 3, "holes") is mask  # nothing under 3 px: the same array back
    filled = remove_small_regions(mask, 10, "holes")
    assert filled[5:7, 5:7].all() and filled[15:17, 15:17].all() and filled.sum() == 104
    cleaned = remove_small_regions(filled, 10, "islands")
    np.testing.assert_array_equal(cleaned, square(20, 2, 2, 12, 12))
    specks = np.zeros((20, 20), dtype=bool)
    specks[0, 0:3] = True
    specks[10, 0:5] = True
    np.testing.assert_array_equal(remove_small_regions(specks, 10, "islands"), specks & (np.arange(20) == 10)[:, None])


def test_mask_cleanup_changes_masks_and_refits_boxes() -> None:
    mask = square(20, 2, 2, 12, 12)
    mask[5:7, 5:7] = False
    mask[15:17, 15:17] = True
    lab = make_labels([[0, 0, 20, 20]], scores=[0.9], masks=mask[None], size=(20, 20))
    with_box_only_row(lab, [1, 1, 3, 3])
    run("mask_cleanup", lab, min_region=10, update_box=True)
    np.testing.assert_array_equal(lab.detections.mask[0], square(20, 2, 2, 12, 12))
    np.testing.assert_array_equal(lab.detections.xyxy, [[2, 2, 12, 12], [1, 1, 3, 3]])
    assert status(lab) == ["kept", "kept"]
    lab = make_labels([[0, 0, 20, 20]], scores=[0.9], masks=mask[None], size=(20, 20))
    run("mask_cleanup", lab, min_region=10, holes=False)  # the detector's box stays by default
    assert lab.detections.mask[0].sum() == 96 and lab.detections.xyxy.tolist() == [[0, 0, 20, 20]]


def test_mask_box_consistency() -> None:
    masks = np.stack([square(50, 2, 2, 12, 12), square(50, 2, 2, 12, 12), np.zeros((50, 50), dtype=bool)])
    lab = make_labels([[2, 2, 12, 12], [30, 30, 40, 40], [0, 0, 10, 10]], scores=[0.9] * 3, masks=masks, size=(50, 50))
    with_box_only_row(lab, [0, 0, 1, 1])
    run("mask_box_consistency", lab)
    assert reasons(lab) == ["", "mask_box_mismatch", "empty_mask", ""]


def test_mask_nms_class_agnostic_by_default() -> None:
    def image() -> Labels:
        masks = np.stack([square(20, 0, 0, 10, 10), square(20, 0, 0, 10, 10), square(20, 10, 10, 20, 20)])
        lab = make_labels([[0, 0, 10, 10]] * 2 + [[10, 10, 20, 20]], scores=[0.8, 0.9, 0.5],
                          classes=["person", "dog", "person"], masks=masks, size=(20, 20))
        return with_box_only_row(lab, [0, 0, 10, 10])  # same box, no mask: not compared

    (lab,) = run("mask_nms", image())
    assert reasons(lab) == ["mask_nms", "", "", ""]
    (lab,) = run("mask_nms", image(), class_agnostic=False)
    assert reasons(lab) == ["", "", "", ""]


def test_mask_filters_on_box_only_and_empty_images() -> None:
    boxes, empty = make_labels([[0, 0, 10, 10]], scores=[0.9]), make_labels([])
    for stage_type in ("mask_predicted_iou", "mask_stability", "mask_area", "mask_cleanup", "mask_box_consistency",
                       "mask_nms"):
        run(stage_type, boxes, empty)
    assert status(boxes) == ["kept"] and status(empty) == []
