"""``autolabel pull`` and its review summary without a server: which annotation stands for a task, which prediction
the reviewer started from, every labeled region as one object (and an older push's attached shapes as part of their
box), what counts as moved, and the files written. Regions are encoded by label-studio-sdk's own encoders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from label_studio_sdk.converter.brush import mask2rle

from autolabel.errors import AutolabelError
from autolabel.geometry import decode_rle
from autolabel.labelstudio.pull import (_name_of, chosen_annotation, chosen_prediction, pull, task_row,
                                        write_coco)
from autolabel.labelstudio.review import (Box, ReviewTally, attached_to, boxes, compare, format_summary,
                                          reshaped)

W, H = 20, 10
COMMON = {"to_name": "image", "original_width": W, "original_height": H}


def rect(rid: str, label: str, x: float, y: float, w: float, h: float, **extra: object) -> dict:
    return {"id": rid, "from_name": "label", "type": "rectanglelabels", **COMMON,
            "value": {"x": x, "y": y, "width": w, "height": h, "rectanglelabels": [label]} | extra}


def polygon(rid: str, label: str, points: list) -> dict:
    return {"id": rid, "from_name": "polygon", "type": "polygonlabels", **COMMON,
            "value": {"points": points, "closed": True, "polygonlabels": [label]}}


def brush(rid: str, label: str, mask: np.ndarray) -> dict:
    return {"id": rid, "from_name": "mask", "type": "brushlabels", **COMMON,
            "value": {"format": "rle", "rle": mask2rle(mask.astype(np.uint8) * 255), "brushlabels": [label]}}


def text(rid: str, words: str, name: str = "transcription") -> dict:
    return {"id": rid, "from_name": name, "type": "textarea", **COMMON, "value": {"text": [words]}}


def block(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[y0:y1, x0:x1] = True
    return mask


# -- which annotation, which prediction ----------------------------------------------------------------------------
def test_the_annotation_that_stands_for_a_task_is_not_skipped_ground_truth_first_then_the_latest() -> None:
    a = {"id": 1, "updated_at": "2026-01-03T00:00:00Z"}
    b = {"id": 2, "updated_at": "2026-01-02T00:00:00Z", "ground_truth": True}
    c = {"id": 3, "updated_at": "2026-01-05T00:00:00Z", "was_cancelled": True}
    d = {"id": 4, "updated_at": "2026-01-04T00:00:00Z"}
    assert chosen_annotation([a, b, c, d]) is b  # ground truth, though older
    assert chosen_annotation([a, c, d]) is d  # the latest not skipped
    assert chosen_annotation([{"id": 7, "updated_at": "x"}, {"id": 9, "updated_at": "x"}, {"id": 8, "updated_at": "x"}
                              ])["id"] == 9  # same time: the highest id
    assert chosen_annotation([{"id": 5}, {"id": 6, "updated_at": "2026"}])["id"] == 6  # a time beats none
    assert chosen_annotation([c]) is None and chosen_annotation([]) is None


def test_the_prediction_a_reviewer_started_from() -> None:
    old = {"id": 10, "model_version": "v1"}
    ours = {"id": 11, "model_version": "v2"}
    newer_other = {"id": 12, "model_version": "v3"}
    preds = [old, ours, newer_other]
    assert chosen_prediction(preds, {"parent_prediction": 10}, "v2") is old  # the one it was made from
    assert chosen_prediction(preds, {"parent_prediction": 99}, "v2") is ours  # else the project's version
    assert chosen_prediction(preds, {}, "v1") is old
    assert chosen_prediction(preds + [{"id": 13, "model_version": "v2"}], {}, "v2")["id"] == 13  # its latest
    assert chosen_prediction(preds, {}, "v9") is newer_other  # no prediction of that version: the latest
    assert chosen_prediction(preds, {}, None) is newer_other and chosen_prediction(preds, {}, "") is newer_other
    assert chosen_prediction([], {"parent_prediction": 1}, "v1") is None


# -- objects of a result ---------------------------------------------------------------------------------------------
def test_every_labeled_region_is_one_object_and_an_older_pushs_attached_shapes_join_their_box() -> None:
    result = [
        rect("7_0", "cat", 10, 10, 50, 50), brush("7_0_mask", "cat", block(1, 6, 2, 12)),  # an older push
        polygon("7_0_poly", "cat", [[10, 10], [60, 10], [60, 60]]), text("7_0", "HI"),
        brush("7_1", "dog", block(2, 8, 14, 19)),  # one region per object
        polygon("7_2", "sign", [[5, 10], [50, 20], [25, 90]]),
        brush("9_9_mask", "cow", block(0, 2, 0, 2)),  # named like an attached shape, but its box is not there
        rect("7_3", "cat", 0, 0, 10, 10) | {"value": {"x": 0, "y": 0, "width": 1, "height": 1, "rectanglelabels": []}},
        polygon("7_4", "sign", []),  # no points
        {"id": "7_5", "from_name": "mask", "type": "brushlabels", **COMMON, "value": {"brushlabels": ["dog"]}},
        brush("7_6", "dog", np.zeros((H, W), bool)),  # no pixels
    ]
    found = boxes(result)
    assert [(b.id, b.label, b.kind) for b in found] == [("7_0", "cat", "rectangle"), ("7_1", "dog", "brush"),
                                                        ("7_2", "sign", "polygon"), ("9_9_mask", "cow", "brush")]
    assert [b.xyxy for b in found] == [(2.0, 1.0, 12.0, 6.0), (14.0, 2.0, 19.0, 8.0), (1.0, 1.0, 10.0, 9.0),
                                       (0.0, 0.0, 2.0, 2.0)]
    assert found[2].points == ((1.0, 1.0), (10.0, 2.0), (5.0, 9.0))
    assert np.array_equal(found[1].mask, block(2, 8, 14, 19))
    assert attached_to(result[1], {"7_0"}) == "7_0" and attached_to(result[2], {"7_0"}) == "7_0"
    assert attached_to(result[0], {"7_0"}) is None  # a rectangle is never attached
    assert attached_to(brush("7_0_mask3", "cat", block(0, 1, 0, 1)), {"7_0"}) == "7_0"
    assert attached_to(brush("7_0_masks", "cat", block(0, 1, 0, 1)), {"7_0"}) is None


def test_a_reshaped_object_counts_as_moved_even_when_its_box_did_not_move() -> None:
    tri = Box("a", "sign", (1.0, 1.0, 10.0, 9.0), "polygon", ((1.0, 1.0), (10.0, 2.0), (5.0, 9.0)))
    assert not reshaped(tri, tri)
    nudged = Box("a", "sign", tri.xyxy, "polygon", ((1.0, 1.0), (10.0, 2.4), (5.0, 9.0)))
    pushed = Box("a", "sign", tri.xyxy, "polygon", ((1.0, 1.0), (10.0, 2.6), (5.0, 9.0)))
    assert not reshaped(tri, nudged) and reshaped(tri, pushed)  # a vertex 0.4 px away is not a move, 0.6 px is
    assert reshaped(tri, nudged, tolerance=0.3)
    more = Box("a", "sign", tri.xyxy, "polygon", tri.points + ((1.0, 9.0),))
    assert reshaped(tri, more)  # a vertex added
    m1, m2 = block(1, 6, 2, 12), block(1, 6, 2, 12)
    m2[3, 5] = False  # a hole painted inside: the box is the same
    b1, b2 = Box("b", "dog", (2.0, 1.0, 12.0, 6.0), "brush", mask=m1), Box("b", "dog", (2.0, 1.0, 12.0, 6.0), "brush",
                                                                           mask=m2)
    assert reshaped(b1, b2) and not reshaped(b1, Box("b", "dog", b1.xyxy, "brush", mask=m1.copy()))
    square = Box("c", "cat", (0.0, 0.0, 4.0, 4.0))
    assert reshaped(square, Box("c", "cat", (0.0, 0.0, 4.0, 4.0), "polygon", ((0, 0), (4, 0), (4, 4), (0, 4))))
    assert reshaped(square, Box("c", "cat", (0.0, 0.0, 4.0, 4.6))) and not reshaped(square, Box("c", "cat", (
        0.0, 0.0, 4.0, 4.5)))


def test_a_review_of_mixed_regions_pairs_by_id_then_overlap() -> None:
    predicted = boxes([rect("1_0", "cat", 0, 0, 50, 100), brush("1_1", "dog", block(0, 5, 10, 20)),
                       polygon("1_2", "sign", [[60, 60], [90, 60], [90, 90]])])
    painted = block(0, 5, 10, 20)
    painted[0, 10] = False
    annotated = boxes([rect("1_0", "cat", 0, 0, 50, 100), brush("1_1", "dog", painted),
                       polygon("new", "sign", [[60, 60], [90, 60], [90, 90]])])
    assert compare(predicted, annotated) == [("accepted", "cat", "1_0", "1_0"), ("moved", "dog", "1_1", "1_1"),
                                             ("accepted", "sign", "1_2", "new")]
    tally = ReviewTally(["cat"])
    tally.add(predicted, annotated)
    summary = tally.summary()
    assert summary["overall"] | {} == {"predicted": 3, "accepted": 2, "moved": 1, "relabeled": 0, "deleted": 0,
                                      "added": 0, "acceptance_rate": 0.6667}
    assert list(summary["classes"]) == ["cat", "dog", "sign"]  # classes met on the way join at the end
    table = format_summary(summary).splitlines()
    assert table[0] == "review of 1 tasks (auto-labels vs. the reviewers' annotations)"
    assert table[1].split() == ["class", "predicted", "accepted", "moved", "relabeled", "deleted", "added", "accept",
                                "%"]  # a heading over each column
    assert table[3].split() == ["dog", "1", "0", "1", "0", "0", "0", "0.0"]
    assert table[-1].split() == ["overall", "3", "2", "1", "0", "0", "0", "66.7"]


# -- a task as rows ------------------------------------------------------------------------------------------------
def test_a_task_row_has_one_annotation_per_object_in_result_order() -> None:
    result = [
        rect("3_0", "cat", 10, 10, 50, 50), brush("3_0_mask", "cat", block(2, 4, 5, 9)), text("3_0", "old style"),
        polygon("3_1", "sign", [[10, 10], [50, 10], [50, 50], [10, 50]]), text("3_1", "EXIT"),
        text("3_1", "flagged: x", "review"),
        brush("3_2", "dog", block(5, 9, 0, 6)),
        polygon("3_3", "dog", [[-10, 0], [120, 0], [120, 50]]),  # beyond the image: clipped
        rect("3_4", "cat", 95, 95, 0, 0),  # no area: left out
    ]
    classes = ["cat", "dog"]
    row = task_row({"id": 12, "data": {"image": "https://cdn/x/a%20b.png", "autolabel_key": "e" * 64}}, result,
                   classes, {"3_1": "moved"})
    assert (row.id, row.path, row.rel_path, row.sha256, row.width, row.height) == (
        12, "https://cdn/x/a%20b.png", "x/a b.png", "e" * 64, W, H)  # the size from the regions
    assert classes == ["cat", "dog", "sign"]
    assert [(a.index, a.class_name, a.category, a.extra) for a in row.annotations] == [
        (0, "cat", 0, {"region_id": "3_0"}), (1, "sign", 2, {"region_id": "3_1", "review": "moved"}),
        (2, "dog", 1, {"region_id": "3_2"}), (3, "dog", 1, {"region_id": "3_3"})]
    cat, sign, dog, clipped = row.annotations
    assert cat.xyxy == (2.0, 1.0, 12.0, 6.0) and np.array_equal(decode_rle(cat.rle), block(2, 4, 5, 9))
    assert cat.text == "old style" and sign.text == "EXIT" and dog.text == ""
    assert sign.polygon == [[2.0, 1.0], [10.0, 1.0], [10.0, 5.0], [2.0, 5.0]] and sign.rle is None
    assert dog.xyxy == (0.0, 5.0, 6.0, 9.0) and np.array_equal(decode_rle(dog.rle), block(5, 9, 0, 6))
    assert clipped.polygon == [[0.0, 0.0], [20.0, 0.0], [20.0, 5.0]] and clipped.xyxy == (0.0, 0.0, 20.0, 5.0)
    assert all((a.score, a.status, a.stage) == (None, "kept", "review") for a in row.annotations)


def test_a_box_with_several_shapes_is_one_mask_of_all_of_them() -> None:
    result = [rect("1_0", "cat", 0, 0, 100, 100), polygon("1_0_mask0", "cat", [[0, 0], [25, 0], [25, 50], [0, 50]]),
              polygon("1_0_mask1", "cat", [[75, 50], [100, 50], [100, 100], [75, 100]])]
    (ann,) = task_row({"id": 1, "data": {"width": W, "height": H}}, result, ["cat"]).annotations
    mask = decode_rle(ann.rle)
    assert ann.polygon is None and ann.xyxy == (0.0, 0.0, 20.0, 10.0)
    assert mask[:5, :5].all() and mask[5:, 15:].all() and not mask[:5, 10:].any()
    # a brush and a polygon on one box: the union of both, whichever is read first
    result = [rect("2_0", "cat", 0, 0, 100, 100), brush("2_0_mask0", "cat", block(0, 5, 0, 5)),
              polygon("2_0_mask1", "cat", [[75, 50], [100, 50], [100, 100], [75, 100]])]
    (ann,) = task_row({"id": 2, "data": {"width": W, "height": H}}, result, ["cat"]).annotations
    mask = decode_rle(ann.rle)
    assert mask[:5, :5].all() and mask[5:, 15:].all() and mask.sum() == 25 + 25


def test_names_and_sizes_of_tasks_without_them() -> None:
    assert _name_of("/data/local-files/?d=photos/a%20b.jpg") == "photos/a b.jpg"
    assert _name_of("https://cdn.example.com/bucket/x%23y.png?sig=1") == "bucket/x#y.png"
    assert _name_of("/data/upload/3/abc-img.png") == "data/upload/3/abc-img.png"
    # the first ?d= starts the path, as Label Studio's local-files view reads its d parameter
    assert _name_of("/data/local-files/?d=scans/page?d=2.png") == "scans/page?d=2.png"
    row = task_row({"id": 5, "data": {"image": "s3://b/"}}, [], ["cat"])
    assert (row.rel_path, row.width, row.height, row.annotations, row.sha256) == ("task-5", 0, 0, [], None)
    keyed = task_row({"id": 5, "data": {"image": "", "autolabel_key": "path:" + "a" * 64, "rel_path": "r.png"}}, [],
                     [])
    assert (keyed.rel_path, keyed.sha256) == ("r.png", None)  # a key that is not a content hash is no hash
    # the size: the task's data (pushed with it) first, else the regions'; a task without regions keeps its own
    sized = task_row({"id": 6, "data": {"width": 640, "height": 480}}, [], [])
    assert (sized.width, sized.height) == (640, 480)
    # what is no object: a polygon of 2 points, a region of a kind without labels, an unlabeled rectangle
    other = [polygon("9_0", "cat", [[10, 10], [50, 50]]), rect("9_1", "cat", 0, 0, 10, 10, rectanglelabels=[]),
             {"id": "9_2", "from_name": "quality", "type": "choices", **COMMON, "value": {"choices": ["blurry"]}}]
    classes = ["cat"]
    assert task_row({"id": 9, "data": {}}, other, classes).annotations == [] and classes == ["cat"]
    both = task_row({"id": 7, "data": {"width": "40", "height": "30"}}, [rect("7_0", "cat", 0, 0, 50, 50)], ["cat"])
    assert (both.width, both.height, both.annotations[0].xyxy) == (40, 30, (0.0, 0.0, 20.0, 15.0))
    half = task_row({"id": 8, "data": {"width": 40}}, [text("x", "t"), rect("8_0", "cat", 0, 0, 50, 50)], ["cat"])
    assert (half.width, half.height) == (W, H)  # no height in the data: both from the first region that has them


def test_the_coco_file_of_a_pull_reads_like_an_export(tmp_path: Path) -> None:
    rows = [task_row({"id": 4, "data": {"rel_path": "a.png", "width": W, "height": H}},
                     [rect("1_0", "cat", 10, 10, 50, 50), polygon("1_1", "sign", [[0, 0], [50, 0], [50, 50]])],
                     classes := ["cat"], {"1_0": "accepted"})]
    paths = write_coco(rows, classes, tmp_path / "coco.json", "http://ls/projects/3")
    coco = json.loads((tmp_path / "coco.json").read_text())
    assert paths == [str(tmp_path / "coco.json")] and coco["info"] == {"description": "autolabel pull of "
                                                                                      "http://ls/projects/3"}
    assert [c["name"] for c in coco["categories"]] == ["cat", "sign"]
    assert [(i["id"], i["file_name"], i["width"], i["height"]) for i in coco["images"]] == [(4, "a.png", W, H)]
    first, second = coco["annotations"]
    assert (first["id"], first["bbox"], first["attributes"]["review"]) == (1, [2.0, 1.0, 10.0, 5.0], "accepted")
    assert (second["id"], second["category_id"], second["segmentation"]) == (2, 2, [[0.0, 0.0, 10.0, 0.0, 10.0,
                                                                                      5.0]])


def test_an_unknown_format_is_refused_before_any_request(tmp_path: Path) -> None:
    with pytest.raises(AutolabelError, match=r"--format: unknown format 'voc' \(known: coco, yolo\)"):
        pull("http://127.0.0.1:9", "p", tmp_path, fmt="voc", api_key="k")
    assert not any(tmp_path.iterdir())


def test_images_are_linked_from_the_image_root_or_downloaded_following_redirects(tmp_path: Path) -> None:
    """--image-root links the labeled file; an image another server holds is downloaded (behind a redirect, as
    object stores and CDNs answer), with the policy of the connection; a cloud reference needs --image-root."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from autolabel.exports.rows import ImageRow
    from autolabel.labelstudio.client import Connection
    from autolabel.labelstudio.pull import _place

    class Files(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/old/a.png":
                self.send_response(302)
                self.send_header("Location", "/new/a.png")
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif self.path == "/new/a.png":
                self.send_response(200)
                self.send_header("Content-Length", "5")
                self.end_headers()
                self.wfile.write(b"PIXEL")
            else:
                self.send_error(404)

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Files)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        conn = Connection("http://127.0.0.1:9", "key", retry_for=0, sleep=lambda s: None)
        cdn = f"http://127.0.0.1:{server.server_address[1]}"

        def row(ref: str, rel: str = "sub/a.png") -> ImageRow:
            return ImageRow(3, ref, rel, None, 4, 4, [], [], {})

        _place(row(cdn + "/old/a.png"), tmp_path / "got.png", conn, None)
        assert (tmp_path / "got.png").read_bytes() == b"PIXEL"
        with pytest.raises(AutolabelError) as err:
            _place(row(cdn + "/missing.png"), tmp_path / "none.png", conn, None)
        assert str(err.value) == (f"task 3: cannot download {cdn}/missing.png (HTTP 404); pass --image-root DIR (the "
                                  "folder the images were labeled from)")
        assert not (tmp_path / "none.png").exists()
        (tmp_path / "in" / "sub").mkdir(parents=True)
        (tmp_path / "in" / "sub" / "a.png").write_bytes(b"LOCAL")
        _place(row("s3://bucket/sub/a.png"), tmp_path / "linked.png", conn, str(tmp_path / "in"))
        assert (tmp_path / "linked.png").is_symlink() and (tmp_path / "linked.png").read_bytes() == b"LOCAL"
        with pytest.raises(AutolabelError, match=r"task 3: .*elsewhere.* does not exist \(is --image-root the folder"):
            _place(row("s3://bucket/x.png", "elsewhere.png"), tmp_path / "x.png", conn, str(tmp_path / "in"))
        for cloud in ("s3://bucket/x.png", "gs://bucket/x.png", "azure-blob://container/x.png"):
            with pytest.raises(AutolabelError, match=rf"^task 3: cannot download {cloud}; pass --image-root DIR$"):
                _place(row(cloud), tmp_path / "x.png", conn, None)
        with pytest.raises(AutolabelError, match=r"^task 3: cannot download its image; pass --image-root DIR$"):
            _place(row(""), tmp_path / "x.png", conn, None)
    finally:
        server.shutdown()
        server.server_close()


def test_an_image_label_studio_holds_is_downloaded_through_it(tmp_path: Path) -> None:
    """A task's image under the server (``/data/...``, or the server's own URL) comes through the connection, with
    its key; a server that answers no image fails the pull in one line."""
    from recording_server import Recorder, body

    from autolabel.exports.rows import ImageRow
    from autolabel.labelstudio.client import Connection, Rejected
    from autolabel.labelstudio.pull import _place

    with Recorder({"/data/upload/3/a.png": body(b"PIXELS")}) as server:
        conn = Connection(server.url, "key", retry_for=0, sleep=lambda s: None)
        for k, ref in enumerate(["/data/upload/3/a.png", server.url + "/data/upload/3/a.png"]):
            _place(ImageRow(3, ref, "a.png", None, 4, 4, [], [], {}), tmp_path / f"{k}.png", conn, None)
            assert (tmp_path / f"{k}.png").read_bytes() == b"PIXELS"
        assert server.paths() == ["/data/upload/3/a.png"] * 2
        assert all(s.authorization == "Token key" for s in server.seen)
        with pytest.raises(Rejected, match=r"^download image of task 4: HTTP 404"):
            _place(ImageRow(4, "/data/upload/3/b.png", "b.png", None, 4, 4, [], [], {}), tmp_path / "b.png", conn,
                   None)
