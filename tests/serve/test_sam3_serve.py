"""``autolabel serve`` with SAM 3: a reviewer's rectangle labelled "find similar" gets every similar instance in the
image (SAM 3, that rectangle as its exemplar), and smart clicks get SAM 3's tracker's mask — over HTTP, a real
server subprocess, the request bodies Label Studio sends (see tests/serve/test_serve.py).
"""

from __future__ import annotations

import shutil

import httpx
import numpy as np
import pytest
import yaml
from label_studio_sdk.converter.brush import decode_rle
from label_studio_sdk.label_interface import LabelInterface
from real_checkpoints import real
from test_serve import Served, keypoint, ls_task, predict_body
from tiny_models import noise_image

from autolabel.config import ModelSpec
from autolabel.models.concepts import ConceptPrompt
from autolabel.models.sam3 import Sam3, Sam3Tracker
from autolabel.serve.interactive import Interactive
from autolabel.serve.protocol import Prompt

pytestmark = pytest.mark.slow

CONFIG = """<View>
  <Image name="img" value="$photo"/>
  <RectangleLabels name="bbox" toName="img" smart="true" choice="multiple">
    <Label value="cat"/><Label value="dog"/><Label value="find similar"/></RectangleLabels>
  <BrushLabels name="seg" toName="img"><Label value="cat"/><Label value="dog"/></BrushLabels>
  <KeyPointLabels name="kp" toName="img" smart="true"><Label value="cat"/><Label value="dog"/></KeyPointLabels>
</View>"""
THRESHOLD = 0.4
W, H = 150, 100


def rectangle(x: float, y: float, w: float, h: float, labels: list[str]) -> dict:
    """A smart rectangle as Label Studio's image editor sends it in ``context.result`` (percent of the image)."""
    return {"original_width": W, "original_height": H, "image_rotation": 0, "id": "r1X2y3", "from_name": "bbox",
            "to_name": "img", "type": "rectanglelabels", "origin": "manual",
            "value": {"x": x, "y": y, "width": w, "height": h, "rotation": 0, "rectanglelabels": labels}}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("sam3-serve")
    shutil.copytree(real("sam3"), root / "sam3")
    spec = {"name": "sam3-serve", "ontology": {"cat": "cat", "dog": "dog"},
            "models": {"sam3": {"type": "sam3", "id": str(root / "sam3")},
                       "clicks": {"type": "sam3_tracker", "id": str(root / "sam3")}},
            "stages": [{"type": "concepts", "model": "sam3", "threshold": THRESHOLD}]}
    (root / "pipeline.yaml").write_text(yaml.safe_dump(spec))
    noise_image(W, H, seed=21).save(root / "photo.png")
    served = Served([str(root / "pipeline.yaml"), "--local-root", str(root)], root / "serve.log")
    yield {"root": root, "served": served, "image": root / "photo.png"}
    assert served.stop() == 0


def test_a_find_similar_rectangle_gets_every_similar_instance_as_sam3_finds_them_from_that_box(server):
    served = server["served"]
    box = [20.0, 30.0, 80.0, 60.0]  # pixels: 13.33 % .. 53.33 % across, 30 % .. 60 % down
    context = {"result": [rectangle(100 * box[0] / W, 100 * box[1] / H, 100 * (box[2] - box[0]) / W,
                                    100 * (box[3] - box[1]) / H, ["find similar", "dog"])]}
    r = httpx.post(served.url + "/predict", json=predict_body([ls_task(31, str(server["image"]))], context,
                                                              CONFIG), timeout=120)
    assert r.status_code == 200, r.text
    (prediction,) = r.json()["results"]
    assert LabelInterface(CONFIG).validate_prediction(prediction, return_errors=True) == []
    rects = [x for x in prediction["result"] if x["type"] == "rectanglelabels"]
    brushes = [x for x in prediction["result"] if x["type"] == "brushlabels"]

    model = Sam3.load(ModelSpec(type="sam3", id=str(server["root"] / "sam3")))
    image = noise_image(W, H, seed=21)
    (found,) = model.segment_concepts([image], [[ConceptPrompt(None, [box], [True])]], threshold=THRESHOLD)
    assert 0 < len(found) < 20  # some instances, not every query
    assert not rects and len(brushes) == len(found)  # one region per object: its mask (the config has brushes)
    assert {x["value"]["brushlabels"][0] for x in brushes} == {"dog"}  # the chosen class, not the marker
    assert sorted(x["score"] for x in brushes) == pytest.approx(sorted(found.scores.tolist()), abs=1e-4)
    masks = [decode_rle(x["value"]["rle"]).reshape(H, W, 4)[..., 3] > 0 for x in brushes]
    assert sorted(m.tobytes() for m in masks) == sorted(np.asarray(m, bool).tobytes() for m in found.masks)
    body = httpx.get(served.url + "/health").json()
    assert body["stats"]["similar"] == 1 and body["interactive"] == "clicks"


def test_a_smart_click_gets_the_sam3_trackers_mask(server):
    served = server["served"]
    r = httpx.post(served.url + "/predict", json=predict_body([ls_task(32, str(server["image"]))],
                                                              {"result": [keypoint(40, 50, W, H)]}, CONFIG),
                   timeout=60)
    assert r.status_code == 200, r.text
    (region,) = r.json()["results"][0]["result"]
    assert (region["type"], region["from_name"], region["value"]["brushlabels"]) == ("brushlabels", "seg", ["cat"])
    mask = decode_rle(region["value"]["rle"]).reshape(H, W, 4)[..., 3] > 0
    tracker = Sam3Tracker.load(ModelSpec(type="sam3_tracker", id=str(server["root"] / "sam3")))
    expected, iou = Interactive(tracker).mask("x", noise_image(W, H, seed=21),
                                              Prompt(points=[(60.0, 50.0)], point_labels=[1]))
    assert 0 < expected.sum() < W * H
    np.testing.assert_array_equal(mask, expected)
    assert region["score"] == pytest.approx(iou, abs=1e-5)


@pytest.mark.parametrize("labels, problem", [
    (["find similar"], "find similar: choose the object's class beside 'find similar' (RectangleLabels "
                       'choice="multiple"), so the instances found can be labelled'),
    (["find similar", "cat", "dog"], "find similar: the rectangles name several classes (cat, dog); find one class "
                                     "at a time"),
])
def test_a_find_similar_rectangle_without_one_class_is_a_one_line_400(server, labels, problem):
    context = {"result": [rectangle(10, 10, 30, 30, labels)]}
    r = httpx.post(server["served"].url + "/predict",
                   json=predict_body([ls_task(33, str(server["image"]))], context, CONFIG), timeout=60)
    assert r.status_code == 400 and r.json() == {"error": problem}


def test_more_find_similar_rectangles_than_the_limit_are_refused_before_any_model_runs(server):
    from autolabel.serve.similar import MAX_EXAMPLES

    before = httpx.get(server["served"].url + "/health").json()["stats"].get("similar", 0)
    context = {"result": [rectangle(10, 10, 30, 30, ["find similar", "cat"])] * (MAX_EXAMPLES + 1)}
    r = httpx.post(server["served"].url + "/predict",
                   json=predict_body([ls_task(34, str(server["image"]))], context, CONFIG), timeout=60)
    assert r.status_code == 400 and r.json() == {
        "error": f"{MAX_EXAMPLES + 1} 'find similar' rectangles in one request; at most {MAX_EXAMPLES}"}
    assert httpx.get(server["served"].url + "/health").json()["stats"].get("similar", 0) == before
