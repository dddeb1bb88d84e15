"""Push and pull against a real Label Studio server (installed from the package index, started here).

The first run installs label-studio into a cached virtualenv (see tests/support/lsserver.py): minutes, ~1 GB. If that
fails these tests fail with the reason; they do not skip.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import threading
import time
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
from PIL import Image

from autolabel.cli import main
from autolabel.config import PushSpec
from autolabel.errors import AutolabelError
from autolabel.exports.labelstudio import labeling_config, task
from autolabel.exports.rows import image_rows
from autolabel.labelstudio.push import push
from autolabel.labelstudio.pull import pull
from autolabel import Pipeline
from autolabel.labelstudio.review import boxes
from autolabel.store import Store
from lsserver import TOKEN, FaultProxy, LabelStudioServer
from plugins import export_pipeline, make_export_images

pytestmark = pytest.mark.slow


# -- fixtures ------------------------------------------------------------------------------------------------------
# ls and sdk (one Label Studio server for the whole session, shared with the video tests): tests/conftest.py


@pytest.fixture
def images(ls: LabelStudioServer, request: pytest.FixtureRequest) -> Path:
    """The export tests' four images, in a folder of their own under the server's local-files document root."""
    folder = ls.document_root / re.sub(r"[^\w.-]", "_", request.node.name)  # a parametrized name is no glob
    make_export_images(folder)
    return folder


def label(images: Path, output: Path, **extra: object) -> Store:
    """Run the export-test pipeline (CenterBox, then RichLabels: boxes, a mask, a polygon, a text) into output."""
    Pipeline.from_dict(export_pipeline(**extra)).run(input=str(images), output=str(output))
    return Store(output)


def spec_of(store: Store):
    return Pipeline.from_dict(store.last_pipeline()).spec


def options(url: str, project: str, **kw: object) -> PushSpec:
    return PushSpec(url=url, project=project, **kw)


def snapshot(sdk, project_id: int) -> dict[str, list[tuple[int, int]]]:
    """Through the SDK: image key -> [(task id, number of predictions)], counting predictions one by one."""
    per_task: dict[int, int] = {}
    for p in sdk.predictions.list(project=project_id):
        per_task[p.task] = per_task.get(p.task, 0) + 1
    out: dict[str, list[tuple[int, int]]] = {}
    for t in sdk.tasks.list(project=project_id, page_size=500):
        out.setdefault(t.data.get("autolabel_key"), []).append((t.id, per_task.get(t.id, 0)))
    return out


def many_images(folder: Path, n: int) -> None:
    """``n`` small PNGs of distinct content (distinct keys)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (32 + i % 5, 24), (i * 6 % 256, 100, 200)).save(folder / f"img{i:03d}.png")


def center_pipeline(label_: str = "cat") -> dict:
    return {"name": "faults", "ontology": ["cat", "dog"], "stages": [{"type": "plugins:CenterBox", "label": label_}]}


# -- push ----------------------------------------------------------------------------------------------------------
def test_push_creates_one_task_per_image_with_the_stores_prediction(ls, sdk, images, tmp_path) -> None:
    store = label(images, tmp_path / "out")
    spec = spec_of(store)
    summary = push(store, spec, options(ls.url, "push matches store"), api_key=TOKEN)
    assert (summary.created, summary.updated, summary.unchanged, summary.failed) == (4, 0, 0, {})
    assert summary.exit_code == 0 and summary.rounds == 1 and summary.left_out == {}
    assert list(summary.timings) == ["index", "images", "rounds"] and min(summary.timings.values()) >= 0
    assert sum(summary.timings.values()) <= summary.seconds

    project = sdk.projects.get(summary.project_id)
    assert project.label_config.strip() == labeling_config(spec.ontology).strip()
    assert project.model_version == "export-test"
    assert project.sampling == "Uncertainty sampling"
    rows = {row.sha256: row for row in image_rows(store, spec.ontology)}
    predictions = {p.task: p for p in sdk.predictions.list(project=project.id)}
    tasks = list(sdk.tasks.list(project=project.id))
    assert len(tasks) == 4 and len(predictions) == 4
    for t in tasks:
        row = rows[t.data["autolabel_key"]]
        assert t.data["image"] == f"/data/local-files/?d={quote(images.name)}/{quote(row.rel_path)}"
        assert (t.data["width"], t.data["height"], t.data["rel_path"]) == (row.width, row.height, row.rel_path)
        pred = predictions[t.id]
        expected = task(row, model_version="export-test")["predictions"][0]
        assert pred.result == expected["result"] and pred.model_version == "export-test"
        # one region per object, as the server keeps them: the centre box, the masked cat, the dog's polygon, the
        # OCR box; back in pixels (by the review's reader, not the builder), their boxes are the store's
        objects = [r for r in pred.result if r["type"].endswith("labels")]
        assert [(r["id"], r["type"], r["value"][r["type"]]) for r in objects] == [
            (f"{row.id}_0", "rectanglelabels", ["cat"]), (f"{row.id}_1", "brushlabels", ["cat"]),
            (f"{row.id}_2", "polygonlabels", ["dog"]), (f"{row.id}_3", "rectanglelabels", ["text"])]
        np.testing.assert_allclose([b.xyxy for b in boxes(pred.result)], [a.xyxy for a in row.annotations],
                                   atol=1e-2)
        texts = [(r["id"], r["from_name"]) for r in pred.result if r["type"] == "textarea"]
        assert texts == [(f"{row.id}_2", "review"), (f"{row.id}_3", "transcription"), (f"{row.id}_caption", "caption"),
                         (f"{row.id}_ocr", "ocr")]
        assert pred.score == pytest.approx(min(a.score for a in row.annotations), abs=1e-5)
    # the image itself is served by Label Studio from the pushed reference
    first = tasks[0]
    body = _get(ls.url, first.data["image"])
    assert body == (images / first.data["rel_path"]).read_bytes()


def test_a_project_is_found_by_id_or_its_one_title_and_a_new_one_gets_the_review_view(ls, sdk) -> None:
    from autolabel.labelstudio.client import Connection, Rejected
    from autolabel.labelstudio.project import REVIEW_VIEW, find_project, resolve_project, set_model_version
    from autolabel.ontology import Ontology

    conn, config = Connection(ls.url, TOKEN), labeling_config(Ontology.from_config(["cat"]))
    made, created = resolve_project(conn, " found by title ", config)
    assert created and made.title == "found by title" and made.label_config.strip() == config.strip()
    assert [v.data["title"] for v in sdk.views.list(project=made.id)] == [REVIEW_VIEW]
    assert find_project(conn, str(made.id)).id == made.id and find_project(conn, "found by title").id == made.id
    assert resolve_project(conn, "found by title", config)[1] is False  # found again, not created
    with pytest.raises(AutolabelError, match=rf"^{re.escape(ls.url)}: no project with id 987654 \(pass an existing"):
        find_project(conn, "987654")
    with pytest.raises(Rejected) as err:  # the server's own words on what it refused
        conn.request("get project 987654", "GET", "api/projects/987654", safe=True)
    missing = "HTTP 404: No Project matches the given query."
    assert (err.value.status, str(err.value)) == (404, f"get project 987654: {missing}")
    with pytest.raises(Rejected) as err:
        set_model_version(conn, 987654, "v1")
    assert (err.value.status, str(err.value)) == (404, f"set model_version: {missing}")
    a, b = (sdk.projects.create(title="twin title").id for _ in range(2))
    with pytest.raises(AutolabelError, match=rf"^{re.escape(ls.url)}: 2 projects are titled 'twin title' "
                                             rf"\(ids ({a}, {b}|{b}, {a})\); pass --project ID$"):  # as listed
        find_project(conn, "twin title")


def test_push_twice_adds_nothing_and_a_newer_run_replaces_predictions(ls, sdk, images, tmp_path, capsys) -> None:
    store = label(images, tmp_path / "out")
    first = push(store, spec_of(store), options(ls.url, "idempotent push"), api_key=TOKEN)
    before = snapshot(sdk, first.project_id)
    again = push(store, spec_of(store), options(ls.url, "idempotent push"), api_key=TOKEN)
    assert (again.created, again.updated, again.unchanged) == (0, 0, 4)
    assert snapshot(sdk, first.project_id) == before
    assert sorted(n for tasks in before.values() for _, n in tasks) == [1, 1, 1, 1]
    assert all(len(tasks) == 1 for tasks in before.values())

    # a reviewer annotates one task and skips another; then a newer run (CenterBox says "dog") over one more image
    tasks = {t.data["rel_path"]: t.id for t in sdk.tasks.list(project=first.project_id)}
    reviewed, skipped = tasks["square.png"], tasks["wide.png"]
    pred = sdk.predictions.list(task=reviewed)[0]
    sdk.annotations.create(reviewed, result=pred.result, parent_prediction=pred.id)
    sdk.annotations.create(skipped, result=[], was_cancelled=True)
    Image.new("RGB", (40, 40), (1, 2, 3)).save(images / "new.png")
    store.close()
    extra = {"stages": [{"type": "plugins:CenterBox", "label": "dog"}, {"type": "plugins:RichLabels"}]}
    store = label(images, tmp_path / "out", **extra)
    capsys.readouterr()
    newer = push(store, spec_of(store), options(ls.url, "idempotent push"), api_key=TOKEN, progress=True)
    assert (newer.created, newer.updated, newer.unchanged, newer.annotated_kept) == (1, 3, 0, 1)
    # the bar counts every task the round sends: imported anew, re-predicted and created alike
    assert re.search(r"push round 1: 100%\|.*\| 4/4 \[.*task/s\]", capsys.readouterr().err)
    after = snapshot(sdk, first.project_id)
    assert set(before) < set(after) and len(after) == 5
    assert all(len(tasks) == 1 and tasks[0][1] == 1 for tasks in after.values())
    now = {t.data["rel_path"]: t.id for t in sdk.tasks.list(project=first.project_id)}
    # reviewed and skipped tasks keep their ids; untouched ones were imported anew with the new prediction
    assert (now["square.png"], now["wide.png"]) == (reviewed, skipped)
    assert now["sub/tall.png"] != tasks["sub/tall.png"] and now["rotated.jpg"] != tasks["rotated.jpg"]
    for rel, task_id in now.items():
        labels = [r["value"]["rectanglelabels"][0] for r in sdk.predictions.list(task=task_id)[0].result
                  if r["type"] == "rectanglelabels"]
        # the annotated task keeps what its reviewer saw; the others have the newer run's first box
        assert labels[0] == ("cat" if rel == "square.png" else "dog")
    assert push(store, spec_of(store), options(ls.url, "idempotent push"), api_key=TOKEN).created == 0
    Image.new("RGB", (30, 30), (4, 5, 6)).save(images / "one more.png")  # a round with exactly one task to send
    store.close()
    store = label(images, tmp_path / "out", **extra)
    assert push(store, spec_of(store), options(ls.url, "idempotent push"), api_key=TOKEN).created == 1


def test_deleting_to_reimport_spares_tasks_a_reviewer_touched_meanwhile(ls, sdk, images, tmp_path) -> None:
    from autolabel.labelstudio.client import Connection
    from autolabel.labelstudio.push import _Apply

    store = label(images, tmp_path / "out")
    pushed = push(store, spec_of(store), options(ls.url, "reviewer race"), api_key=TOKEN)
    tasks = {t.data["rel_path"]: t.id for t in sdk.tasks.list(project=pushed.project_id)}
    sdk.annotations.create(tasks["square.png"], result=[])  # annotated after the push listed the project
    sdk.annotations.create(tasks["wide.png"], result=[], was_cancelled=True)  # skipped
    apply = _Apply(Connection(ls.url, TOKEN), pushed.project_id, {}, None, None, 500, "v", pushed, set())  # type: ignore[arg-type]
    assert apply._delete_untouched(list(tasks.values()), "delete") == 2
    assert sorted(t.data["rel_path"] for t in sdk.tasks.list(project=pushed.project_id)) == ["square.png", "wide.png"]


def test_a_batch_label_studio_refuses_is_split_and_its_halves_still_count_as_replaced(ls, sdk, images,
                                                                                        tmp_path) -> None:
    store = label(images, tmp_path / "out")
    first = push(store, spec_of(store), options(ls.url, "split batch"), api_key=TOKEN)
    store.close()
    store = label(images, tmp_path / "out", stages=[{"type": "plugins:CenterBox", "label": "dog"},
                                                  {"type": "plugins:RichLabels"}])  # a newer run: other labels
    imports: list[int] = []

    def refuse_first_import(n: int, method: str, path: str) -> str | None:
        if method == "POST" and "/import" in path:
            imports.append(n)
            return "400" if len(imports) == 1 else None
        return None

    with FaultProxy(ls.url, fault=refuse_first_import) as proxy:
        newer = push(store, spec_of(store), options(proxy.url, str(first.project_id)), api_key=TOKEN)
    assert len(imports) == 3  # the batch of 4 refused, then its two halves
    assert (newer.created, newer.updated, newer.failed) == (0, 4, {})  # imported anew: replaced, not new
    assert sorted(n for tasks in snapshot(sdk, first.project_id).values() for _, n in tasks) == [1, 1, 1, 1]


def test_a_prediction_label_studio_refuses_names_its_image_and_the_rest_go_in(ls, sdk, images, tmp_path) -> None:
    store = label(images, tmp_path / "out")
    first = push(store, spec_of(store), options(ls.url, "refused prediction"), api_key=TOKEN)
    tasks = {t.data["rel_path"]: t.id for t in sdk.tasks.list(project=first.project_id)}
    sdk.annotations.create(tasks["wide.png"], result=[], was_cancelled=True)  # skipped: touched, so re-predicted
    store.close()
    store = label(images, tmp_path / "out", stages=[{"type": "plugins:CenterBox", "label": "dog"},
                                                    {"type": "plugins:RichLabels"}])

    def refuse_predictions(n: int, method: str, path: str) -> str | None:
        return "400" if method == "POST" and "/import/predictions" in path else None

    with FaultProxy(ls.url, fault=refuse_predictions) as proxy:
        newer = push(store, spec_of(store), options(proxy.url, str(first.project_id)), api_key=TOKEN)
    assert list(newer.failed) == ["wide.png"] and "injected 400" in newer.failed["wide.png"]
    assert newer.updated == 3  # the untouched three, imported anew with their new predictions


def test_a_project_whose_config_differs_is_refused_line_by_line(ls, sdk, images, tmp_path, monkeypatch, capsys) -> None:
    label(images, tmp_path / "out").close()
    config = labeling_config(spec_of(Store(tmp_path / "out")).ontology)
    config = config.replace('\n    <Label value="dog"/>', "", 1)  # the first: RectangleLabels'
    config = config.replace('<TextArea name="review" toName="image" perRegion="true"',
                            '<TextArea name="review" toName="image"')
    project = sdk.projects.create(title="config differs", label_config=config)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", TOKEN)
    code = main(["push", str(tmp_path / "out"), "--url", ls.url, "--project", str(project.id), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    head = (f"autolabel: error: project {project.id} ('config differs') at {ls.url}: "
            "its labeling config does not match the ontology: ")
    assert code == 2
    assert err == [
        head + "control 'label': missing label(s) dog (the ontology's classes)",
        head + "control 'review': perRegion is None, expected 'true'",
        head + "to fix, edit it in the project's Settings → Labeling Interface (the expected config is what "
               "`autolabel export --format labelstudio` writes) or push to a new title",
    ]
    assert list(sdk.tasks.list(project=project.id)) == []


POLYGONS_ONLY = """<View>
  <Image name="photo" value="$image"/>
  <PolygonLabels name="outline" toName="photo"><Label value="cat"/><Label value="dog"/><Label value="text"/>
  </PolygonLabels>
  <TextArea name="transcription" toName="photo" perRegion="true" editable="true"/>
</View>"""
BOXES_ONLY = """<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="box" toName="image"><Label value="cat"/><Label value="dog"/><Label value="text"/>
  </RectangleLabels>
</View>"""


@pytest.mark.parametrize(("config", "kinds", "left_out"), ids=["polygons", "boxes"], argvalues=[
    (POLYGONS_ONLY, ["polygonlabels"] * 4, {"caption": 4, "ocr": 4, "review": 4}),
    (BOXES_ONLY, ["rectanglelabels"] * 4, {"caption": 4, "ocr": 4, "review": 4, "transcription": 4}),
])
def test_a_projects_own_config_shapes_one_region_per_object(ls, sdk, images, tmp_path, config, kinds,
                                                            left_out) -> None:
    """A project made in Label Studio with a config of its own: each object is one region of a kind it has, under its
    control names; what it has no text area for is left out and said."""
    from label_studio_sdk.label_interface import LabelInterface

    store = label(images, tmp_path / "out")
    project = sdk.projects.create(title=f"own config {len(kinds[0])}", label_config=config)
    summary = push(store, spec_of(store), options(ls.url, str(project.id)), api_key=TOKEN)
    assert (summary.created, summary.failed, summary.left_out) == (4, {}, left_out)
    assert "left out, the project's labeling config has no text area for them: 4 captions" in summary.line()
    interface = LabelInterface(config)
    rows = {row.sha256: row for row in image_rows(store, spec_of(store).ontology)}
    for t in sdk.tasks.list(project=project.id):
        (pred,) = sdk.predictions.list(task=t.id)
        row = rows[t.data["autolabel_key"]]
        assert interface.validate_prediction({"result": pred.result}, return_errors=True) == []
        objects = [r for r in pred.result if r["type"].endswith("labels")]
        assert [r["type"] for r in objects] == kinds
        assert [r["id"] for r in objects] == [f"{row.id}_{k}" for k in range(4)]  # one region per object
        np.testing.assert_allclose([b.xyxy for b in boxes(pred.result)], [a.xyxy for a in row.annotations],
                                   atol=0.02 * max(row.width, row.height))  # the mask's outline: pixel centres
        texts = [(r["id"], r["from_name"], r["value"]["text"]) for r in pred.result if r["type"] == "textarea"]
        assert texts == ([(f"{row.id}_3", "transcription", ["HELLO"])] if "transcription" not in left_out else [])
    again = push(store, spec_of(store), options(ls.url, str(project.id)), api_key=TOKEN)
    assert (again.created, again.unchanged) == (0, 4)


# -- pull ----------------------------------------------------------------------------------------------------------
def _review(sdk, project_id: int) -> dict[str, int]:
    """Annotate three of the four tasks as reviewers would; return rel_path -> task id."""
    tasks = {t.data["rel_path"]: t for t in sdk.tasks.list(project=project_id)}
    for rel, t in tasks.items():
        pred = sdk.predictions.list(task=t.id)[0]
        result = copy.deepcopy(pred.result)
        rid = f"{t.data['autolabel_id']}_"
        if rel == "square.png":  # accepted as is
            pass
        elif rel == "wide.png":  # centre box moved right by 10 %, dog relabeled cat, text box re-drawn (new id)
            for r in result:
                if r["id"] == rid + "0" and r["type"] == "rectanglelabels":
                    r["value"]["x"] += 10
                if r["id"] == rid + "2" and r["type"] == "polygonlabels":  # the dog is its polygon
                    r["value"]["polygonlabels"] = ["cat"]
                if r["id"] == rid + "3":
                    r["id"] = "redrawn3"
        elif rel == "sub/tall.png":  # text box deleted, a dog added
            result = [r for r in result if r["id"] != rid + "3"]
            result.append({"id": "added1", "from_name": "label", "to_name": "image", "type": "rectanglelabels",
                           "original_width": 30, "original_height": 50,
                           "value": {"x": 0, "y": 0, "width": 20, "height": 10, "rotation": 0,
                                     "rectanglelabels": ["dog"]}})
        else:
            continue  # rotated.jpg: not reviewed
        sdk.annotations.create(t.id, result=result, parent_prediction=pred.id)
    return {rel: t.id for rel, t in tasks.items()}


def test_pull_writes_the_reviewed_annotations_and_the_acceptance_summary(ls, sdk, images, tmp_path) -> None:
    store = label(images, tmp_path / "out")
    pushed = push(store, spec_of(store), options(ls.url, "review and pull"), api_key=TOKEN)
    ids = _review(sdk, pushed.project_id)

    result = pull(ls.url, "review and pull", tmp_path / "pulled", fmt="coco", api_key=TOKEN)
    summary = json.loads((tmp_path / "pulled" / "review_summary.json").read_text())
    assert summary == result.review
    assert summary["tasks_reviewed"] == 3
    assert summary["classes"] == {
        "cat": {"predicted": 6, "accepted": 5, "moved": 1, "relabeled": 0, "deleted": 0, "added": 0,
                "acceptance_rate": 0.8333, "relabeled_to": {}},
        "dog": {"predicted": 3, "accepted": 2, "moved": 0, "relabeled": 1, "deleted": 0, "added": 1,
                "acceptance_rate": 0.6667, "relabeled_to": {"cat": 1}},
        "text": {"predicted": 3, "accepted": 2, "moved": 0, "relabeled": 0, "deleted": 1, "added": 0,
                 "acceptance_rate": 0.6667, "relabeled_to": {}},
    }
    assert summary["overall"] == {"predicted": 12, "accepted": 9, "moved": 1, "relabeled": 1, "deleted": 1,
                                  "added": 1, "acceptance_rate": 0.75}

    coco = json.loads((tmp_path / "pulled" / "coco.json").read_text())
    assert [c["name"] for c in coco["categories"]] == ["cat", "dog", "text"]
    assert sorted((i["id"], i["file_name"], i["width"], i["height"]) for i in coco["images"]) == sorted(
        [(ids["square.png"], "square.png", 64, 64), (ids["wide.png"], "wide.png", 96, 48),
         (ids["sub/tall.png"], "sub/tall.png", 30, 50)])
    by_image: dict[int, list] = {}
    for a in coco["annotations"]:
        by_image.setdefault(a["image_id"], []).append((a["category_id"], a["bbox"], a["attributes"]["review"]))
    assert sorted(by_image[ids["wide.png"]]) == [
        (1, [12.0, 6.0, 72.0, 36.0], "accepted"), (1, [12.0, 6.0, 72.0, 36.0], "relabeled"),
        (1, [33.6, 12.0, 48.0, 24.0], "moved"), (3, [12.0, 24.0, 36.0, 6.0], "accepted")]
    assert sorted(by_image[ids["sub/tall.png"]]) == [
        (1, [3.0, 6.0, 23.0, 37.0], "accepted"), (1, [7.5, 12.5, 15.0, 25.0], "accepted"),
        (2, [0.0, 0.0, 6.0, 5.0], "added"), (2, [3.0, 6.0, 23.0, 37.0], "accepted")]
    # accepted unchanged: the same boxes and shapes as the run's own COCO export
    main(["export", str(tmp_path / "out"), "--format", "coco"])
    exported = json.loads((tmp_path / "out" / "coco.json").read_text())
    square_id = next(i["id"] for i in exported["images"] if i["file_name"] == "square.png")
    mine = sorted((a["category_id"], a["bbox"], a["segmentation"]) for a in exported["annotations"]
                  if a["image_id"] == square_id)
    pulled = sorted((a["category_id"], a["bbox"], a["segmentation"]) for a in coco["annotations"]
                    if a["image_id"] == ids["square.png"])
    assert pulled == mine

    pull(ls.url, str(pushed.project_id), tmp_path / "yolo-pull", fmt="yolo", api_key=TOKEN)
    root = tmp_path / "yolo-pull" / "yolo"
    labels = {p.stem: p.read_text().splitlines() for p in root.glob("labels/*/*.txt")}
    assert set(labels) == {"square", "wide", "sub__tall"}
    assert sorted(labels["wide"]) == sorted(["0 0.500000 0.500000 0.750000 0.750000",
                                             "0 0.600000 0.500000 0.500000 0.500000",
                                             "0 0.500000 0.500000 0.750000 0.750000",
                                             "2 0.312500 0.562500 0.375000 0.125000"])
    wide_image = next(root.glob("images/*/wide.png"))
    assert wide_image.read_bytes() == (images / "wide.png").read_bytes()  # downloaded through Label Studio
    assert "names:\n  0: cat\n  1: dog\n  2: text" in (root / "data.yaml").read_text()


def test_pull_on_the_command_line_links_images_from_the_image_root(ls, sdk, images, tmp_path, monkeypatch,
                                                                    capsys) -> None:
    store = label(images, tmp_path / "out")
    pushed = push(store, spec_of(store), options(ls.url, "pull by cli"), api_key=TOKEN)
    _review(sdk, pushed.project_id)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", TOKEN)
    nested = tmp_path / "not" / "made" / "yet"
    capsys.readouterr()
    code = main(["pull", "--url", ls.url, "--project", "pull by cli", "-o", str(nested), "--format", "yolo",
                 "--task", "segment", "--image-root", str(images)])
    out, err = capsys.readouterr()
    assert code == 0 and "review of 3 tasks" in out
    project_url = f"{ls.url}/projects/{pushed.project_id}"
    assert err.splitlines()[-1] == f"autolabel: pulled 12 boxes of 3 reviewed tasks from {project_url}"
    linked = sorted((nested / "yolo").glob("images/*/*.png"))
    assert sorted(p.name for p in linked) == ["square.png", "sub__tall.png", "wide.png"]
    assert all(p.is_symlink() and p.resolve().parent in (images, images / "sub") for p in linked)
    segment = (nested / "yolo" / "labels").rglob("square.txt")
    # class + x, y per point: the centre box's 4 corners, the cat's two-part brush as one joined polygon (4 + 1
    # points a part), the dog's triangle, the text box's corners
    assert [len(line.split()) for line in next(segment).read_text().splitlines()] == [9, 21, 7, 9]


# -- faults --------------------------------------------------------------------------------------------------------
def _assert_exactly_once(sdk, project_id: int, store: Store) -> None:
    keys = {row["sha256"] for row in store.images(labels=False)}
    state = snapshot(sdk, project_id)
    assert set(state) == keys
    assert {k: [n for _, n in v] for k, v in state.items()} == {k: [1] for k in keys}


def test_push_survives_the_server_stopping_mid_push(ls, sdk, tmp_path) -> None:
    folder = ls.document_root / "restart"
    many_images(folder, 40)
    Pipeline.from_dict(center_pipeline()).run(input=str(folder), output=str(tmp_path / "out"))
    store = Store(tmp_path / "out")
    imports = []
    restarted = threading.Event()

    def fault(n: int, method: str, path: str) -> str | None:  # the 3rd import: done, then no answer
        if method == "POST" and "/import" in path:
            imports.append(n)
            return "drop-after" if len(imports) == 3 else None
        return None

    def after(n: int, method: str, path: str) -> None:  # ... because the server stopped right after it
        if len(imports) >= 3 and n == imports[2]:
            ls.stop()
            threading.Thread(target=lambda: (time.sleep(1.0), ls.start(), restarted.set()), daemon=True).start()

    with FaultProxy(ls.url, fault=fault, after=after) as proxy:
        summary = push(store, spec_of(store), options(proxy.url, "server restarts", batch_size=4, retry_for=300),
                       api_key=TOKEN)
        assert restarted.is_set() and len(ls.starts) >= 2
        assert summary.exit_code == 0 and summary.failed == {} and summary.rounds >= 2
        assert summary.created + summary.updated >= 40
        _assert_exactly_once(sdk, summary.project_id, store)
    # the store knows what landed, whatever URL reaches the project
    again = push(store, spec_of(store), options(ls.url, "server restarts"), api_key=TOKEN)
    assert (again.created, again.updated, again.unchanged) == (0, 0, 40)


def test_injected_5xx_and_timeouts_lose_nothing_and_duplicate_nothing(ls, sdk, tmp_path) -> None:
    folder = ls.document_root / "faults"
    many_images(folder, 40)
    Pipeline.from_dict(center_pipeline()).run(input=str(folder), output=str(tmp_path / "out"))
    store = Store(tmp_path / "out")
    modes = ["502-after", "hang-after", "503", "drop-after"]
    writes = []
    storage_faulted: list[int] = []

    def fault(n: int, method: str, path: str) -> str | None:
        if method == "GET":
            return "503" if n % 4 == 0 else None
        if method == "POST" and path.split("?")[0] == "/api/storages/localfiles/" and not storage_faulted:
            storage_faulted.append(n)
            return "502-after"  # the storage is made, the answer lost: listed again, not made twice
        writes.append(n)  # every third of the first 24 writes fails, each way in turn
        k = len(writes)
        return modes[(k // 3) % len(modes)] if k % 3 == 1 and k <= 24 else None

    with FaultProxy(ls.url, fault=fault, hang=3.0) as proxy:
        summary = push(store, spec_of(store), options(proxy.url, "injected faults", batch_size=4, timeout=1.5),
                       api_key=TOKEN)
        assert summary.exit_code == 0 and summary.failed == {} and summary.retries > 0
        _assert_exactly_once(sdk, summary.project_id, store)
        storage_posts = [what for _, method, path, what in proxy.log
                         if method == "POST" and path.split("?")[0] == "/api/storages/localfiles/"]
        assert storage_posts == ["502-after"]  # not repeated blindly ...
        assert len(list(sdk.import_storage.local.list(project=summary.project_id))) == 1  # ... and made once
        hit = {what for _, _, _, what in proxy.log if what}
        assert hit == {"502-after", "hang-after", "503", "drop-after"}

        # a newer run: every prediction replaced, under the same faults
        store.close()
        Pipeline.from_dict(center_pipeline("dog")).run(input=str(folder), output=str(tmp_path / "out"))
        store = Store(tmp_path / "out")
        writes.clear()
        newer = push(store, spec_of(store), options(proxy.url, "injected faults", batch_size=4, timeout=1.5),
                     api_key=TOKEN)
    assert newer.exit_code == 0 and newer.failed == {}
    _assert_exactly_once(sdk, summary.project_id, store)
    labels = {r["value"]["rectanglelabels"][0] for p in sdk.predictions.list(project=summary.project_id)
              for r in p.result}
    assert labels == {"dog"}


def test_a_server_gone_for_good_is_reported_and_the_next_push_resumes(ls, sdk, tmp_path, monkeypatch, capsys) -> None:
    folder = ls.document_root / "gone"
    many_images(folder, 32)
    Pipeline.from_dict(center_pipeline()).run(input=str(folder), output=str(tmp_path / "out"))
    imports = []

    def after(n: int, method: str, path: str) -> None:
        if method == "POST" and "/import" in path:
            imports.append(n)
            if len(imports) == 2:
                ls.stop()

    monkeypatch.setenv("LABEL_STUDIO_API_KEY", TOKEN)
    try:
        with FaultProxy(ls.url, after=after) as proxy:
            code = main(["push", str(tmp_path / "out"), "--url", proxy.url, "--project", "server gone",
                         "--batch-size", "4", "--retry-for", "2", "--no-progress"])
    finally:
        ls.start()
    err = capsys.readouterr().err
    assert code == 3
    assert "push stopped:" in err and "24 NOT pushed" in err and "run the same command again" in err
    lines = [line for line in err.splitlines() if line.startswith("autolabel: not pushed: ")]
    assert len(lines) == 20 and lines[0].endswith(": not confirmed before the server stopped answering")
    assert "autolabel: ... and 4 more not pushed" in err.splitlines()
    code = main(["push", str(tmp_path / "out"), "--url", ls.url, "--project", "server gone"])  # with its bar
    assert code == 0
    err = capsys.readouterr().err
    assert "ok: 24 tasks created, 0 predictions replaced, 8 unchanged of 32 images" in err
    assert "push round 1: 100%" in err  # the progress bar, on stderr
    project = next(p for p in sdk.projects.list() if p.title == "server gone")
    _assert_exactly_once(sdk, project.id, Store(tmp_path / "out"))


def test_a_server_gone_between_rounds_is_reported_and_the_next_push_finds_what_landed(ls, sdk, tmp_path) -> None:
    folder = ls.document_root / "between"
    many_images(folder, 4)
    Pipeline.from_dict(center_pipeline()).run(input=str(folder), output=str(tmp_path / "out"))
    store = Store(tmp_path / "out")

    def fault(n: int, method: str, path: str) -> str | None:  # the one import: done, then no answer ...
        return "drop-after" if method == "POST" and "/import" in path else None

    def after(n: int, method: str, path: str) -> None:  # ... and the server gone before the next listing
        if method == "POST" and "/import" in path:
            ls.stop()

    try:
        with FaultProxy(ls.url, fault=fault, after=after) as proxy:
            summary = push(store, spec_of(store), options(proxy.url, "gone between rounds", retry_for=1),
                           api_key=TOKEN)
    finally:
        ls.start()
    assert summary.rounds == 2 and summary.exit_code == 3 and summary.created == 0
    assert summary.error.startswith(f"{proxy.url}: list tasks: no success after ")
    assert summary.failed == {f"img{i:03d}.png": "not confirmed before the server stopped answering" for i in range(4)}
    again = push(store, spec_of(store), options(ls.url, "gone between rounds"), api_key=TOKEN)
    assert (again.created, again.updated, again.failed) == (0, 4, {})  # landed unrecorded: replaced, not doubled
    _assert_exactly_once(sdk, again.project_id, store)


def test_a_storage_made_by_hand_is_reused_and_moved_images_are_re_pointed(ls, sdk, images, tmp_path) -> None:
    store = label(images, tmp_path / "out")
    project = sdk.projects.create(title="storage by hand", label_config=labeling_config(spec_of(store).ontology))
    sdk.import_storage.local.create(project=project.id, path=f"{images}/", title="made in the UI",
                                    use_blob_urls=False)

    def no_list(n: int, method: str, path: str) -> str | None:
        return "503" if method == "GET" and path.startswith("/api/storages/localfiles") else None

    with FaultProxy(ls.url, fault=no_list) as proxy:  # a failing request is named in the push's error
        failed = push(store, spec_of(store), options(proxy.url, str(project.id), retry_for=0), api_key=TOKEN)
    assert failed.error == (f"{proxy.url}: list storages: no success after 1 tries in 0 s (HTTP 503: injected 503); "
                            "is Label Studio running? (raise --retry-for to wait longer)")
    first = push(store, spec_of(store), options(ls.url, str(project.id)), api_key=TOKEN)
    assert first.created == 4
    assert [s.title for s in sdk.import_storage.local.list(project=project.id)] == ["made in the UI"]
    cdn = "https://cdn.example.com/photos/"  # the images now served elsewhere
    moved = push(store, spec_of(store), options(ls.url, str(project.id), images="url", image_root=cdn),
                 api_key=TOKEN)
    assert (moved.created, moved.updated, moved.unchanged, moved.retargeted) == (0, 0, 4, 4)
    assert sorted(t.data["image"] for t in sdk.tasks.list(project=project.id)) == sorted(
        cdn + quote(rel) for rel in ("rotated.jpg", "square.png", "sub/tall.png", "wide.png"))
    assert sorted(n for tasks in snapshot(sdk, project.id).values() for _, n in tasks) == [1, 1, 1, 1]


def test_a_storage_of_a_folder_above_the_images_serves_them_and_none_is_added(ls, sdk, images, tmp_path) -> None:
    nested = images / "2026" / "batch"
    shutil.copytree(images, nested, ignore=shutil.ignore_patterns("2026"))
    store = label(nested, tmp_path / "out")
    project = sdk.projects.create(title="storage above", label_config=labeling_config(spec_of(store).ontology))
    sdk.import_storage.local.create(project=project.id, path=str(images), title="the whole root",
                                    use_blob_urls=False)
    assert push(store, spec_of(store), options(ls.url, str(project.id)), api_key=TOKEN).created == 4
    assert [s.title for s in sdk.import_storage.local.list(project=project.id)] == ["the whole root"]


def test_a_document_root_the_server_does_not_have_is_one_line(ls, images, tmp_path) -> None:
    store = label(images, tmp_path / "out")
    wrong = ls.document_root.parent  # the images are below it too, but the server serves from its own root
    with pytest.raises(AutolabelError) as err:
        push(store, spec_of(store), options(ls.url, "wrong root", document_root=str(wrong)), api_key=TOKEN)
    reference = f"/data/local-files/?d=files/{quote(images.name)}/rotated.jpg"
    assert str(err.value) == (
        f"rotated.jpg: Label Studio cannot serve {reference} (404); start Label Studio with "
        "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true and LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT set to a folder "
        f"above the images (and the server must see the images at {images / 'rotated.jpg'}), or push with --images "
        "upload")


# -- keys, pipeline files, uploads ---------------------------------------------------------------------------------
def test_personal_access_token_works_and_no_key_is_ever_printed(ls, sdk, images, tmp_path, monkeypatch, capsys) -> None:
    label(images, tmp_path / "out").close()
    pat = sdk.tokens.create().token
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", pat)
    assert main(["push", str(tmp_path / "out"), "--url", ls.url, "--project", "token check", "--no-progress"]) == 0
    out = capsys.readouterr()
    assert pat not in out.err + out.out and "4 tasks created" in out.err

    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "0000-not-a-valid-key-0000")
    assert main(["push", str(tmp_path / "out"), "--url", ls.url, "--project", "token check", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "refused the API key (401" in err and "0000-not-a-valid-key-0000" not in err
    assert len(err.strip().splitlines()) == 1


def test_a_pipeline_file_pushes_at_the_end_of_the_run(ls, sdk, images, tmp_path, monkeypatch) -> None:
    import yaml

    pipeline = export_pipeline(push={"url": ls.url, "project": "pushed by the run"})
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(pipeline))
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", TOKEN)
    code = main(["run", str(tmp_path / "p.yaml"), "-i", str(images), "-o", str(tmp_path / "out"), "--no-progress"])
    assert code == 0
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    project = next(p for p in sdk.projects.list() if p.title == "pushed by the run")
    assert any(e.startswith("labelstudio push ok: 4 tasks created") and f"{ls.url}/projects/{project.id} " in e
               for e in run["exports"])
    _assert_exactly_once(sdk, project.id, Store(tmp_path / "out"))


def test_upload_mode_uploads_each_image_once(ls, sdk, tmp_path, capsys) -> None:
    folder = tmp_path / "elsewhere"  # not under the document root: only an upload reaches it
    make_export_images(folder)
    Image.new("RGB", (20, 20), (9, 9, 9)).save(folder / "vanished.png")
    store = label(folder, tmp_path / "out")
    (folder / "vanished.png").unlink()  # labeled, then deleted: it cannot be uploaded
    with pytest.raises(AutolabelError) as err:
        push(store, spec_of(store), options(ls.url, "uploaded images"), api_key=TOKEN)
    assert str(err.value) == (
        f"rotated.jpg: its input folder {folder} is not below Label Studio's local-files document root "
        f"{ls.document_root}: start Label Studio with LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true and "
        f"LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT set to a folder above the images (a parent of {folder}), "
        "or push with --images upload")
    capsys.readouterr()
    first = push(store, spec_of(store), options(ls.url, "uploaded images", images="upload"), api_key=TOKEN,
                 progress=True)
    assert first.created == 4 and list(first.failed) == ["vanished.png"] and first.exit_code == 3
    assert re.search(r"uploading: +80%\|.*\| 4/5 ", capsys.readouterr().err)  # the bar: 4 of 5 uploaded
    why = first.failed["vanished.png"]
    assert why.startswith(f"cannot read {folder / 'vanished.png'} (No such file or directory")
    tasks = list(sdk.tasks.list(project=first.project_id))
    for t in tasks:
        assert t.data["image"].startswith(f"/data/upload/{first.project_id}/")
        assert _get(ls.url, t.data["image"]) == (folder / t.data["rel_path"]).read_bytes()
    uploads = store._conn.execute("SELECT COUNT(*) FROM ls_uploads").fetchone()[0]
    again = push(store, spec_of(store), options(ls.url, "uploaded images", images="upload"), api_key=TOKEN)
    assert (again.created, again.unchanged, list(again.failed)) == (0, 4, ["vanished.png"])
    assert store._conn.execute("SELECT COUNT(*) FROM ls_uploads").fetchone()[0] == uploads == 4


def _get(url: str, path: str) -> bytes:
    import urllib.request

    request = urllib.request.Request(url + path, headers={"Authorization": f"Token {TOKEN}"})
    with urllib.request.urlopen(request, timeout=30) as r:
        return r.read()
