"""What every export takes from a store row (autolabel.exports.rows.image_row), on hand-made records."""

from __future__ import annotations

import numpy as np
import pytest
import supervision as sv

from autolabel.errors import AutolabelError
from autolabel.exports.rows import image_row, image_shapes
from autolabel.labels import Labels, Text
from autolabel.records import to_record

IDS = {"cat": 0, "dog": 1}


def row(labels: Labels, rel_path: str = "a/b.jpg") -> dict:
    return {"id": 7, "path": f"/data/{rel_path}", "rel_path": rel_path, "sha256": "ab", "width": labels.width,
            "height": labels.height, "labels": to_record(labels)}


def make(**columns: object) -> Labels:
    xyxy = np.array(columns.pop("xyxy"), dtype=np.float32)
    n = len(xyxy)
    confidence = np.array(columns.pop("confidence", [0.5] * n), dtype=np.float32)
    data = {k: np.array(v, dtype=object) if not isinstance(v, np.ndarray) else v for k, v in columns.items()}
    labels = Labels(width=100, height=50)
    labels.add(sv.Detections(xyxy=xyxy, confidence=confidence, data=data), stage="s", provenance={"model": "m"})
    return labels


def test_boxes_are_clipped_and_empty_ones_skipped() -> None:
    labels = make(xyxy=[[-10, -5, 20, 30], [90, 40, 130, 80], [120, 10, 140, 20]], class_name=["cat", "dog", "cat"])
    out = image_row(row(labels), IDS)
    assert [(a.index, a.xyxy) for a in out.annotations] == [(0, (0.0, 0.0, 20.0, 30.0)), (1, (90.0, 40.0, 100.0, 50.0))]
    assert [a.category for a in out.annotations] == [0, 1]
    assert (out.id, out.rel_path, out.width, out.height) == (7, "a/b.jpg", 100, 50)


def test_decisions_scores_and_classless_rows() -> None:
    labels = make(
        xyxy=[[0, 0, 10, 10]] * 5, class_name=["cat", "cat", "dog", "", "dog"],
        status=["kept", "dropped", "flagged", "kept", "kept"], reason=["", "low_score", "odd", "", ""],
        confidence=[0.9, 0.9, 0.9, 0.9, 0.2],
    )
    assert [a.index for a in image_row(row(labels), IDS).annotations] == [0, 2, 4]
    assert [a.index for a in image_row(row(labels), IDS, min_score=0.5).annotations] == [0, 2]
    assert [a.index for a in image_row(row(labels), IDS, flagged=False).annotations] == [0, 4]
    flagged = image_row(row(labels), IDS).annotations[1]
    assert flagged.flagged and flagged.reason == "odd"


def test_unknown_confidence_passes_min_score() -> None:
    labels = make(xyxy=[[0, 0, 10, 10]], class_name=["cat"], confidence=[np.nan])
    (ann,) = image_row(row(labels), IDS, min_score=0.9).annotations
    assert ann.score is None


def test_a_class_the_ontology_lost_is_an_error_even_on_a_dropped_box() -> None:
    labels = make(xyxy=[[0, 0, 10, 10]], class_name=["horse"], status=["dropped"])
    with pytest.raises(AutolabelError) as err:
        image_row(row(labels), IDS)
    assert str(err.value) == (
        "a/b.jpg: class 'horse' is not in the pipeline's ontology (known: cat, dog); the ontology changed since "
        "the run: restore the class, or run the pipeline again"
    )


def test_quads_and_polygons_become_polygons_and_extras_attributes() -> None:
    polygon = np.empty(2, dtype=object)
    polygon[:] = [np.array([[1, 1], [9, 1], [5, 120]], dtype=np.float32), None]
    labels = make(xyxy=[[0, 0, 10, 10], [20, 0, 40, 10]], class_name=["cat", "dog"], polygon=polygon,
                  quad=np.array([[np.nan] * 8, [20, 0, 40, 0, 40, 10, 20, 10]], dtype=np.float32),
                  predicted_iou=np.array([0.912345678, 0.5], dtype=np.float32), text=["", "EXIT"])
    first, second = image_row(row(labels), IDS).annotations
    assert first.polygon == [[1.0, 1.0], [9.0, 1.0], [5.0, 50.0]]  # clipped to the image
    assert second.polygon == [[20.0, 0.0], [40.0, 0.0], [40.0, 10.0], [20.0, 10.0]]
    assert first.extra == {"predicted_iou": 0.91235} and second.text == "EXIT"


def test_texts_follow_the_same_decisions() -> None:
    labels = make(xyxy=[[0, 0, 10, 10]], class_name=["cat"])
    labels.texts = [Text("caption", "a cat", 0.9, "s"),
                    Text("detailed_caption", "a grey cat", 0.8, "s", "flagged", "x"),
                    Text("caption", "junk", 0.1, "s", "dropped", "low_score"), Text("ocr", "EXIT", 0.7, "s")]
    out = image_row(row(labels), IDS)
    assert [t["text"] for t in out.texts] == ["a cat", "a grey cat", "EXIT"]
    assert [t["text"] for t in out.captions()] == ["a cat", "a grey cat"]
    assert [t["text"] for t in image_row(row(labels), IDS, flagged=False).texts] == ["a cat", "EXIT"]


def test_quad_only_and_polygon_only_columns_give_polygons_in_rows_and_shapes() -> None:
    """Either column alone is a shape (an OCR stage writes quads, a segmenter polygons); shapes agree with rows."""
    quads = make(xyxy=[[0, 0, 10, 10], [20, 0, 40, 10]], class_name=["cat", "dog"],
                 quad=np.array([[1, 1, 9, 1, 9, 9, 1, 9], [np.nan] * 8], dtype=np.float32))
    polygon = np.empty(2, dtype=object)
    polygon[:] = [None, np.array([[20, 0], [40, 0], [30, 60]], dtype=np.float32)]
    polygons = make(xyxy=[[0, 0, 10, 10], [20, 0, 40, 10]], class_name=["cat", "dog"], polygon=polygon)
    for labels, expected in ((quads, [[[1.0, 1.0], [9.0, 1.0], [9.0, 9.0], [1.0, 9.0]], None]),
                             (polygons, [None, [[20.0, 0.0], [40.0, 0.0], [30.0, 50.0]]])):
        assert [a.polygon for a in image_row(row(labels), IDS).annotations] == expected
        assert [s.polygon for s in image_shapes(row(labels), IDS).annotations] == expected


def test_a_short_polygon_falls_back_to_the_quad_and_a_partial_quad_is_none() -> None:
    polygon = np.empty(3, dtype=object)
    polygon[:] = [np.array([[1, 1], [9, 9]], dtype=np.float32), None, None]
    quad = np.array([[2, 2, 8, 2, 8, 8, 2, 8], [2, 2, 8, 2, 8, 8, 2, np.nan], [np.nan] * 8], dtype=np.float32)
    labels = make(xyxy=[[0, 0, 10, 10]] * 3, class_name=["cat"] * 3, polygon=polygon, quad=quad)
    expected = [[[2.0, 2.0], [8.0, 2.0], [8.0, 8.0], [2.0, 8.0]], None, None]
    assert [a.polygon for a in image_row(row(labels), IDS).annotations] == expected
    assert [s.polygon for s in image_shapes(row(labels), IDS).annotations] == expected


def test_score_equal_to_min_score_passes_and_zero_area_boxes_are_skipped() -> None:
    labels = make(xyxy=[[0, 0, 10, 10], [5, 5, 5, 9], [5, 5, 9, 5], [0, 0, 10, 10]], class_name=["cat"] * 4,
                  confidence=[0.5, 0.9, 0.9, 0.25])
    assert [a.index for a in image_row(row(labels), IDS, min_score=0.5).annotations] == [0]
    assert [s.index for s in image_shapes(row(labels), IDS, min_score=0.5).annotations] == [0]
    assert [a.index for a in image_row(row(labels), IDS).annotations] == [0, 3]  # default: every score


def test_defaults_keep_flagged_boxes_and_texts_and_drop_empty_texts() -> None:
    labels = make(xyxy=[[0, 0, 10, 10]], class_name=["cat"], status=["flagged"])
    labels.texts = [Text("caption", "", 0.9, "s"), Text("ocr", "EXIT", 0.7, "s", "flagged", "x")]
    out = image_row(row(labels), IDS)
    assert [a.status for a in out.annotations] == ["flagged"] and [t["text"] for t in out.texts] == ["EXIT"]
    assert [s.index for s in image_shapes(row(labels), IDS).annotations] == [0]
    assert out.provenance == {"s": {"model": "m"}} and out.sha256 == "ab" and out.path == "/data/a/b.jpg"


def test_an_image_without_boxes_is_a_row_without_annotations() -> None:
    record = {"id": 1, "path": "/a.png", "rel_path": "a.png", "sha256": None, "width": 4, "height": 3, "labels": None}
    out = image_row(record, IDS)
    assert (out.annotations, out.texts, out.provenance, out.width, out.height) == ([], [], {}, 4, 3)
    assert image_shapes(record, IDS).annotations == []


def test_nothing_to_export_says_why(tmp_path) -> None:
    from autolabel.exports.rows import require_labeled
    from autolabel.store import ImageResult, Store

    with Store(tmp_path) as store:
        with pytest.raises(AutolabelError) as empty:
            require_labeled(store)
        assert str(empty.value) == (f"{store.path}: no labeled images in the store; nothing to export "
                                    "(run a pipeline into this folder first)")
        run_id = store.begin_run("h", {})
        store.commit([ImageResult(f"/in/{i}.png", f"{i}.png", None, "failed", reason="broken") for i in range(3)],
                     run_id, "h")
        with pytest.raises(AutolabelError) as failed:
            require_labeled(store)
        assert str(failed.value).endswith("nothing to export (all 3 images failed (see run.json))")


def test_missing_columns_take_their_defaults() -> None:
    """Records written before a column existed (or by a stage that has none of it): kept, no reason, no text."""
    labels = make(xyxy=[[0, 0, 10, 10]], class_name=["cat"], status=["flagged"], reason=["odd"], text=["T"])
    record = row(labels)
    for key in ("status", "reason", "text", "phrase", "stage"):
        record["labels"]["boxes"]["data"].pop(key, None)
    (ann,) = image_row(record, IDS).annotations
    assert (ann.status, ann.reason, ann.text, ann.phrase, ann.stage, ann.flagged) == ("kept", "", "", "", "", False)
    assert [s.index for s in image_shapes(record, IDS, flagged=False).annotations] == [0]


def test_streams_from_a_store_with_the_same_defaults(tmp_path) -> None:
    """``image_rows`` and ``shape_rows`` over a store: id order, every score and flagged box by default, the same
    boxes as each other."""
    from autolabel.exports.rows import image_rows, shape_rows
    from autolabel.ontology import Ontology
    from autolabel.store import ImageResult, Store

    ontology = Ontology.from_config(["cat", "dog"])
    labels = make(xyxy=[[0, 0, 10, 10], [5, 5, 20, 20], [1, 1, 4, 4]], class_name=["cat", "dog", "cat"],
                  status=["kept", "flagged", "dropped"], confidence=[0.0, 0.3, 0.9])
    with Store(tmp_path) as store:
        run_id = store.begin_run("h", {})
        store.commit([ImageResult(f"/in/{name}", name, f"sha{name}", "done", 100, 50, labels=to_record(labels))
                      for name in ("b.png", "a.png")], run_id, "h")
        full, shapes = list(image_rows(store, ontology)), list(shape_rows(store, ontology))
        assert [r.rel_path for r in full] == [r.rel_path for r in shapes] == ["b.png", "a.png"]  # id order
        for f, s in zip(full, shapes):
            assert [a.index for a in f.annotations] == [x.index for x in s.annotations] == [0, 1]
        picky = list(shape_rows(store, ontology, min_score=0.2, flagged=False))
        assert [[x.index for x in r.annotations] for r in picky] == [[], []]
