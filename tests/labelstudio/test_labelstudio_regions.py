"""One Label Studio region per object, of a kind the labeling config offers (docs/reference/labelstudio-regions.md).

Every config here is checked by label-studio-sdk itself: ``LabelInterface.validate_prediction`` for the tasks, its
``Converter`` for how many objects Label Studio's own exports count.
"""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from label_studio_sdk.converter import Converter
from label_studio_sdk.converter.brush import decode_rle as decode_brush
from label_studio_sdk.label_interface import LabelInterface

from autolabel.errors import AutolabelError
from autolabel.exports import labelstudio
from autolabel.geometry import decode_rle, polygons_to_rle
from autolabel.exports.labelstudio import Layout, labeling_config, omitted, region_kind, regions, task
from autolabel.exports.rows import Annotation, ImageRow
from autolabel.ontology import Ontology

W, H = 40, 20
CLASSES = ["cat", "sign"]
TAGS = {"r": ("RectangleLabels", "boxes"), "p": ("PolygonLabels", "outlines"), "b": ("BrushLabels", "paint")}
#: every non-empty set of region kinds a config may offer ("r"ectangle, "p"olygon, "b"rush)
OFFERS = ["".join(c) for n in (1, 2, 3) for c in combinations("rpb", n)]


def config(offers: str, texts: str = "") -> str:
    """A config of other names than ours, with the labels controls in ``offers`` and the text areas in ``texts``."""
    labels = "".join(f'<Label value="{c}"/>' for c in CLASSES)
    controls = "".join(f'<{TAGS[k][0]} name="{TAGS[k][1]}" toName="photo">{labels}</{TAGS[k][0]}>' for k in offers)
    per_region = {"transcription": "true", "review": "true", "caption": "false", "ocr": "false"}
    areas = "".join(f'<TextArea name="{n}" toName="photo" perRegion="{per_region[n]}"/>' for n in texts.split())
    return f'<View><Image name="photo" value="$image"/>{controls}{areas}</View>'


def two_parts() -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[2:8, 3:11] = True
    mask[12:18, 25:37] = True
    return mask


def rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    coded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": coded["size"], "counts": coded["counts"].decode()}


QUAD = [[20.0, 2.0], [38.0, 4.0], [36.0, 10.0], [18.0, 8.0]]


def objects() -> dict[str, Annotation]:
    """A masked object (two parts), an OCR quad with its text (flagged), a plain box."""
    return {
        "mask": Annotation(0, 0, "cat", (3.0, 2.0, 37.0, 18.0), 0.9, "kept", "", "", "cat", "s", rle=rle(two_parts())),
        "polygon": Annotation(1, 1, "sign", (18.0, 2.0, 38.0, 10.0), 0.7, "flagged", "tilted", "EXIT", "sign", "s",
                              polygon=QUAD),
        "box": Annotation(2, 0, "cat", (1.5, 4.0, 11.5, 14.0), None, "kept", "", "", "cat", "s"),
    }


def row(*anns: Annotation, texts: list[dict] | None = None) -> ImageRow:
    return ImageRow(5, "/in/a.png", "a.png", None, W, H, list(anns), texts or [], {})


# -- the layout of a config ---------------------------------------------------------------------------------------
def test_the_generated_configs_layout_is_the_default_one() -> None:
    assert Layout.of(labeling_config(Ontology.from_config(CLASSES))) == Layout() == labelstudio.DEFAULT_LAYOUT
    assert Layout() == Layout("image", "label", "polygon", "mask", "transcription", "review", "caption", "ocr")


def test_a_layout_takes_the_first_labels_control_of_each_tag_on_the_image_and_our_text_areas_by_name() -> None:
    xml = ('<View><Image name="other" value="$other"/><Image name="photo" value="$image"/>'
           '<RectangleLabels name="elsewhere" toName="other"><Label value="cat"/></RectangleLabels>'
           '<RectangleLabels name="first" toName="photo"><Label value="cat"/></RectangleLabels>'
           '<RectangleLabels name="second" toName="photo"><Label value="cat"/></RectangleLabels>'
           '<BrushLabels name="paint" toName="photo"><Label value="cat"/></BrushLabels>'
           '<TextArea name="transcription" toName="photo" perRegion="true"/>'
           '<TextArea name="review" toName="photo"/>'  # not per region: no place for a region's marker
           '<TextArea name="caption" toName="other"/>'  # another image's
           '<TextArea name="ocr" toName="photo" perRegion="false"/></View>')
    assert Layout.of(xml) == Layout("photo", "first", None, "paint", "transcription", None, None, "ocr")
    assert [Layout.of(xml).control(k) for k in ("rectangle", "polygon", "brush")] == ["first", None, "paint"]


def test_a_config_without_the_image_key_has_no_layout() -> None:
    with pytest.raises(AutolabelError, match=r'no <Image value="\$image">'):
        Layout.of('<View><Image name="photo" value="$picture"/></View>')


# -- the rule ---------------------------------------------------------------------------------------------------------
#: (what the object has, masks option) → the kind chosen under each offer, as the docs' table says
RULE = {
    ("mask", "brush"): {"r": "r", "p": "p", "b": "b", "rp": "p", "rb": "b", "pb": "b", "rpb": "b"},
    ("mask", "polygon"): {"r": "r", "p": "p", "b": "b", "rp": "p", "rb": "b", "pb": "p", "rpb": "p"},
    ("mask", "none"): {"r": "r", "p": "p", "b": "b", "rp": "r", "rb": "r", "pb": "p", "rpb": "r"},
    ("polygon", "brush"): {"r": "r", "p": "p", "b": "b", "rp": "p", "rb": "r", "pb": "p", "rpb": "p"},
    ("box", "brush"): {"r": "r", "p": "p", "b": "b", "rp": "r", "rb": "r", "pb": "p", "rpb": "r"},
}
NAMES = {"r": "rectangle", "p": "polygon", "b": "brush"}


@pytest.mark.parametrize("offers", OFFERS)
@pytest.mark.parametrize(("has", "masks"), list(RULE))
def test_each_object_is_one_region_of_the_first_kind_the_config_offers(offers: str, has: str, masks: str) -> None:
    ann = objects()[has]
    layout = Layout.of(config(offers, "transcription review"))
    kind = NAMES[RULE[has, masks][offers]]
    out = regions(ann, row(ann), masks, layout)
    labeled = [r for r in out if r["type"] != "textarea"]
    assert [(r["id"], r["type"], r["from_name"], r["to_name"]) for r in labeled] == [
        (f"5_{ann.index}", f"{kind}labels", TAGS[kind[0]][1], "photo")]
    assert labeled[0]["value"][f"{kind}labels"] == [ann.class_name]
    # its text and review marker on the same id and shape
    texts = [(r["from_name"], r["value"]) for r in out if r["type"] == "textarea"]
    shape = {k: v for k, v in labeled[0]["value"].items() if k != f"{kind}labels"}
    assert texts == ([("transcription", shape | {"text": ["EXIT"]}), ("review", shape | {"text": ["flagged: tilted"]})]
                     if has == "polygon" else [])
    assert region_kind(ann if masks != "none" else ann._replace(rle=None), masks, layout) == kind
    prediction = {"result": out, "score": 0.5}
    assert LabelInterface(config(offers, "transcription review")).validate_prediction(
        prediction, return_errors=True) == []


def test_masks_polygon_prefers_polygons_and_an_empty_mask_is_no_mask() -> None:
    ann = objects()["mask"]
    assert region_kind(ann, "polygon") == "polygon" and region_kind(ann, "brush") == "brush"
    assert region_kind(ann, "none") == "rectangle"  # the object is its box
    empty = ann._replace(rle=rle(np.zeros((H, W), bool)))
    assert region_kind(empty, "brush") == "rectangle"
    assert [r["type"] for r in regions(empty, row(empty), "polygon", Layout.of(config("pb")))] == ["polygonlabels"]


def test_a_config_with_no_labels_control_is_refused_in_one_line() -> None:
    layout = Layout(rectangle=None, polygon=None, brush=None)
    with pytest.raises(AutolabelError) as err:
        region_kind(objects()["box"], "brush", layout)
    assert str(err.value) == ("the labeling config has no RectangleLabels, PolygonLabels or BrushLabels on the image: "
                              "add one with the ontology's classes as labels")


# -- each kind drawn from what the object carries -------------------------------------------------------------------
def shape_of(has: str, offers: str, masks: str = "brush") -> dict:
    ann = objects()[has]
    return regions(ann, row(ann), masks, Layout.of(config(offers)))[0]["value"]


def brush_pixels(value: dict) -> np.ndarray:
    return decode_brush(value["rle"]).reshape(H, W, 4)[:, :, 3] > 0


def test_rectangles_are_the_objects_boxes_in_percent() -> None:
    for has in ("mask", "polygon", "box"):
        x1, y1, x2, y2 = objects()[has].xyxy
        assert shape_of(has, "r") == {"x": round(x1 / W * 100, 4), "y": round(y1 / H * 100, 4),
                                      "width": round((x2 - x1) / W * 100, 4), "height": round((y2 - y1) / H * 100, 4),
                                      "rotation": 0, "rectanglelabels": ["cat" if has != "polygon" else "sign"]}


def test_polygons_are_the_mask_outline_joined_else_the_quad_else_the_box_corners() -> None:
    from autolabel.geometry import join_parts, mask_polygons

    pct = np.array([100 / W, 100 / H])
    joined = join_parts(mask_polygons(two_parts()))  # the YOLO export's one polygon of a two-part mask
    np.testing.assert_allclose(shape_of("mask", "p")["points"], joined * pct, atol=1e-4)
    assert len(shape_of("mask", "p")["points"]) == 10 and shape_of("mask", "p")["closed"] is True
    np.testing.assert_allclose(shape_of("polygon", "p")["points"], np.array(QUAD) * pct, atol=1e-4)
    np.testing.assert_allclose(shape_of("box", "p")["points"],
                               np.array([[1.5, 4.0], [11.5, 4.0], [11.5, 14.0], [1.5, 14.0]]) * pct, atol=1e-4)


def test_brushes_are_the_mask_else_the_polygon_or_box_filled_as_coco_rasterises_them() -> None:
    assert np.array_equal(brush_pixels(shape_of("mask", "b")), two_parts())
    quad = decode_rle(polygons_to_rle([np.array(QUAD)], H, W))
    assert quad.sum() > 50 and np.array_equal(brush_pixels(shape_of("polygon", "b")), quad)
    box = np.zeros((H, W), bool)
    box[4:14, 2:12] = True  # the 10 x 10 pixels of the box [1.5, 11.5] x [4, 14]
    assert np.array_equal(brush_pixels(shape_of("box", "b")), box)
    assert shape_of("mask", "b")["format"] == "rle"


def test_with_masks_none_a_masked_polygon_is_its_polygon() -> None:
    ann = objects()["polygon"]._replace(rle=rle(two_parts()))
    out = regions(ann, row(ann), "none", Layout())
    assert out[0]["type"] == "polygonlabels"
    np.testing.assert_allclose(out[0]["value"]["points"], np.array(QUAD) * [100 / W, 100 / H], atol=1e-4)
    assert regions(ann, row(ann), "brush", Layout())[0]["type"] == "brushlabels"


# -- text areas a config may lack --------------------------------------------------------------------------------
def test_text_a_config_has_no_area_for_is_left_out_and_counted() -> None:
    anns = list(objects().values())
    texts = [{"kind": "caption", "text": "a cat"}, {"kind": "detailed_caption", "text": "a grey cat"},
             {"kind": "ocr", "text": "EXIT"}]
    image = row(*anns, texts=texts)
    full = task(image)["predictions"][0]["result"]
    assert [r["from_name"] for r in full if r["type"] == "textarea"] == ["transcription", "review", "caption", "ocr"]
    assert omitted(image) == {}
    bare = Layout.of(config("rpb"))
    assert [r["type"] for r in task(image, layout=bare)["predictions"][0]["result"]] == [
        "brushlabels", "polygonlabels", "rectanglelabels"]
    assert omitted(image, bare) == {"transcription": 1, "review": 1, "caption": 2, "ocr": 1}
    assert omitted(image, Layout.of(config("r", "caption review"))) == {"transcription": 1, "ocr": 1}
    some = task(image, layout=Layout.of(config("r", "caption ocr")))["predictions"][0]["result"]
    assert [(r["id"], r["from_name"], r["to_name"], r["value"]) for r in some if r["type"] == "textarea"] == [
        ("5_caption", "caption", "photo", {"text": ["a cat", "a grey cat"]}),
        ("5_ocr", "ocr", "photo", {"text": ["EXIT"]})]


# -- Label Studio's own converter counts each object once ----------------------------------------------------------
@pytest.mark.parametrize("offers", ["r", "p", "rp"])
def test_label_studios_converter_counts_each_object_once(offers: str, tmp_path: Path) -> None:
    anns = list(objects().values())
    xml = config(offers, "transcription review")
    tasks = []
    for n in range(3):
        made = task(ImageRow(n + 1, f"/in/{n}.png", f"{n}.png", None, W, H, anns, [], {}), layout=Layout.of(xml))
        made["id"] = n + 1
        made["annotations"] = [{"result": made["predictions"][0]["result"]}]  # the Converter reads annotations
        tasks.append(made)
    (tmp_path / "tasks.json").write_text(json.dumps(tasks))
    converter = Converter(xml, project_dir=str(tmp_path), download_resources=False)
    converter.convert(str(tmp_path / "tasks.json"), str(tmp_path / "coco"), "COCO", is_dir=False)
    coco = json.loads((tmp_path / "coco" / "result.json").read_text())
    assert len(coco["annotations"]) == 3 * len(anns)
    assert sorted({c["name"] for c in coco["categories"]}) == ["cat", "sign"]
