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


def test_mark_drops_what_is_not_dropped_and_flags_only_what_is_kept() -> None:
    from autolabel.filters.base import mark

    status = np.array([KEPT, FLAGGED, DROPPED, KEPT], dtype=object)
    reason = np.array(["", "first", "gone", ""], dtype=object)
    assert mark(status, reason, np.array([True, True, True, False]), "f", "flag") == 1
    assert list(status) == [FLAGGED, FLAGGED, DROPPED, KEPT] and list(reason) == ["f", "first", "gone", ""]
    assert mark(status, reason, np.array([False, True, True, True]), "d", "drop") == 2
    assert list(status) == [FLAGGED, DROPPED, DROPPED, DROPPED] and list(reason) == ["f", "d", "gone", "d"]


def test_rows_of_no_images_or_of_images_without_columns_are_empty_not_errors() -> None:
    assert len(Rows.of([])) == 0
    bare = Labels(width=10, height=10, detections=sv.Detections.empty())  # supervision's merge of empties: no columns
    rows = Rows.of([bare, make_labels([[0, 0, 5, 5]])])
    assert list(rows.status) == [KEPT] and rows.offsets.tolist() == [0, 0, 1]


def test_has_values_treats_a_list_holding_none_as_missing() -> None:
    assert has_values(np.array([[None, 1.0], [2.0, 1.0]] + [None], dtype=object)).tolist() == [False, True, False]


@pytest.mark.parametrize(("stage_type", "per_class", "message"), [
    ("score_threshold", {"person": "high"},
     "per_class.person: expected a number (its threshold) or a mapping of threshold (got 'high')"),
    ("aspect_ratio", {"car": [1]},
     "per_class.car: expected a number (its max_ratio) or a mapping of max_ratio, min_ratio (got [1])"),
    ("aspect_ratio", {"car": {"margin": 1}},
     "per_class.car.margin: not settable per class (per-class keys: max_ratio, min_ratio)"),
    ("score_threshold", {"person": 2.0},
     "per_class.person.threshold: input should be less than or equal to 1 (got 2.0)"),
])
def test_per_class_mistakes_are_one_line_naming_the_class_and_key(stage_type: str, per_class: dict,
                                                                  message: str) -> None:
    from autolabel.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        build(stage_type, per_class=per_class)
    assert str(err.value) == message


def _store_with(tmp_path, labels_by_status):
    from autolabel.store import ImageResult, Store

    store = Store(tmp_path)
    run = store.begin_run("h", {})
    store.commit([ImageResult(path=f"/in/{i}.jpg", rel_path=f"{i}.jpg", sha256=f"s{i}", status=status, width=100,
                              height=50, labels=None if labels is None else to_record(labels))
                  for i, (status, labels) in enumerate(labels_by_status)], run, "h")
    return store


def test_an_export_of_a_store_without_labeled_images_says_why(tmp_path) -> None:
    from autolabel.errors import AutolabelError
    from autolabel.exports.rows import require_labeled

    with _store_with(tmp_path / "empty", []) as store, pytest.raises(AutolabelError) as err:
        require_labeled(store)
    assert str(err.value).endswith(": no labeled images in the store; nothing to export (run a pipeline into this "
                                   "folder first)")
    with _store_with(tmp_path / "failed", [("failed", None), ("failed", None)]) as store, \
            pytest.raises(AutolabelError) as err:
        require_labeled(store)
    assert str(err.value).endswith("nothing to export (all 2 images failed (see run.json))")


def test_image_rows_pass_score_and_flag_options_and_keep_everything_by_default(tmp_path) -> None:
    from autolabel.exports.rows import image_rows
    from autolabel.ontology import Ontology

    labels = make_labels([[0, 0, 5, 5], [1, 1, 6, 6], [2, 2, 7, 7]], scores=[0.1, 0.9, 0.5],
                         classes=["person", "car", "dog"])
    labels.detections.data["status"] = np.array([KEPT, KEPT, FLAGGED], dtype=object)
    ontology = Ontology.from_config(["person", "car", "dog"])
    with _store_with(tmp_path, [("done", labels)]) as store:
        def kept(**options: object) -> list[int]:
            return [a.index for row in image_rows(store, ontology, **options) for a in row.annotations]

        assert kept() == [0, 1, 2]
        assert kept(min_score=0.3) == [1, 2]  # a low score skips its box, not the rest of the image
        assert kept(flagged=False) == [0, 1]


def test_a_record_with_only_class_names_gets_the_documented_defaults() -> None:
    record = {"width": 100, "height": 50, "boxes": {"xyxy": [[1, 1, 5, 5]], "confidence": [None],
                                                    "data": {"class_name": ["cat"]}}}
    row = {"id": 1, "path": "/a.jpg", "rel_path": "a.jpg", "sha256": "ab", "width": 100, "height": 50,
           "labels": record}
    (a,) = image_row(row, {"cat": 0}).annotations
    assert (a.status, a.reason, a.text, a.phrase, a.stage, a.rle, a.score) == ("kept", "", "", "", "", None, None)
    empty = dict(row, labels=None)
    assert image_row(empty, {"cat": 0}).annotations == []
    assert image_row(dict(row, labels={"width": 100, "height": 50, "boxes": {"xyxy": [], "confidence": []}}),
                     {"cat": 0}).annotations == []


def test_phrase_stage_and_mask_columns_reach_the_annotation() -> None:
    mask = np.zeros((1, 50, 100), dtype=bool)
    mask[0, 1:5, 1:5] = True
    labels = make_labels([[1, 1, 5, 5]], scores=[0.9], classes=["cat"], size=(100, 50), stage="seg", masks=mask,
                         phrase=np.array(["a cat"], dtype=object), text=np.array(["meow"], dtype=object))
    row = {"id": 1, "path": "/a.jpg", "rel_path": "a.jpg", "sha256": "ab", "width": 100, "height": 50,
           "labels": to_record(labels)}
    (a,) = image_row(row, {"cat": 0}).annotations
    assert (a.phrase, a.text, a.stage) == ("a cat", "meow", "seg")
    assert a.rle is not None and a.rle["size"] == [50, 100]


def test_an_image_row_carries_digest_provenance_class_names_and_skips_only_empty_boxes() -> None:
    labels = make_labels([[120, 10, 140, 20], [10, 10, 20, 10], [1, 1, 5, 5]], scores=[0.9] * 3,
                         classes=["cat"] * 3, size=(100, 50), stage="det", task="od")
    row = {"id": 3, "path": "/a.jpg", "rel_path": "a.jpg", "sha256": "ab12", "width": 100, "height": 50,
           "labels": to_record(labels)}
    out = image_row(row, {"cat": 0})
    assert (out.sha256, out.provenance) == ("ab12", {"det": {"task": "od"}})
    # outside the image, then zero height: both skipped, and the box after them still comes
    assert [(a.index, a.class_name) for a in out.annotations] == [(2, "cat")]
