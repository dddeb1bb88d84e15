"""Label Studio exports, checked by label-studio-sdk: LabelInterface validation and its Converter to COCO/YOLO."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from label_studio_sdk.converter import Converter
from label_studio_sdk.converter.brush import decode_rle
from label_studio_sdk.label_interface import LabelInterface
from plugins import export_pipeline, make_export_images

from autolabel import Pipeline
from autolabel.config import ExportSpec, parse
from autolabel.errors import AutolabelError
from autolabel.exports import labelstudio, write_export
from autolabel.exports.rows import Annotation, ImageRow
from autolabel.store import Store

SIZES = {"rotated.jpg": (40, 80), "square.png": (64, 64), "sub/tall.png": (30, 50), "wide.png": (96, 48)}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ls")
    make_export_images(root / "in")
    Pipeline.from_dict(export_pipeline()).run(input=root / "in", output=root / "out")
    return root / "out"


def export(out: Path, **options: object) -> tuple[list[dict], str]:
    with Store(out) as store:
        paths = write_export(store, parse(export_pipeline()), ExportSpec(format="labelstudio", **options), out)
    return json.loads(Path(paths[0]).read_text()), Path(paths[1]).read_text()


def by_name(tasks: list[dict]) -> dict[str, dict]:
    return {t["data"]["rel_path"]: t for t in tasks}


def test_every_prediction_validates_against_the_config(run: Path) -> None:
    tasks, config = export(run)
    interface = LabelInterface(config)
    assert len(tasks) == len(SIZES)
    for t in tasks:
        (prediction,) = t["predictions"]
        assert interface.validate_prediction(prediction, return_errors=True) == []
        assert prediction["model_version"] == "export-test"  # the pipeline's name


def objects(result: list[dict]) -> list[dict]:
    """The labeled regions of a result (one per object), in order."""
    return [r for r in result if r["type"].endswith("labels")]


def test_one_region_per_object_in_percent_of_the_displayed_size(run: Path) -> None:
    tasks = by_name(export(run)[0])
    for name, (w, h) in SIZES.items():
        result = tasks[name]["predictions"][0]["result"]
        regions = objects(result)  # the centre box; RichLabels' masked cat, polygon dog and OCR box
        assert [(r["type"], r["value"][r["type"]]) for r in regions] == [
            ("rectanglelabels", ["cat"]), ("brushlabels", ["cat"]), ("polygonlabels", ["dog"]),
            ("rectanglelabels", ["text"])]
        center = regions[0]
        assert (center["original_width"], center["original_height"]) == (w, h)
        assert center["value"] | {} == {"x": 25.0, "y": 25.0, "width": 50.0, "height": 50.0, "rotation": 0,
                                        "rectanglelabels": ["cat"]}
        assert [r.get("score") for r in regions] == [pytest.approx(s) for s in (center["score"], 0.9, 0.6, 0.8)]
        triangle = [[100 * (w * k // 8) / w, 100 * (h * m // 8) / h] for k, m in ((4, 1), (7, 7), (1, 7))]
        np.testing.assert_allclose(regions[2]["value"]["points"], triangle, atol=1e-4)
        text = regions[3]["value"]
        assert (text["x"], text["y"]) == (pytest.approx(100 * (w // 8) / w, abs=1e-4),
                                          pytest.approx(100 * (h // 2) / h, abs=1e-4))


def test_ocr_text_and_review_marker_share_the_region_id(run: Path) -> None:
    result = by_name(export(run)[0])["square.png"]["predictions"][0]["result"]
    by_id: dict[str, list[dict]] = {}
    for region in result:
        by_id.setdefault(region["id"], []).append(region)
    text_box = [r for r in result if r.get("value", {}).get("rectanglelabels") == ["text"]][0]
    assert [(r["from_name"], r["value"].get("text")) for r in by_id[text_box["id"]]] == [
        ("label", None), ("transcription", ["HELLO"])
    ]
    dog = [r for r in result if r.get("value", {}).get("polygonlabels") == ["dog"]][0]
    assert [(r["from_name"], r["type"]) for r in by_id[dog["id"]]] == [("polygon", "polygonlabels"),
                                                                        ("review", "textarea")]
    review = by_id[dog["id"]][1]
    assert review["value"] == {"points": dog["value"]["points"], "closed": True, "text": ["flagged: test_flag"]}
    assert len([r for r in result if r["from_name"] == "review"]) == 1  # only the flagged box
    captions = [r["value"]["text"] for r in result if r["from_name"] == "caption"]
    assert captions == [["a test image of 64x64 pixels"]]
    assert [r["value"]["text"] for r in result if r["from_name"] == "ocr"] == [["HELLO"]]


def test_brush_rle_decodes_to_the_mask(run: Path) -> None:
    tasks = by_name(export(run)[0])
    for name, (w, h) in SIZES.items():
        brushes = [r for r in tasks[name]["predictions"][0]["result"] if r["type"] == "brushlabels"]
        assert len(brushes) == 1 and brushes[0]["value"]["brushlabels"] == ["cat"]
        decoded = decode_rle(brushes[0]["value"]["rle"]).reshape(h, w, 4)[:, :, 3] > 0
        truth = np.zeros((h, w), bool)
        truth[h // 8 : h * 3 // 8, w // 8 : w * 3 // 8] = True
        truth[h * 5 // 8 : h * 7 // 8, w * 5 // 8 : w * 7 // 8] = True
        assert np.array_equal(decoded, truth)


def test_masks_as_polygons_one_region_per_object(run: Path) -> None:
    from autolabel.geometry import join_parts, mask_polygons

    tasks, config = export(run, path="poly.json", masks="polygon")
    result = by_name(tasks)["square.png"]["predictions"][0]["result"]
    polygons = [r for r in result if r["type"] == "polygonlabels"]
    assert [r["value"]["polygonlabels"] for r in polygons] == [["cat"], ["dog"]]  # two-part mask: one polygon
    assert not [r for r in result if r["type"] == "brushlabels"]
    truth = np.zeros((64, 64), bool)
    truth[8:24, 8:24] = truth[40:56, 40:56] = True
    # the two parts' outlines joined by a zero-width bridge (the YOLO export's one polygon per object)
    np.testing.assert_allclose(polygons[0]["value"]["points"], join_parts(mask_polygons(truth)) * 100 / 64,
                               atol=1e-4)
    interface = LabelInterface(config)
    assert all(interface.validate_prediction(t["predictions"][0]) for t in tasks)


def test_task_score_puts_the_least_certain_first(run: Path) -> None:
    tasks = export(run)[0]
    for t in tasks:
        scores = [r["score"] for r in t["predictions"][0]["result"] if "score" in r]
        assert t["predictions"][0]["score"] == min(scores)
    means = export(run, path="mean.json", task_score="mean")[0]
    for t in means:
        scored = [r["score"] for r in objects(t["predictions"][0]["result"])]
        assert len(scored) == 4 and t["predictions"][0]["score"] == pytest.approx(np.mean(scored), abs=1e-5)


def test_task_score_definition() -> None:
    def ann(score: float | None) -> Annotation:
        return Annotation(0, 0, "a", (0, 0, 1, 1), score, "kept", "", "", "", "s")

    assert labelstudio.task_score([ann(0.9), ann(0.2), ann(None)], "min") == 0.2
    assert labelstudio.task_score([ann(0.9), ann(0.2)], "mean") == 0.55
    assert labelstudio.task_score([ann(None)], "min") is None
    row = ImageRow(1, "/x/a.jpg", "a.jpg", None, 10, 10, [], [], {})
    assert "score" not in labelstudio.task(row)["predictions"][0]


@pytest.mark.parametrize(
    ("root", "expected"),
    [
        ("/data/local-files/?d=", "/data/local-files/?d=sub/tall.png"),
        ("/data/local-files/?d=photos/", "/data/local-files/?d=photos/sub/tall.png"),
        ("https://cdn.example.com/imgs", "https://cdn.example.com/imgs/sub/tall.png"),
        ("s3://bucket/prefix", "s3://bucket/prefix/sub/tall.png"),
    ],
)
def test_image_root(run: Path, root: str, expected: str) -> None:
    tasks = by_name(export(run, path="roots.json", image_root=root)[0])
    assert tasks["sub/tall.png"]["data"]["image"] == expected


def test_converter_to_coco_and_yolo_accepts_the_tasks(
    run: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tasks, config = export(run)
    for i, t in enumerate(tasks):  # the Converter reads annotations only
        t["id"] = i + 1
        t["annotations"] = [{"result": t["predictions"][0]["result"]}]
    source = tmp_path / "tasks.json"
    source.write_text(json.dumps(tasks))
    converter = Converter(config, project_dir=str(tmp_path), download_resources=False)
    with caplog.at_level(logging.ERROR):
        converter.convert(str(source), str(tmp_path / "coco"), "COCO", is_dir=False)
        converter.convert(str(source), str(tmp_path / "yolo"), "YOLO", is_dir=False)
        (tmp_path / "png").mkdir()
        converter.convert(str(source), str(tmp_path / "png"), "BRUSH_TO_PNG", is_dir=False)
    coco = json.loads((tmp_path / "coco" / "result.json").read_text())
    assert len(coco["images"]) == len(SIZES)
    names = {c["id"]: c["name"] for c in coco["categories"]}
    assert sorted(names.values()) == ["cat", "dog", "text"]
    # per image 4 objects, each counted once: 2 rectangles and the dog's polygon in COCO (brush and text areas are
    # not COCO's business), the masked cat as the one brush PNG
    assert len(coco["annotations"]) == 3 * len(SIZES)
    assert len(list((tmp_path / "png").glob("*.png"))) == len(SIZES)
    square = next(i["id"] for i in coco["images"] if i["file_name"].endswith("square.png"))
    boxes = [a["bbox"] for a in coco["annotations"] if a["image_id"] == square]
    np.testing.assert_allclose(sorted(boxes), [[8, 8, 48, 48], [8, 32, 24, 8], [16, 16, 32, 32]], atol=1e-4)
    labels = sorted(os.listdir(tmp_path / "yolo" / "labels"))
    assert len(labels) == len(SIZES)
    lines = [ln.split() for f in labels for ln in (tmp_path / "yolo" / "labels" / f).read_text().splitlines()]
    assert len(lines) == 3 * len(SIZES) and all(0 <= float(v) <= 1 for ln in lines for v in ln[1:])
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_an_invalid_prediction_is_refused_before_writing(run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = labelstudio.labeling_config
    monkeypatch.setattr(
        labelstudio, "labeling_config", lambda ontology: real(ontology).replace('<Label value="dog"/>', "")
    )
    with pytest.raises(AutolabelError, match="Label Studio would reject the prediction"):
        export(run, path="bad.json")
    assert not (run / "bad.json").exists() and not (run / "bad_config.xml").exists()


def test_dropped_boxes_are_not_exported(run: Path) -> None:
    tasks = export(run)[0]
    for t in tasks:
        n = t["data"]["autolabel_id"]
        ids = [r["id"] for r in objects(t["predictions"][0]["result"])]
        assert ids == [f"{n}_0", f"{n}_1", f"{n}_2", f"{n}_3"]  # box 4 (RichLabels' last) was dropped


# --- tasks built one by one, and the writer's defaults --------------------------------------------------------------

def coco_rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    coded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": coded["size"], "counts": coded["counts"].decode()}


def two_squares() -> np.ndarray:
    mask = np.zeros((10, 20), bool)
    mask[1:4, 2:6] = True
    mask[6:9, 12:18] = True
    return mask


def hand_row() -> ImageRow:
    """An image of 20x10 with a masked box, a flagged box without a reason code, a quad with OCR text, and texts."""
    masked = Annotation(0, 0, "cat", (2.0, 1.0, 18.0, 9.0), 0.8, "kept", "", "", "cat", "s",
                        rle=coco_rle(two_squares()))
    flagged = Annotation(1, 1, "dog", (-0.0, 0.0, 5.0, 5.0), 0.4, "flagged", "", "", "dog", "s")
    quad = Annotation(3, 2, "text", (10.0, 0.0, 20.0, 2.5), None, "kept", "", "EXIT", "text", "s",
                      polygon=[[10.0, 0.0], [20.0, 0.0], [20.0, 2.5], [10.0, 2.5]])
    texts = [{"kind": "caption", "text": "two cats"}, {"kind": "detailed_caption", "text": "two grey cats"},
             {"kind": "ocr", "text": "EXIT"}]
    return ImageRow(9, "/in/a b#1.png", "d/a b#1.png", None, 20, 10, [masked, flagged, quad], texts, {})


def test_task_defaults_and_every_region_of_a_hand_made_row() -> None:
    row = hand_row()
    made = labelstudio.task(row)
    assert made == labelstudio.task(row, "/data/local-files/?d=", "autolabel", "min", "brush",
                                    labelstudio.Layout())
    assert made["data"] == {"image": "/data/local-files/?d=d/a%20b%231.png", "autolabel_id": 9,
                            "rel_path": "d/a b#1.png"}
    (prediction,) = made["predictions"]
    assert prediction["model_version"] == "autolabel" and prediction["score"] == 0.4  # the lowest box score
    result = prediction["result"]
    assert [(r["id"], r["from_name"], r["type"]) for r in result] == [
        ("9_0", "mask", "brushlabels"),
        ("9_1", "label", "rectanglelabels"), ("9_1", "review", "textarea"),
        ("9_3", "polygon", "polygonlabels"), ("9_3", "transcription", "textarea"),
        ("9_caption", "caption", "textarea"), ("9_ocr", "ocr", "textarea"),
    ]
    common = {"to_name": "image", "original_width": 20, "original_height": 10, "image_rotation": 0}
    for region in result[:5]:  # the objects' regions; the image-level text areas name only their image
        assert {k: region[k] for k in common} == common
    assert all(r["to_name"] == "image" and "original_width" not in r for r in result[5:])
    brush = decode_rle(result[0]["value"]["rle"]).reshape(10, 20, 4)[:, :, 3] > 0
    assert np.array_equal(brush, two_squares()) and result[0]["value"]["format"] == "rle"
    assert result[0]["value"]["brushlabels"] == ["cat"] and result[0]["score"] == 0.8
    assert result[1]["value"] == {"x": 0.0, "y": 0.0, "width": 25.0, "height": 50.0, "rotation": 0,
                                  "rectanglelabels": ["dog"]}
    assert result[2]["value"] == {"x": 0.0, "y": 0.0, "width": 25.0, "height": 50.0, "rotation": 0,
                                  "text": ["flagged"]}  # flagged with no reason code
    quad = {"points": [[50.0, 0.0], [100.0, 0.0], [100.0, 25.0], [50.0, 25.0]], "closed": True}
    assert result[3]["value"] == quad | {"polygonlabels": ["text"]} and "score" not in result[3]  # unknown: none
    assert result[4]["value"] == quad | {"text": ["EXIT"]}  # the text on its polygon's id and shape
    assert result[5]["value"] == {"text": ["two cats", "two grey cats"]} and result[6]["value"] == {"text": ["EXIT"]}
    assert LabelInterface(labelstudio.labeling_config(parse(export_pipeline()).ontology)).validate_prediction(
        prediction, return_errors=True) == []


def test_masks_option_polygon_and_none() -> None:
    row = hand_row()
    (polygon,) = [r for r in labelstudio.task(row, masks="polygon")["predictions"][0]["result"] if r["id"] == "9_0"]
    assert (polygon["type"], polygon["from_name"], polygon["score"]) == ("polygonlabels", "polygon", 0.8)
    # the larger part first, then a zero-width bridge to the other and back: one polygon for the two-part mask
    assert polygon["value"] == {"points": [[62.5, 65.0], [62.5, 85.0], [87.5, 85.0], [87.5, 65.0], [62.5, 65.0],
                                           [27.5, 35.0], [27.5, 15.0], [12.5, 15.0], [12.5, 35.0], [27.5, 35.0]],
                                "closed": True, "polygonlabels": ["cat"]}
    plain = labelstudio.task(row, masks="none")["predictions"][0]["result"]
    (box,) = [r for r in plain if r["id"] == "9_0"]
    assert box["type"] == "rectanglelabels" and box["value"]["width"] == 80.0 and len(plain) == 7
    empty = hand_row().annotations[0]._replace(rle=coco_rle(np.zeros((10, 20), bool)))
    assert [r["type"] for r in labelstudio.regions(empty, row)] == ["rectanglelabels"]  # an empty mask: its box


def test_task_score_mean_and_percentages_clamped() -> None:
    row = hand_row()
    assert labelstudio.task(row, score="mean")["predictions"][0]["score"] == 0.6
    assert labelstudio.task_score(row.annotations) == 0.4
    assert labelstudio.task_score([row.annotations[0], row.annotations[0]._replace(score=1 / 3)], "mean") == 0.56667
    assert labelstudio._pct(-1.0, 20) == 0.0 and labelstudio._pct(25.0, 20) == 100.0
    assert labelstudio._pct(1.0, 3) == 33.3333


def test_a_rejected_prediction_names_the_image_and_the_problem() -> None:
    checker = labelstudio.PredictionChecker(labelstudio.labeling_config(parse(export_pipeline()).ontology))
    task = labelstudio.task(hand_row())
    checker.check(task)
    task["predictions"][0]["result"][0]["value"]["brushlabels"] = ["horse"]
    with pytest.raises(AutolabelError) as err:
        checker.check(task)
    message = str(err.value)
    assert message.startswith("d/a b#1.png: Label Studio would reject the prediction: ")
    assert message.endswith(" (1 problem(s)); please report this") and "\n" not in message


def test_writer_defaults(run: Path) -> None:
    """Called with no options: local files, model version ``autolabel``, lowest score first, brush masks, every
    score and flagged box; the config beside the tasks."""
    ontology = parse(export_pipeline()).ontology
    with Store(run) as store:
        paths = labelstudio.write_labelstudio(store, ontology, run / "dflt_tasks.json")
        labelstudio.write_labelstudio(store, ontology, run / "expl_tasks.json", "/data/local-files/?d=", "autolabel",
                                      "min", "brush", 0.0, True)
    assert paths == [str(run / "dflt_tasks.json"), str(run / "dflt_config.xml")]
    assert (run / "dflt_tasks.json").read_bytes() == (run / "expl_tasks.json").read_bytes()
    assert (run / "dflt_config.xml").read_text() == labelstudio.labeling_config(ontology)
    tasks = json.loads((run / "dflt_tasks.json").read_text())
    for t in tasks:
        (prediction,) = t["predictions"]
        assert prediction["model_version"] == "autolabel"
        assert t["data"]["image"] == "/data/local-files/?d=" + t["data"]["rel_path"]
        assert prediction["score"] == min(r["score"] for r in prediction["result"] if "score" in r)
        assert [r for r in prediction["result"] if r["from_name"] == "review"]  # the flagged dog is in
        assert [r for r in prediction["result"] if r["type"] == "brushlabels"]
    assert labelstudio.config_path_for(Path("/o/x.json")) == Path("/o/x_config.xml")


def test_labeling_config_quotes_class_names() -> None:
    from autolabel.ontology import Ontology

    ontology = Ontology.from_config(['big "red" car', "R&D"])
    config = labelstudio.labeling_config(ontology)
    interface = LabelInterface(config)
    assert set(interface.get_control("label").labels) == {'big "red" car', "R&D"}
    row = ImageRow(1, "/a.png", "a.png", None, 10, 10, [Annotation(0, 1, "R&D", (0, 0, 5, 5), 0.5, "kept", "", "", "",
                                                                   "s")], [], {})
    assert interface.validate_prediction(labelstudio.task(row)["predictions"][0], return_errors=True) == []


def test_write_export_defaults_and_the_model_version_it_picks(run: Path) -> None:
    """Default file names, ``flagged``/``min_score`` passed through, and the model version: the option, else the
    pipeline's name, else ``autolabel-<pipeline hash>`` (annotators see only predictions of the project's version)."""
    unnamed = parse({k: v for k, v in export_pipeline().items() if k != "name"})
    with Store(run) as store:
        paths = write_export(store, unnamed, ExportSpec(format="labelstudio"), run)
        assert paths == [str(run / "labelstudio_tasks.json"), str(run / "labelstudio_config.xml")]
        tasks = json.loads(Path(paths[0]).read_text())
        assert {t["predictions"][0]["model_version"] for t in tasks} == {f"autolabel-{unnamed.hash}"}
        mine = write_export(store, parse(export_pipeline()), ExportSpec(format="labelstudio", path="v.json",
                                                                         model_version="v9", flagged="exclude",
                                                                         min_score=0.85), run)
    tasks = json.loads(Path(mine[0]).read_text())
    for t in tasks:
        result = t["predictions"][0]["result"]
        assert t["predictions"][0]["model_version"] == "v9"
        assert [(r["type"], r["value"][r["type"]]) for r in objects(result)] == [("brushlabels", ["cat"])]
        assert not [r for r in result if r["from_name"] == "review"]


@pytest.mark.parametrize("root,expected", [
    ("https://host/data", "https://host/data/a%20b/c%23.jpg"),
    ("/data/local-files/?d=", "/data/local-files/?d=a%20b/c%23.jpg"),
    ("s3://bucket/pre/", "s3://bucket/pre/a b/c#.jpg"),  # a cloud object key is kept as it is
    ("gs://bucket", "gs://bucket/a b/c#.jpg"),
])
def test_image_references_quote_urls_and_keep_cloud_keys(root: str, expected: str) -> None:
    from autolabel.exports.labelstudio import image_reference

    assert image_reference("a b/c#.jpg", root) == expected
