"""The filters' shared helpers (``autolabel.filters.base``) and one export detail, checked directly.
Written to kill what mutation testing found unchecked (BENCHMARKS.md, "Mutation testing")."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import supervision as sv

from autolabel.exports.rows import image_row
from autolabel.filters.base import Rows, has_values, is_ocr, mark_row, mark_text
from autolabel.labels import DROPPED, FLAGGED, KEPT, Labels, Text
from autolabel.records import to_record
from filter_cases import build, make_labels


def test_mark_row_drops_anything_not_dropped_and_flags_only_what_is_kept() -> None:
    status = np.array([KEPT, FLAGGED, DROPPED, KEPT, FLAGGED], dtype=object)
    reason = np.array(["", "first", "gone", "", "first"], dtype=object)
    mark_row(status, reason, 0, "a", "drop")
    mark_row(status, reason, 1, "b", "flag")  # the first flag's reason stays
    mark_row(status, reason, 2, "c", "drop")  # a drop is never redone
    mark_row(status, reason, 2, "c", "flag")  # nor hidden by a flag
    mark_row(status, reason, 3, "d", "flag")
    mark_row(status, reason, 4, "e", "drop")  # a drop wins over a flag
    assert list(status) == [DROPPED, FLAGGED, DROPPED, FLAGGED, DROPPED]
    assert list(reason) == ["a", "first", "gone", "d", "e"]


def test_mark_text_follows_the_same_rules() -> None:
    texts = [Text("caption", "x", None, "s"), Text("caption", "x", None, "s", FLAGGED, "first"),
             Text("caption", "x", None, "s", DROPPED, "gone"), Text("caption", "x", None, "s"),
             Text("caption", "x", None, "s", FLAGGED, "first")]
    for text, (code, action) in zip(texts, [("a", "drop"), ("b", "flag"), ("c", "drop"), ("d", "flag"),
                                            ("e", "drop")]):
        mark_text(text, code, action)
    assert [(t.status, t.reason) for t in texts] == [(DROPPED, "a"), (FLAGGED, "first"), (DROPPED, "gone"),
                                                     (FLAGGED, "d"), (DROPPED, "e")]


def test_has_values_per_row_for_numbers_quads_and_ragged_objects() -> None:
    assert has_values(np.array([1.0, np.nan, np.inf])).tolist() == [True, False, False]
    quads = np.zeros((3, 8))
    quads[1, 3] = np.nan
    assert has_values(quads).tolist() == [True, False, True]
    ragged = np.array([None, np.nan, [1, 2], [], [np.nan, 1.0], "a word", 3], dtype=object)
    assert has_values(ragged).tolist() == [False, False, True, False, False, True, True]
    empty = has_values(np.zeros(0, dtype=object))
    assert empty.dtype == bool and empty.shape == (0,)


def test_is_ocr_from_a_quad_or_from_the_stages_task() -> None:
    labels = make_labels([[0, 0, 5, 5], [5, 5, 9, 9]], stage="det", task="od",
                         quad=np.array([[0.0] * 8, [np.nan] * 8]))
    labels.add(sv.Detections(xyxy=np.array([[1, 1, 3, 3]], dtype=np.float32),
                             data={"class_name": np.array(["person"], dtype=object)}),
               stage="reader", provenance={"task": "<OCR_WITH_REGION>"})
    labels.provenance["untasked"] = {}  # a stage with no task at all is no OCR
    assert is_ocr(labels).tolist() == [True, False, True]


def test_a_missing_column_is_filled_with_nan_over_the_batch() -> None:
    with_it = make_labels([[0, 0, 5, 5]], iou=np.array([0.25]))
    without = make_labels([[0, 0, 5, 5], [1, 1, 4, 4]])
    column = Rows.of([with_it, without]).column("iou")
    assert column.dtype == np.float64 and column[0] == 0.25 and np.isnan(column[1:]).all()


def test_warn_once_says_each_thing_once_naming_the_stage(caplog: pytest.LogCaptureFixture) -> None:
    stage = build("score_threshold")
    with caplog.at_level(logging.WARNING, logger="autolabel.filters"):
        for _ in range(3):
            stage.warn_once("no confidence column: every box passes")
        stage.warn_once("something else")
    assert [r.getMessage() for r in caplog.records] == [
        "stage 'score_threshold': no confidence column: every box passes", "stage 'score_threshold': something else"]


def test_export_extras_round_floats_and_keep_text_and_integers() -> None:
    labels = Labels(width=100, height=50)
    labels.add(sv.Detections(xyxy=np.array([[1, 1, 9, 9]], dtype=np.float32), confidence=np.array([0.5], np.float32),
                             data={"class_name": np.array(["cat"], dtype=object), "note": np.array(["big"], object),
                                   "votes": np.array([3], object), "ratio": np.array([1 / 3], object)}),
               stage="s", provenance={})
    row = {"id": 1, "path": "/a.jpg", "rel_path": "a.jpg", "sha256": "ab", "width": 100, "height": 50,
           "labels": to_record(labels)}
    (annotation,) = image_row(row, {"cat": 0}).annotations
    assert annotation.extra == {"note": "big", "votes": 3, "ratio": 0.33333}
