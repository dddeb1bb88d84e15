"""The per-image record: merging keeps every column, masks and records survive a round trip."""

from __future__ import annotations

import numpy as np
import supervision as sv

from autolabel.labels import COLUMNS, Labels
from autolabel.records import from_record, to_record


def test_adding_nothing_keeps_every_column() -> None:
    labels = Labels(10, 10)
    labels.add(sv.Detections.empty(), stage="nothing")
    assert len(labels.detections) == 0 and set(COLUMNS) <= set(labels.detections.data)


def test_merge_fills_masks_and_optional_columns_and_round_trips() -> None:
    labels = Labels(8, 6)
    labels.add(sv.Detections(xyxy=np.array([[0, 0, 2, 2]], np.float32), confidence=np.array([0.5], np.float32),
                             data={"class_name": np.array(["a"], object)}), stage="boxes")
    mask = np.zeros((1, 6, 8), bool)
    mask[0, 1:3, 2:5] = True
    labels.add(sv.Detections(xyxy=np.array([[2, 1, 5, 3]], np.float32), mask=mask,
                             data={"predicted_iou": np.array([0.9], np.float32)}), stage="masks")
    det = labels.detections
    assert det.mask.shape == (2, 6, 8) and det.data["has_mask"].tolist() == [False, True]
    assert np.isnan(det.data["predicted_iou"][0]) and det.data["predicted_iou"][1] == np.float32(0.9)
    assert np.isnan(det.confidence[1])  # unknown, not 0 or 1
    back = from_record(to_record(labels))
    assert np.array_equal(back.detections.mask, det.mask)
    assert back.detections.data["stage"].tolist() == ["boxes", "masks"]
    assert back.detections.xyxy.tolist() == det.xyxy.tolist()
