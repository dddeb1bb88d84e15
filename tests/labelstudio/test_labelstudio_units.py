"""Push / pull logic without a server: the reconcile plan, the review comparison, config checks, retry policy."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from label_studio_sdk.core.api_error import ApiError

from autolabel.cli import main
from autolabel.config import parse
from autolabel.errors import AutolabelError, ConfigError
from autolabel.exports.labelstudio import labeling_config
from autolabel.labelstudio.client import Connection, Rejected, Uncertain, Unreachable, backoff
from autolabel.labelstudio.images import input_root, local_files_prefix
from autolabel.labelstudio.project import classes_of, config_mismatches
from autolabel.labelstudio.pull import task_row
from autolabel.labelstudio.push import Remote, Wanted, plan
from autolabel.labelstudio.review import Box, ReviewTally, compare, rect_xyxy
from autolabel.labelstudio.state import Recorded
from autolabel.ontology import Ontology

KEY = "s3cr3t-legacy-token-0123456789"


# -- plan -------------------------------------------------------------------------------------------------------------
def want(key: str, phash: str = "h1", image: str = "/img") -> Wanted:
    return Wanted(key, 1, None, phash, image)  # type: ignore[arg-type]


def test_plan_creates_what_is_missing_and_leaves_what_is_current() -> None:
    wanted = {"a": want("a"), "b": want("b"), "c": want("c")}
    remote = [Remote(10, "a", 1, 0, "/img"), Remote(99, "someone-elses", 1, 0, "/x")]
    todo = plan(wanted, remote, {"a": Recorded(10, "h1")})
    assert (todo.create, todo.repredict, todo.remove, todo.retarget, todo.unchanged) == (["b", "c"], [], [], [], 1)


@pytest.mark.parametrize("remote, recorded", [
    (Remote(10, "a", 1, 0, "/img"), Recorded(10, "old")),  # a newer run
    (Remote(10, "a", 0, 0, "/img"), Recorded(10, "h1")),  # its prediction was deleted
    (Remote(10, "a", 2, 0, "/img"), Recorded(10, "h1")),  # a repeated import left two
    (Remote(10, "a", 1, 0, "/img"), None),  # landed but never recorded (answer lost)
    (Remote(10, "a", 1, 0, "/img"), Recorded(11, "h1")),  # recorded for another task
])
def test_plan_replaces_predictions_it_cannot_vouch_for(remote: Remote, recorded: Recorded | None) -> None:
    todo = plan({"a": want("a")}, [remote], {"a": recorded} if recorded else {})
    assert (todo.create, todo.recreate, todo.repredict, todo.unchanged) == ([], [("a", 10)], [], 0)
    # a task someone skipped, drafted or commented on keeps its id: its predictions are replaced in place
    touched = Remote(remote.id, remote.key, remote.predictions, 0, remote.image, touched=True)
    todo = plan({"a": want("a")}, [touched], {"a": recorded} if recorded else {})
    assert (todo.recreate, todo.repredict) == ([], [("a", 10)])


def test_plan_keeps_one_task_per_image_and_never_deletes_annotated_work() -> None:
    wanted = {"a": want("a"), "b": want("b"), "c": want("c")}
    remote = [
        Remote(5, "a", 1, 0, "/img"), Remote(7, "a", 1, 0, "/img"), Remote(9, "a", 1, 0, "/img"),  # recorded: 7
        Remote(20, "b", 1, 0, "/img"), Remote(21, "b", 1, 2, "/img", True),  # the annotated one stays
        Remote(30, "c", 1, 1, "/img", True), Remote(31, "c", 1, 1, "/img", True),  # both annotated: left alone
        Remote(40, "d", 1, 0, "/img"), Remote(41, "d", 1, 0, "/img", True),  # a skipped/commented one stays
    ]
    wanted["d"] = want("d")
    recorded = {"a": Recorded(7, "h1"), "b": Recorded(20, "h1"), "c": Recorded(30, "h1"), "d": Recorded(40, "h1")}
    todo = plan(wanted, remote, recorded)
    assert sorted(todo.remove) == [5, 9, 20, 40]
    assert todo.annotated_duplicates == [31]
    assert todo.repredict == [("d", 41)]
    assert todo.unchanged == 2  # a (task 7) and c (task 30)
    assert todo.annotated_kept == ["b"]  # task 21 was not the recorded one: its predictions stay as reviewed


def test_plan_keeps_reviewed_predictions_and_fixes_moved_images() -> None:
    wanted = {"a": want("a", "new", "/data/upload/1/a.png"), "b": want("b", "h1", "/new/b")}
    remote = [Remote(1, "a", 1, 1, "/data/upload/1/a.png", True), Remote(2, "b", 1, 0, "/old/b")]
    todo = plan(wanted, remote, {"a": Recorded(1, "old"), "b": Recorded(2, "h1")})
    assert (todo.annotated_kept, todo.repredict, todo.retarget, todo.unchanged) == (["a"], [], [("b", 2)], 1)


# -- review -----------------------------------------------------------------------------------------------------------
def test_compare_pairs_by_id_then_iou_and_names_each_outcome() -> None:
    predicted = [Box("p1", "cat", (0, 0, 10, 10)), Box("p2", "dog", (20, 20, 30, 30)),
                 Box("p3", "cat", (50, 50, 60, 60)), Box("p4", "cat", (70, 70, 80, 80)),
                 Box("p5", "dog", (0, 40, 10, 50))]
    annotated = [Box("p1", "cat", (0, 0, 10.4, 10)),  # same id, within 0.5 px: accepted
                 Box("p2", "cat", (20, 20, 30, 30)),  # same id, other class: relabeled
                 Box("new1", "cat", (51, 50, 61, 60)),  # new id, IoU 0.82 with p3: moved
                 Box("new2", "dog", (90, 90, 99, 99))]  # nothing near: added
    fates = compare(predicted, annotated)
    assert sorted(fates, key=str) == sorted([
        ("accepted", "cat", "p1", "p1"), ("relabeled", "dog", "p2", "p2"), ("moved", "cat", "p3", "new1"),
        ("deleted", "cat", "p4", None), ("deleted", "dog", "p5", None), ("added", "dog", None, "new2"),
    ], key=str)


def test_compare_matches_the_best_overlap_first() -> None:
    predicted = [Box("a", "cat", (0, 0, 10, 10)), Box("b", "cat", (2, 0, 12, 10))]
    annotated = [Box("x", "cat", (2, 0, 12, 10))]  # IoU 1.0 with b, 0.67 with a
    assert compare(predicted, annotated) == [("accepted", "cat", "b", "x"), ("deleted", "cat", "a", None)]
    assert compare(predicted, annotated, iou_threshold=1.01)[0] == ("deleted", "cat", "a", None)
    # a polygon vertex moved by the tolerance (0.5 px) is the same polygon; a little more is reshaped
    from autolabel.labelstudio.review import reshaped

    square = ((0.0, 0.0), (10.0, 0.0), (10.0, 10.0), (0.0, 10.0))
    before = Box("a", "cat", (0, 0, 10, 10), "polygon", square)
    for moved, expected in ((0.5, False), (0.6, True)):
        after = Box("a", "cat", (0, 0, 10, 10), "polygon", square[:3] + ((moved, 10.0 - moved),))
        assert reshaped(before, after) is expected
    # a region dragged far away keeps its id: moved, not deleted and added
    assert compare([Box("a", "cat", (0, 0, 10, 10))], [Box("a", "cat", (80, 80, 90, 90))]) == [
        ("moved", "cat", "a", "a")]


def test_tally_counts_per_class_and_acceptance_rate() -> None:
    tally = ReviewTally(["cat", "dog", "bird"])
    tally.add([Box("1", "cat", (0, 0, 5, 5)), Box("2", "cat", (10, 10, 20, 20)), Box("3", "dog", (30, 30, 40, 40))],
              [Box("1", "cat", (0, 0, 5, 5)), Box("3", "cat", (30, 30, 40, 40))])
    tally.add([Box("1", "cat", (0, 0, 5, 5))], [Box("1", "cat", (0, 0, 5, 5)), Box("9", "dog", (50, 50, 60, 60))])
    s = tally.summary()
    assert s["tasks_reviewed"] == 2
    assert s["classes"]["cat"] == {"predicted": 3, "accepted": 2, "moved": 0, "relabeled": 0, "deleted": 1,
                                   "added": 0, "acceptance_rate": 0.6667, "relabeled_to": {}}
    assert s["classes"]["dog"] == {"predicted": 1, "accepted": 0, "moved": 0, "relabeled": 1, "deleted": 0,
                                   "added": 1, "acceptance_rate": 0.0, "relabeled_to": {"cat": 1}}
    assert s["classes"]["bird"]["acceptance_rate"] is None
    assert s["overall"] == {"predicted": 4, "accepted": 2, "moved": 0, "relabeled": 1, "deleted": 1, "added": 1,
                            "acceptance_rate": 0.5}


def test_rect_xyxy_handles_rotation_about_the_top_left_corner() -> None:
    value = {"x": 50, "y": 50, "width": 10, "height": 20}
    assert rect_xyxy(value, 200, 100) == (100.0, 50.0, 120.0, 70.0)
    np.testing.assert_allclose(rect_xyxy(value | {"rotation": 90}, 100, 100), (30, 50, 50, 60), atol=1e-9)
    # 30° clockwise about (50, 50): the corners (60, 50), (50, 70) and (60, 70) turn to these
    c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
    corners = [(50 + 10 * c, 50 + 10 * s), (50 - 20 * s, 50 + 20 * c), (50 + 10 * c - 20 * s, 50 + 10 * s + 20 * c)]
    xs, ys = [50.0] + [x for x, _ in corners], [50.0] + [y for _, y in corners]
    np.testing.assert_allclose(rect_xyxy(value | {"rotation": 30}, 100, 100), (min(xs), min(ys), max(xs), max(ys)),
                               atol=1e-9)


# -- pull: a task's annotation as exportable rows ---------------------------------------------------------------------
def test_task_row_attaches_shapes_and_text_to_their_box() -> None:
    from label_studio_sdk.converter.brush import mask2rle

    mask = np.zeros((10, 20), dtype=np.uint8)
    mask[2:4, 5:9] = 255
    common = {"to_name": "image", "original_width": 20, "original_height": 10}
    result = [
        {"id": "7_0", "from_name": "label", "type": "rectanglelabels", **common,
         "value": {"x": 25, "y": 20, "width": 20, "height": 20, "rectanglelabels": ["cat"]}},
        {"id": "7_0_mask", "from_name": "mask", "type": "brushlabels", **common,
         "value": {"format": "rle", "rle": mask2rle(mask), "brushlabels": ["cat"]}},
        {"id": "7_0", "from_name": "transcription", "type": "textarea", **common, "value": {"text": ["HI"]}},
        {"id": "free", "from_name": "polygon", "type": "polygonlabels", **common,
         "value": {"points": [[50, 50], [100, 50], [100, 100]], "polygonlabels": ["bird"]}},
    ]
    classes = ["cat", "dog"]
    row = task_row({"id": 3, "data": {"image": "/data/local-files/?d=a%20b/c.png", "width": 20, "height": 10}},
                   result, classes, {"7_0": "moved"})
    assert (row.id, row.rel_path, row.width, row.height) == (3, "a b/c.png", 20, 10)
    assert classes == ["cat", "dog", "bird"]  # a class the config did not list joins at the end
    cat, bird = row.annotations
    assert (cat.class_name, cat.xyxy, cat.text, cat.extra) == ("cat", (5.0, 2.0, 9.0, 4.0), "HI",
                                                               {"region_id": "7_0", "review": "moved"})
    from autolabel.geometry import decode_rle

    assert np.array_equal(decode_rle(cat.rle), mask > 0)
    assert (bird.category, bird.xyxy, bird.polygon) == (2, (10.0, 5.0, 20.0, 10.0),
                                                        [[10.0, 5.0], [20.0, 5.0], [20.0, 10.0]])


# -- project config ---------------------------------------------------------------------------------------------------
def test_config_mismatches_name_each_difference() -> None:
    ours = labeling_config(Ontology.from_config(["cat", "dog"]))
    assert config_mismatches(ours, ours) == []
    theirs = (ours.replace('<Label value="dog"/>', '<Label value="cow"/>', 1)
              .replace('<TextArea name="review" toName="image" perRegion="true"',
                       '<TextArea name="review" toName="image"')
              .replace('<TextArea name="ocr" toName="image" editable="true"/>', ""))
    assert config_mismatches(theirs, ours) == [  # a text area it lacks (ocr) is no problem: its text is left out
        "control 'label': missing label(s) dog (the ontology's classes)",
        "control 'label': label(s) cow are not in the ontology (known: cat, dog)",
        "control 'review': perRegion is None, expected 'true'",
    ]
    without_first = (ours.replace('<TextArea name="transcription" toName="image" perRegion="true" editable="true" '
                                  'displayMode="region-list"/>', "")
                     .replace('<TextArea name="caption" toName="image"', '<TextArea name="caption" toName="image" '
                              'perRegion="true"'))
    assert config_mismatches(without_first, ours) == [  # the areas after a missing one are checked too
        "control 'caption': perRegion is 'true', expected None"]
    (broken,) = config_mismatches("<View><Image", ours)
    assert broken.startswith("the project's labeling config cannot be parsed (") and "line 1" in broken  # the
    # parser's own words say where it breaks
    assert classes_of(ours) == ["cat", "dog"]
    two = ours.replace('<Label value="dog"/>', '<Label value="dog"/><Label value="cow"/><Label value="emu"/>', 1)
    assert config_mismatches(two, ours) == [
        "control 'label': label(s) cow, emu are not in the ontology (known: cat, dog)"]
    # the box classes: our label control's, not those of other controls; else every labels control's in order
    shapes = ('<PolygonLabels name="outline" toName="image"><Label value="emu"/><Label value="cat"/>'
              '</PolygonLabels>')
    assert classes_of(ours.replace("</View>", shapes + "</View>")) == ["cat", "dog"]
    assert classes_of(f'<View><Image name="image" value="$image"/>{shapes}'
                      '<BrushLabels name="b" toName="image"><Label value="cat"/><Label value="dog"/></BrushLabels>'
                      "</View>") == ["emu", "cat", "dog"]


@pytest.mark.parametrize(("config", "problems"), [
    ('<View><Image name="img" value="$image"/><PolygonLabels name="p" toName="img"><Label value="cat"/>'
     '<Label value="dog"/></PolygonLabels></View>', []),  # polygons only, other names: fine
    ('<View><Image name="img" value="$picture"/><RectangleLabels name="r" toName="img"><Label value="cat"/>'
     '</RectangleLabels></View>',
     ['no <Image name="image" value="$image"/> (the tasks\' image key; the config has: '
      '<Image name="img" value="$picture">)']),
    ('<View><Image name="image" value="$image"/><Choices name="c" toName="image"><Choice value="x"/></Choices>'
     '</View>',
     ['no <RectangleLabels>, <PolygonLabels> or <BrushLabels> with toName="image" (add one with the ontology\'s '
      'classes as labels: cat, dog)']),
    ('<View><Image name="image" value="$image"/><Image name="other" value="$other"/>'
     '<BrushLabels name="b" toName="image"><Label value="cat"/><Label value="dog"/></BrushLabels>'
     '<BrushLabels name="b2" toName="image"><Label value="cow"/></BrushLabels>'
     '<RectangleLabels name="r" toName="other"><Label value="cow"/></RectangleLabels>'
     '<Labels name="review" toName="image"><Label value="x"/></Labels>'
     '<TextArea name="transcription" toName="other" perRegion="true"/>'
     '<TextArea name="caption" toName="image" perRegion="true"/></View>',
     ["control 'transcription': toName is 'other', expected 'image'",
      "control 'review': is <Labels>, expected <TextArea> (autolabel writes its text there)",
      "control 'caption': perRegion is 'true', expected None"]),  # the second brush and other image's: unused
])
def test_a_project_config_needs_the_image_a_labels_control_with_the_classes_and_our_text_areas_as_ours(
    config: str, problems: list[str]
) -> None:
    assert config_mismatches(config, labeling_config(Ontology.from_config(["cat", "dog"]))) == problems


def test_push_key_of_a_pipeline_file_is_validated_with_key_paths() -> None:
    data = {"ontology": ["cat"], "stages": [{"type": "plugins:CenterBox", "label": "cat"}],
            "push": {"url": "http://x", "project": "abc", "images": "ftp", "batch": 3}}
    with pytest.raises(ConfigError) as err:
        parse(data)
    assert err.value.problems == [
        "push.images: input should be 'local-files', 'upload' or 'url' (got 'ftp')",
        "push.batch: unknown key (known: url, project, images, image_root, document_root, batch_size, "
        "model_version, task_score, masks, min_score, flagged, timeout, retry_for, media, keyframe_tolerance)",
    ]


# -- client policy ----------------------------------------------------------------------------------------------------
def flaky(*errors: BaseException):
    """A call that raises ``errors`` in turn, then returns "done"; counts its calls."""
    calls = []

    def fn() -> str:
        calls.append(1)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return "done"

    fn.calls = calls  # type: ignore[attr-defined]
    return fn


def api_error(status: int, detail: str = "nope") -> ApiError:
    return ApiError(status_code=status, headers={"set-cookie": "sessionid=abc"}, body={"detail": detail})


@pytest.fixture
def conn() -> Connection:
    return Connection("http://127.0.0.1:9/", KEY, retry_for=60, sleep=lambda s: None)


def test_nothing_sent_is_retried_even_for_imports(conn: Connection) -> None:
    fn = flaky(httpx.ConnectError("refused"), httpx.ConnectTimeout("slow"), api_error(429))
    assert conn.call("import", fn, safe=False) == "done" and len(fn.calls) == 4 and conn.retries == 3


@pytest.mark.parametrize("error", [httpx.ReadTimeout("t"), httpx.RemoteProtocolError("dropped"), api_error(502),
                                   api_error(500)])
def test_an_unknown_outcome_is_retried_only_when_safe(conn: Connection, error: BaseException) -> None:
    assert conn.call("list", flaky(error)) == "done"
    with pytest.raises(Uncertain):
        conn.call("import", flaky(error), safe=False)


def test_refusals_are_not_retried_and_errors_carry_no_secrets(conn: Connection) -> None:
    fn = flaky(api_error(400, f"bad payload near {KEY}"))
    with pytest.raises(Rejected) as err:
        conn.call("import 3 tasks", fn)
    assert len(fn.calls) == 1 and err.value.status == 400
    assert str(err.value) == "import 3 tasks: HTTP 400: bad payload near ***"
    with pytest.raises(AutolabelError) as err:
        conn.call("list projects", flaky(api_error(401, "Invalid token.")))
    assert "refused the API key (401: HTTP 401: Invalid token.)" in str(err.value)
    assert "sessionid" not in str(err.value) and KEY not in str(err.value)


def test_a_server_down_longer_than_the_window_is_unreachable() -> None:
    conn = Connection("http://127.0.0.1:9", KEY, retry_for=0, sleep=lambda s: None)
    with pytest.raises(Unreachable, match=r"no success after 1 tries in 0 s \(connection failed"):
        conn.call("list tasks", flaky(*[httpx.ConnectError("refused")] * 5))
    assert [backoff(i) for i in range(7)] == [0.5, 1, 2, 4, 8, 15, 15]


def test_retries_back_off_and_count_and_anything_unknown_goes_up_unchanged() -> None:
    waits: list[float] = []
    conn = Connection("http://127.0.0.1:9", KEY, retry_for=60, sleep=waits.append)
    fn = flaky(httpx.PoolTimeout("pool"), api_error(503), api_error(408), httpx.ReadTimeout("t"))
    assert conn.call("list", fn) == "done" and waits == [0.5, 1.0, 2.0, 4.0] and conn.retries == 4
    for status in (408, 500, 503, 504):  # the outcome of an import is unknown: not repeated
        with pytest.raises(Uncertain, match=rf"^import: HTTP {status}: nope$"):
            conn.call("import", flaky(api_error(status)), safe=False)
    assert conn.call("import", flaky(api_error(429)), safe=False) == "done"  # throttled: it was not done
    with pytest.raises(ValueError, match="a bug"):
        conn.call("list", flaky(ValueError("a bug")))
    assert conn.retries == 5
    with pytest.raises(Rejected) as err:
        conn.call("get project", flaky(api_error(404, "Not found.")))
    assert (err.value.status, str(err.value)) == (404, "get project: HTTP 404: Not found.")
    with pytest.raises(AutolabelError, match=r"^http://127.0.0.1:9: list: Label Studio refused the API key \(403:"):
        conn.call("list", flaky(api_error(403)))


def test_errors_are_one_line_from_the_status_and_detail_with_the_key_masked(conn: Connection) -> None:
    body = {"detail": "bad\n  payload " + KEY, "validation_errors": {"data": ["required"]}, "exc_info": "Traceback"}
    assert conn.describe(ApiError(status_code=400, headers={}, body=body)) == (
        "HTTP 400: bad payload ***; {'data': ['required']}")
    no_detail = ApiError(status_code=500, headers={}, body={"exc_info": "x", "id": 3})
    assert conn.describe(no_detail) == "HTTP 500: {'id': 3}"
    assert conn.describe(ApiError(status_code=502, headers={}, body="x" * 500)) == "HTTP 502: " + "x" * 399 + "…"
    assert conn.describe(httpx.ReadTimeout("slow")) == "timed out (ReadTimeout)"
    assert conn.describe(httpx.ConnectError("refused")) == "connection failed (ConnectError: refused)"
    assert conn.describe(KeyError("k")) == "KeyError: 'k'"
    assert conn.scrub(f"a {KEY} b {KEY}") == "a *** b ***"


def test_urls_and_keys_are_checked_before_any_request(monkeypatch: pytest.MonkeyPatch) -> None:
    from autolabel.labelstudio.client import api_key_from_env, normalize_url

    assert normalize_url(" http://host:8080/ ") == "http://host:8080" and normalize_url("https://h//") == "https://h"
    with pytest.raises(AutolabelError, match=r"^--url: expected http://HOST:PORT or https://HOST \(got 'host:8080'\)$"):
        normalize_url("host:8080")
    assert api_key_from_env({"LABEL_STUDIO_API_KEY": "  abc \n"}) == "abc"
    with pytest.raises(AutolabelError, match="^LABEL_STUDIO_API_KEY is not set"):
        api_key_from_env({"LABEL_STUDIO_API_KEY": "   "})
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "from-env")
    assert api_key_from_env() == "from-env"
    assert Connection("http://h:1/", KEY).url == "http://h:1"


# -- images and the command line --------------------------------------------------------------------------------------
def test_image_references_are_relative_to_the_document_root() -> None:
    class Row:
        path, rel_path = "/srv/data/cams/day 1/a.jpg", "day 1/a.jpg"

    assert input_root(Row) == "/srv/data/cams"

    class Odd:  # a POSIX file name may hold a backslash: path and rel_path read alike
        path, rel_path = "/srv/data/cams/day\\1/a.jpg", "day\\1/a.jpg"

    assert input_root(Odd) == "/srv/data/cams"
    assert local_files_prefix("/srv/data/cams", "/srv/data") == "/data/local-files/?d=cams/"
    assert local_files_prefix("/srv/data/my cams", "/srv") == "/data/local-files/?d=data/my%20cams/"

    from autolabel.labelstudio.images import _strictly_under

    # Label Studio refuses a storage at its document root: an input folder must lie strictly below it
    below = [("/srv/data/cams", "/srv/data"), ("/srv/data/X", "/srv/data/"), ("/srv/data/a/b/", "/srv/data"),
             ("/srv", "/")]
    not_below = [("/srv/data", "/srv/data"), ("/srv/data/", "/srv/data"), ("/srv/database", "/srv/data"),
                 ("/srv", "/srv/data"), ("/", "/")]
    assert [_strictly_under(p, r) for p, r in below + not_below] == [True] * len(below) + [False] * len(not_below)


def test_push_needs_the_key_from_the_environment(tmp_path, monkeypatch, capsys) -> None:
    import yaml

    from autolabel.store import Store

    Store(tmp_path).close()
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(
        {"ontology": ["cat"], "stages": [{"type": "plugins:CenterBox", "label": "cat"}]}))
    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    args = ["push", str(tmp_path), "--url", "http://127.0.0.1:9", "--project", "abc", "--pipeline",
            str(tmp_path / "p.yaml")]
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert err == ("autolabel: error: LABEL_STUDIO_API_KEY is not set: export your Label Studio access token "
                   "(Account & Settings → Personal Access Token, or a legacy token) in that variable; it is never "
                   "read from the command line or a file")  # one line: the problem, where the token is found
    assert main(args + ["--batch-size", "0"]) == 2
    assert capsys.readouterr().err.strip() == (
        "autolabel: error: --batch-size: input should be greater than or equal to 1 (got 0)")
    assert main(["push", str(tmp_path / "none"), "--url", "http://h", "--project", "abc"]) == 1
    assert "no run store" in capsys.readouterr().err


def test_push_and_pull_parse_their_options_and_every_option_says_what_it_does() -> None:
    from autolabel.cli import _parser, _subcommands

    parser = _parser()
    args = parser.parse_args(["push", "out", "--url", "http://h", "--project", "7", "--masks", "brush",
                              "--retry-for", "5", "--timeout", "2.5", "--batch-size", "3", "--min-score", "0.5"])
    assert (args.masks, args.retry_for, args.timeout, args.batch_size, args.min_score) == ("brush", 5.0, 2.5, 3, 0.5)
    for masks in ("polygon", "none"):
        assert parser.parse_args(["push", "out", "--url", "h", "--project", "p", "--masks", masks]).masks == masks
    assert (args.images, args.task_score, args.flagged, args.pipeline, args.no_progress) == (None, None, None, None,
                                                                                             False)
    args = parser.parse_args(["pull", "--url", "http://h", "--project", "p", "-o", "x", "--retry-for", "1"])
    assert (args.format, args.task, args.image_root, args.retry_for, args.timeout) == ("coco", "detect", None, 1.0,
                                                                                       None)
    for argv in (["push", "out", "--url", "http://h"], ["pull", "--url", "http://h", "--project", "p"],
                 ["push", "out", "--url", "h", "--project", "p", "--masks", "mask"]):
        with pytest.raises(SystemExit):
            parser.parse_args(argv)
    choices = {"--images": ("local-files", "upload", "url"), "--task-score": ("min", "mean"),
               "--flagged": ("include", "exclude"), "--media": ("auto", "images", "videos")}
    for flag, values in choices.items():  # every value the options document (PushSpec's), and nothing else
        dest = flag[2:].replace("-", "_")
        for value in values:
            assert getattr(parser.parse_args(["push", "out", "--url", "h", "--project", "p", flag, value]),
                           dest) == value
        with pytest.raises(SystemExit):
            parser.parse_args(["push", "out", "--url", "h", "--project", "p", flag, "other"])
    for flag, values in {"--task": ("detect", "segment"), "--format": ("coco", "yolo")}.items():  # pull's, likewise
        for value in values:
            args = parser.parse_args(["pull", "--url", "h", "--project", "p", "-o", "x", flag, value])
            assert getattr(args, flag[2:]) == value
        with pytest.raises(SystemExit):
            parser.parse_args(["pull", "--url", "h", "--project", "p", "-o", "x", flag, "other"])
    for name in ("push", "pull"):
        sub = _subcommands(parser)[name]
        assert sub.description
        for action in sub._actions:
            assert action.help, (name, action.dest)
    assert "Pushing again adds only new images" in _subcommands(parser)["push"].description


def test_a_project_title_has_3_to_50_characters_and_an_image_mode_is_known(conn: Connection) -> None:
    from autolabel.labelstudio.images import ImageAccess
    from autolabel.labelstudio.project import find_project

    for title in ("ab", "x" * 51, "  ab  "):
        with pytest.raises(ConfigError) as err:
            find_project(conn, title)
        assert err.value.problems == [f"--project: a title must have 3 to 50 characters (got {title.strip()!r})"]
    quick = Connection("http://127.0.0.1:9", KEY, retry_for=0, sleep=lambda s: None)
    with pytest.raises(Unreachable):  # 50 characters: a title, looked up
        find_project(quick, "x" * 50)
    with pytest.raises(AutolabelError) as err:
        ImageAccess(conn, 1, "ftp", None)  # type: ignore[arg-type]
    assert str(err.value) == "--images: unknown mode 'ftp' (known: local-files, upload, url)"
    with pytest.raises(AutolabelError, match=r"^--images url needs --image-root PREFIX"):
        ImageAccess(conn, 1, "url", None)  # type: ignore[arg-type]


def test_a_personal_access_tokens_access_token_is_masked_too(conn: Connection) -> None:
    tokens = conn.sdk._client_wrapper._tokens_client
    tokens._access_token = "eyJ-short-lived-access-token"  # what the SDK holds once it refreshed a personal token
    assert conn.scrub(f"401 for eyJ-short-lived-access-token and {KEY}") == "401 for *** and ***"


def test_pull_and_push_need_a_url_and_pull_gives_up_in_one_line(tmp_path, monkeypatch, capsys) -> None:
    from autolabel.cli import _parser

    for argv in (["push", "out", "--project", "p"], ["pull", "--project", "p", "-o", "x"]):
        with pytest.raises(SystemExit):
            _parser().parse_args(argv)
    assert "the following arguments are required: --url" in capsys.readouterr().err
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", KEY)
    code = main(["pull", "--url", "http://127.0.0.1:9", "--project", "reviewed", "-o", str(tmp_path / "x"),
                 "--retry-for", "0", "--timeout", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1
    assert err[0].startswith("autolabel: error: http://127.0.0.1:9: list projects: no success after 1 tries in 0 s")


def test_an_error_with_a_body_shows_its_detail_and_a_url_with_credentials_is_masked_in_the_error(
        conn: Connection) -> None:
    from autolabel.labelstudio.client import normalize_url

    class Odd(Exception):  # an SDK error that is not an ApiError but carries the server's answer
        body = {"detail": f"bad key {KEY}"}

    assert conn.describe(Odd("ignored")) == "Odd: bad key ***"
    with pytest.raises(AutolabelError, match=r"^--url: expected http://HOST:PORT or https://HOST "
                                             r"\(got 'ftp://\*\*\*@host:21'\)$"):
        normalize_url("ftp://user:pw@host:21")
    for url in ("HTTP://user:pw@host:8080", "Https://user:pw@host"):  # a scheme in capitals is masked as well
        with pytest.raises(AutolabelError) as err:
            normalize_url(url)
        assert "pw" not in str(err.value) and "://***@host" in str(err.value)


def test_option_errors_name_the_command_line_flag() -> None:
    from autolabel.labelstudio.commands import _flag

    assert _flag("url: expected http://HOST") == "--url: expected http://HOST"
    assert _flag("project: required") == "--project: required"
    assert _flag("image_root: not a folder") == "--image-root: not a folder"
    assert _flag("name: not a push option") == "name: not a push option"


# -- raw requests (client.request, get_json, pages) against a real HTTP server standing in for Label Studio ----------
def _answer(code: int, data: bytes, content_type: str = "application/json"):
    def answer(h) -> None:
        h.send_response(code)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    return answer


def _paged(items: list[int], total: bool = True):
    """A list endpoint: ``page`` / ``page_size`` from the query, ``{"total": N, "tasks": [...]}``."""
    import json
    from urllib.parse import parse_qs, urlsplit

    def answer(h) -> None:
        query = parse_qs(urlsplit(h.path).query)
        page, size = int(query["page"][0]), int(query["page_size"][0])
        body = {"tasks": items[(page - 1) * size: page * size]} | ({"total": len(items)} if total else {})
        _answer(200, json.dumps(body).encode())(h)

    return answer


def test_raw_requests_reach_the_path_with_the_key_and_a_refusal_carries_the_servers_detail() -> None:
    from recording_server import Recorder

    with Recorder({"/api/projects/5": _answer(200, b'{"id": 5}'),
                   "/api/gone": _answer(404, b'{"detail": "Not found."}'),
                   "/api/broken": _answer(400, b"<html>" + b"x" * 400, "text/html")}) as server:
        conn = Connection(server.url, KEY, retry_for=0, sleep=lambda s: None)
        assert conn.get_json("get project", "api/projects/5", fields="all") == {"id": 5}
        assert conn.request("get project", "GET", "/api/projects/5", safe=True).json() == {"id": 5}
        assert server.paths() == ["/api/projects/5?fields=all", "/api/projects/5"]  # one slash, leading or not
        assert all(s.authorization == f"Token {KEY}" for s in server.seen)
        with pytest.raises(Rejected) as err:
            conn.request("get project", "GET", "api/gone", safe=True)
        assert (err.value.status, str(err.value)) == (404, "get project: HTTP 404: Not found.")
        with pytest.raises(Rejected) as err:  # not JSON: the start of the text
            conn.request("post", "POST", "api/broken", safe=False)
        assert str(err.value) == "post: HTTP 400: <html>" + "x" * 294


@pytest.mark.parametrize(("items", "total", "requests"), ids=["short-last", "total-reached", "no-total", "empty"],
                         argvalues=[(list(range(5)), True, 3), (list(range(4)), True, 2), (list(range(4)), False, 3),
                                    ([], True, 1)])
def test_pages_reads_a_list_page_by_page_until_the_total_or_a_short_page(items: list[int], total: bool,
                                                                           requests: int) -> None:
    from recording_server import Recorder

    with Recorder({"/api/tasks": _paged(items, total)}) as server:
        conn = Connection(server.url, KEY, retry_for=0, sleep=lambda s: None)
        assert list(conn.pages("list tasks", "api/tasks", "tasks", page_size=2, project=7)) == items
        assert server.paths() == [f"/api/tasks?page={p}&page_size=2&project=7" for p in range(1, requests + 1)]


def test_the_sdk_never_repeats_a_request_itself_and_reads_are_retried_by_the_connection() -> None:
    """An import the SDK repeated on a 5xx could land twice: the connection alone decides what to repeat."""
    from recording_server import Recorder

    answers = iter([_answer(503, b'{"detail": "busy"}'), _answer(200, b'{"id": 5}')])
    with Recorder({"/api/projects/5/": _answer(503, b'{"detail": "busy"}'),
                   "/api/flaky": lambda h: next(answers)(h),
                   "/api/tasks": _answer(200, b'{"total": 0}')}) as server:
        conn = Connection(server.url, KEY, retry_for=60, sleep=lambda s: None)
        with pytest.raises(Uncertain, match=r"^get project: HTTP 503: busy$"):
            conn.call("get project", conn.sdk.projects.get, 5, safe=False)
        assert server.paths() == ["/api/projects/5/"]  # sent once
        assert conn.get_json("read", "api/flaky") == {"id": 5} and conn.retries == 1  # a read: retried
        assert list(conn.pages("list tasks", "api/tasks", "tasks")) == []  # a page without its list: empty


def test_a_video_projects_config_is_checked_control_by_control() -> None:
    """Every problem of a reused video project's config is named, each control checked whatever the one before."""
    from autolabel.exports.labelstudio_video import video_labeling_config

    config = video_labeling_config(Ontology.from_config(["car", "person"]))
    assert config_mismatches(config, config) == []
    theirs = (config.replace('<VideoRectangle name="box" toName="video"/>', "")
              .replace('<Labels name="videoLabels" toName="video"', '<Labels name="videoLabels" toName="clip"')
              .replace('<Label value="person"/>', '<Label value="truck"/>')
              .replace("</View>", '<Video name="clip" value="$video"/></View>'))
    assert config_mismatches(theirs, config) == [
        "control 'box': missing (expected <VideoRectangle name=\"box\" toName=\"video\">)",
        "control 'videoLabels': toName is 'clip', expected 'video'",
        "control 'videoLabels': missing label(s) person (the ontology's classes)",
        "control 'videoLabels': label(s) truck are not in the ontology (known: car, person)"]
    swapped = (config.replace('<VideoRectangle name="box" toName="video"/>',
                              '<RectangleLabels name="box" toName="video"><Label value="car"/></RectangleLabels>')
               .replace('<Labels name="videoLabels" toName="video" allowEmpty="true">',
                        '<Choices name="videoLabels" toName="video">')
               .replace("</Labels>", "</Choices>").replace("<Label value", "<Choice value")
               .replace('<Choice value="car"/></RectangleLabels>', '<Label value="car"/></RectangleLabels>'))
    assert config_mismatches(swapped, config) == ["control 'box': is <RectangleLabels>, expected <VideoRectangle>",
                                                  "control 'videoLabels': is <Choices>, expected <Labels>"]


def test_a_push_lists_the_first_twenty_images_it_could_not_send_then_how_many_more() -> None:
    from autolabel.labelstudio.commands import not_pushed_lines

    failed = {f"im{i:02d}.png": f"reason {i}" for i in range(21)}
    assert not_pushed_lines(dict(list(failed.items())[:20])) == [
        f"autolabel: not pushed: im{i:02d}.png: reason {i}" for i in range(20)]  # twenty: all, no tail
    lines = not_pushed_lines(failed)
    assert len(lines) == 21 and lines[19] == "autolabel: not pushed: im19.png: reason 19"
    assert lines[-1] == "autolabel: ... and 1 more not pushed"
    assert not_pushed_lines({}) == []


def test_a_pair_at_exactly_the_iou_threshold_is_one_object_just_below_it_two() -> None:
    # the same rule as eval's matcher (COCO's): IoU >= threshold pairs a predicted and an annotated region
    predicted = [Box("p", "cat", (0.0, 0.0, 50.0, 100.0))]
    annotated = [Box("a", "cat", (0.0, 0.0, 25.0, 100.0))]  # IoU 2500 / 5000 = 0.5 exactly
    assert compare(predicted, annotated, iou_threshold=0.5) == [("moved", "cat", "p", "a")]
    assert compare(predicted, annotated, iou_threshold=0.501) == [("deleted", "cat", "p", None),
                                                                   ("added", "cat", None, "a")]  # (IoUs are float32)
