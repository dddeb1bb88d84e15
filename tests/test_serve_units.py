"""The pure parts of ``autolabel serve``: request shapes, region renaming, image references, host policy."""

from __future__ import annotations

import numpy as np
import pytest
from label_studio_sdk.converter.brush import decode_rle

from autolabel.serve.images import rel_path
from autolabel.serve.protocol import (
    Config,
    RequestError,
    adapt_regions,
    brush_label,
    brush_region,
    parse_predict,
    parse_prompt,
    task_refs,
)

CONFIG = """<View>
  <Image name="img" value="$photo"/>
  <RectangleLabels name="bbox" toName="img"><Label value="cat"/></RectangleLabels>
  <PolygonLabels name="poly" toName="img"><Label value="cat"/><Label value="dog"/></PolygonLabels>
  <BrushLabels name="seg" toName="img"><Label value="cat"/><Label value="dog"/></BrushLabels>
  <KeyPointLabels name="kp" toName="img" smart="true"><Label value="cat"/><Label value="dog"/></KeyPointLabels>
  <RectangleLabels name="box2" toName="img" smart="true"><Label value="cat"/></RectangleLabels>
  <TextArea name="transcription" toName="img" perRegion="true"/>
</View>"""


def region(rid: str, name: str, kind: str, label: str | None = None, **value: object) -> dict:
    v = dict(value) | ({kind: [label]} if label else {})
    return {"id": rid, "from_name": name, "to_name": "image", "type": kind, "value": v}


def test_config_finds_the_image_its_data_key_and_controls_by_tag() -> None:
    config = Config(CONFIG)
    assert (config.image, config.data_key) == ("img", "photo")
    assert config.control_for("BrushLabels").name == "seg"
    assert config.control_for("RectangleLabels").name == "bbox"  # the first one on the image
    assert config.control_for("EllipseLabels") is None


@pytest.mark.parametrize("xml, words", [
    ("", "no labeling config"), ("<View><Text name='t' value='$t'/></View>", "no <Image> tag"),
    ("<View", "cannot be parsed")])
def test_bad_configs_are_400s_that_say_what_to_do(xml: str, words: str) -> None:
    with pytest.raises(RequestError) as err:
        Config(xml)
    assert err.value.status == 400 and words in err.value.message


def test_predict_bodies_are_checked_for_shape() -> None:
    body = {"tasks": [{"id": 4, "data": {"photo": " /data/upload/1/a.png "}}], "project": "1.2", "label_config": CONFIG,
            "params": {"login": None, "password": None, "context": None}}
    request = parse_predict(body)
    assert (request.project, request.context, request.label_config) == ("1.2", None, CONFIG)
    (task,) = task_refs(request.tasks, Config(CONFIG))
    assert (task.id, task.image) == (4, "/data/upload/1/a.png")
    for bad, words in (([], "JSON object"), ({"tasks": {}}, "non-empty list"), ({"tasks": [3]}, "tasks[0]")):
        with pytest.raises(RequestError, match=words.replace("[", r"\[")):
            task_refs(parse_predict(bad).tasks, Config(CONFIG))
    with pytest.raises(RequestError, match="no image reference under data.photo"):
        task_refs([{"id": 1, "data": {"image": "a.png"}}], Config(CONFIG))


def test_smart_keypoints_and_rectangles_become_pixels() -> None:
    config = Config(CONFIG)
    context = {"result": [
        {"type": "keypointlabels", "from_name": "kp", "value": {"x": 10, "y": 50, "keypointlabels": ["dog"]},
         "is_positive": True},
        {"type": "keypointlabels", "from_name": "kp", "value": {"x": 90, "y": 25, "keypointlabels": ["dog"]},
         "is_positive": False},
        {"type": "rectanglelabels", "from_name": "box2", "value": {"x": 0, "y": 10, "width": 50, "height": 20,
                                                                   "rectanglelabels": ["dog"]}},
    ]}
    prompt = parse_prompt(context, config, width=200, height=100)
    assert prompt.points == [(20.0, 50.0), (180.0, 25.0)] and prompt.point_labels == [1, 0]
    assert prompt.box == (0.0, 10.0, 100.0, 30.0) and prompt.label == "dog"
    assert brush_label(prompt, config) == "dog"


@pytest.mark.parametrize("context, words", [
    ({"result": []}, "non-empty list"),
    ({"result": [{"type": "keypointlabels", "from_name": "nope", "value": {"x": 1, "y": 1}}]}, "unknown control"),
    ({"result": [{"type": "keypointlabels", "from_name": "kp", "value": {"x": "a", "y": 1}}]}, "numbers in 0..100"),
    ({"result": [{"type": "choices", "from_name": "kp", "value": {"x": 1, "y": 1}}]}, "no keypoint or rectangle"),
])
def test_bad_contexts_are_400s(context: dict, words: str) -> None:
    with pytest.raises(RequestError) as err:
        parse_prompt(context, Config(CONFIG), 10, 10)
    assert err.value.status == 400 and words in err.value.message


def test_regions_are_renamed_to_the_projects_controls_and_what_it_cannot_hold_is_left_out() -> None:
    ours = [
        region("1_0", "label", "rectanglelabels", "cat", x=1, y=1, width=2, height=2),
        region("1_0_mask", "mask", "brushlabels", "cat", format="rle", rle=[0]),
        region("1_0", "transcription", "textarea", text=["hi"], x=1, y=1, width=2, height=2),
        region("1_1", "label", "rectanglelabels", "dog", x=1, y=1, width=2, height=2),  # bbox has no "dog"
        region("1_1_poly", "polygon", "polygonlabels", "dog", points=[[0, 0], [1, 0], [1, 1]]),
        region("1_1", "transcription", "textarea", text=["lost"], x=1, y=1, width=2, height=2),  # its box is gone
        region("1_caption", "caption", "textarea", text=["a cat"]),  # no caption text area in this config
    ]
    out = adapt_regions(ours, Config(CONFIG))
    assert [(r["id"], r["from_name"], r["to_name"]) for r in out] == [
        ("1_0", "bbox", "img"), ("1_0_mask", "seg", "img"), ("1_0", "transcription", "img"),
        ("1_1_poly", "poly", "img")]


def test_a_mask_is_a_brush_region_label_studio_decodes_back() -> None:
    mask = np.zeros((30, 40), bool)
    mask[5:12, 8:30] = True
    out = brush_region(mask, "cat", 0.8765432, Config(CONFIG), "7_sam")
    assert (out["original_width"], out["original_height"], out["score"]) == (40, 30, 0.87654)
    decoded = decode_rle(out["value"]["rle"]).reshape(30, 40, 4)[..., 3] > 0
    np.testing.assert_array_equal(decoded, mask)
    with pytest.raises(RequestError, match="no <BrushLabels"):
        brush_region(mask, "cat", 1.0, Config(CONFIG.replace("BrushLabels", "EllipseLabels")), "x")


def test_references_get_store_names() -> None:
    assert rel_path("/data/local-files/?d=photos/a%20b.jpg") == "photos/a b.jpg"
    assert rel_path("/data/upload/3/x.png") == "upload/3/x.png"
    assert rel_path("https://host/bucket/k/y.jpg?sig=1") == "bucket/k/y.jpg"
