"""Open-vocabulary detectors (Grounding DINO, OWLv2) and the ``detect`` stage, on tiny random checkpoints.

Random weights test plumbing; where a test needs known boxes it rewrites the model's raw outputs (logits and
normalized boxes) after a real forward pass, so everything after the network — prompt mapping, scores, scaling
to each image's pixels — is checked to the pixel.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import supervision as sv
import torch
from numpy.testing import assert_allclose

from autolabel import Pipeline
from autolabel.config import ModelSpec
from autolabel.errors import ConfigError
from autolabel.labels import DROPPED, KEPT
from autolabel.models.grounding_dino import GroundingDino, caption, token_spans
from autolabel.models.outputs import Boxes
from autolabel.models.owlv2 import Owlv2
from autolabel.ontology import Ontology
from autolabel.records import from_record
from autolabel.stage import Item, StageContext
from autolabel.stages.detect import Detect
from autolabel.store import Store
from tiny_models import Recorder, noise_image, rotated_jpeg, tiny

SIZES = [(150, 60), (80, 120), (64, 64)]  # (width, height): wide, tall, square


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


@pytest.fixture(scope="module")
def gdino() -> GroundingDino:
    return GroundingDino.load(ModelSpec(type="grounding_dino", id=tiny("grounding_dino")))


@pytest.fixture(scope="module")
def owl() -> Owlv2:
    return Owlv2.load(ModelSpec(type="owlv2", id=tiny("owlv2")))


@pytest.fixture
def images() -> list:
    return [noise_image(w, h, seed=i) for i, (w, h) in enumerate(SIZES)]


@pytest.fixture
def record():
    """``record(owner, name, after=None)`` wraps a method for the test's duration."""
    made: list[Recorder] = []

    def make(owner, name, after=None):
        made.append(Recorder(owner, name, after))
        return made[-1]

    yield make
    for r in reversed(made):
        r.undo()


# -- designed outputs: a real forward, then known logits and boxes -------------------------------------------

def gdino_designed(word_ids: list[int], box=(0.5, 0.5, 0.5, 0.5), edge_box=(1.0, 0.5, 0.5, 0.5)):
    """Rewrite Grounding DINO's output: query 0 (logit +5) and query 1 (+3) on the tokens in ``word_ids``."""

    def after(out, *args, **kwargs):
        ids = kwargs["input_ids"]
        logits = torch.full_like(out.logits, -10.0)
        logits[:, :, ids.shape[1]:] = -math.inf  # what the model does beyond the caption
        on_word = torch.isin(ids, torch.tensor(word_ids))
        logits[:, 0, : ids.shape[1]][on_word] = 5.0
        logits[:, 1, : ids.shape[1]][on_word] = 3.0
        boxes = torch.full_like(out.pred_boxes, 0.5)
        boxes[:, 0] = torch.tensor(box)
        boxes[:, 1] = torch.tensor(edge_box)
        out.logits, out.pred_boxes = logits, boxes
        return out

    return after


def owl_designed(query: int):
    """Rewrite OWLv2's output: patch 0 (+5) and patch 1 (+4) on ``query``; patch 1's box lies in the padded square's
    bottom-right quarter."""

    def after(out, *args, **kwargs):
        logits = torch.full_like(out.logits, -10.0)
        logits[:, 0, query] = 5.0
        logits[:, 1, query] = 4.0
        boxes = torch.full_like(out.pred_boxes, 0.5)
        boxes[:, 0] = torch.tensor([0.25, 0.25, 0.5, 0.5])
        boxes[:, 1] = torch.tensor([0.75, 0.75, 0.5, 0.5])
        out.logits, out.pred_boxes = logits, boxes
        return out

    return after


# -- Grounding DINO ---------------------------------------------------------------------------------------

def test_caption_joins_prompts_lower_case_with_each_prompts_span():
    text, spans = caption(["Person", "traffic  light", "dog"])
    assert text == "person. traffic light. dog."
    assert [text[a:b] for a, b in spans] == ["person", "traffic light", "dog"]


def test_token_spans_give_each_prompt_its_tokens_and_no_special_or_separator(gdino):
    text, spans = caption(["cat", "traffic light", "dogs"])
    enc = gdino.processor.tokenizer(text, return_offsets_mapping=True)
    assert gdino.processor.tokenizer.convert_ids_to_tokens(enc["input_ids"]) == [
        "[CLS]", "cat", ".", "traffic", "light", ".", "dog", "##s", ".", "[SEP]"]
    owner = token_spans(np.array(enc["offset_mapping"]), spans)
    assert [list(np.flatnonzero(row)) for row in owner] == [[1], [3, 4], [6, 7]]


def test_grounding_dino_scores_every_prompt_in_one_forward_per_image_size(gdino, images, record):
    forward = record(gdino.model, "forward")
    images = images + [noise_image(*SIZES[0], seed=9)]
    found = gdino.detect(images, ["cat", "traffic light", "dog"], box_threshold=0.0, text_threshold=0.0)
    assert [kw["pixel_values"].shape[0] for _, kw in forward.calls] == [2, 1, 1]  # the two 150×60 images share one
    kwargs = forward.calls[0][1]
    assert kwargs["input_ids"].shape[0] == 2 and "pixel_mask" in kwargs
    assert gdino.processor.tokenizer.decode(kwargs["input_ids"][0]) == "[CLS] cat. traffic light. dog. [SEP]"
    assert [len(b) for b in found] == [10, 10, 10, 10]  # every query of the tiny model, at threshold 0
    for boxes, (w, h) in zip(found, SIZES + SIZES[:1]):
        assert (boxes.xyxy[:, [0, 2]] >= 0).all() and (boxes.xyxy[:, [0, 2]] <= w).all()
        assert (boxes.xyxy[:, [1, 3]] >= 0).all() and (boxes.xyxy[:, [1, 3]] <= h).all()
        assert set(boxes.labels) <= {0, 1, 2}
        assert ((boxes.scores > 0) & (boxes.scores <= 1)).all()


def test_grounding_dino_boxes_are_pixels_of_each_image_and_labels_the_prompts_tokens(gdino, images, record):
    light = gdino.processor.tokenizer.convert_tokens_to_ids("light")
    record(gdino.model, "forward", after=gdino_designed([light]))
    found = gdino.detect(images, ["cat", "traffic light", "dog"])  # defaults: box 0.35, text 0.25
    for boxes, (w, h) in zip(found, SIZES):
        assert_allclose(boxes.xyxy, [[w / 4, h / 4, 3 * w / 4, 3 * h / 4], [3 * w / 4, h / 4, w, 3 * h / 4]],
                        atol=1e-3)  # the second box reaches past the right edge: clipped
        assert_allclose(boxes.scores, [sigmoid(5), sigmoid(3)], rtol=1e-6)
        assert list(boxes.labels) == [1, 1]  # "light" belongs to the prompt "traffic light"


def test_grounding_dino_text_threshold_drops_boxes_whose_prompt_scores_below_it(gdino, images, record):
    light = gdino.processor.tokenizer.convert_tokens_to_ids("light")
    record(gdino.model, "forward", after=gdino_designed([light]))
    found = gdino.detect(images[:1], ["cat", "traffic light"], box_threshold=0.1, text_threshold=0.97)
    assert_allclose(found[0].scores, [sigmoid(5)], rtol=1e-6)  # 0.993 passes, 0.953 does not


def test_grounding_dino_splits_a_caption_longer_than_its_text_window(gdino, images, record):
    pallet = gdino.processor.tokenizer.convert_tokens_to_ids("pallet")
    forward = record(gdino.model, "forward", after=gdino_designed([pallet]))
    prompts = [f"traffic light w{i}" for i in range(8)] + ["pallet"]  # 4 tokens each with '.'; window: 32 - 2
    images = [noise_image(*SIZES[0], seed=i) for i in range(3)]  # one size: one pass per caption
    found = gdino.detect(images, prompts)
    assert len(forward) == 2
    assert [kw["input_ids"].shape[0] for _, kw in forward.calls] == [3, 3]  # each pass: the whole batch
    assert [list(b.labels) for b in found] == [[8, 8]] * 3  # the second pass's prompt, indexed in the full list


def test_grounding_dino_rejects_a_prompt_longer_than_its_text_window(gdino, images):
    with pytest.raises(ValueError, match="reads at most 30"):
        gdino.detect(images, [" ".join(["cat"] * 40)])


# -- OWLv2 ------------------------------------------------------------------------------------------------

def test_owlv2_scores_every_query_and_image_in_one_forward(owl, images, record):
    forward = record(owl.model, "forward")
    found = owl.detect(images, ["cat", "traffic light", "dog"], box_threshold=0.0)
    assert len(forward) == 1
    kwargs = forward.calls[0][1]
    assert tuple(kwargs["input_ids"].shape) == (9, 16)  # 3 images × 3 queries
    assert tuple(kwargs["pixel_values"].shape) == (3, 3, 32, 32)
    for boxes, (w, h) in zip(found, SIZES):
        assert 0 < len(boxes) <= 16
        assert (boxes.xyxy >= 0).all() and (boxes.xyxy[:, [0, 2]] <= w).all() and (boxes.xyxy[:, [1, 3]] <= h).all()
        assert set(boxes.labels) <= {0, 1, 2}


def test_owlv2_boxes_scale_by_the_longer_side_and_padding_is_cut_off(owl, images, record):
    record(owl.model, "forward", after=owl_designed(query=2))
    found = owl.detect(images, ["cat", "traffic light", "dog"])
    # 150×60 pads to 150²: box 0 → [0, 0, 75, 75], clipped to the image; box 1 → [75, 75, 150, 150] is all padding
    assert_allclose(found[0].xyxy, [[0, 0, 75, 60]], atol=1e-3)
    # 80×120 pads to 120²: box 0 → [0, 0, 60, 60]; box 1 → [60, 60, 120, 120], clipped to x ≤ 80
    assert_allclose(found[1].xyxy, [[0, 0, 60, 60], [60, 60, 80, 120]], atol=1e-3)
    assert_allclose(found[2].xyxy, [[0, 0, 32, 32], [32, 32, 64, 64]], atol=1e-3)
    assert_allclose(found[1].scores, [sigmoid(5), sigmoid(4)], rtol=1e-6)
    assert [list(b.labels) for b in found] == [[2], [2, 2], [2, 2]]


# -- the detect stage -------------------------------------------------------------------------------------

class FakeDetector:
    """Returns fixed boxes; records what the stage asked for."""

    default_box_threshold = 0.2
    id, revision, task = "fake/detector", "abc123", "open_vocabulary_detection"

    def __init__(self, boxes: Boxes):
        self.boxes, self.asked = boxes, []

    def detect(self, images, prompts, box_threshold=None, text_threshold=None):
        self.asked.append((len(images), list(prompts), box_threshold, text_threshold))
        return [self.boxes for _ in images]


class FakePool:
    def __init__(self, model, type_: str = "owlv2"):
        self.model, self.specs = model, {"det": ModelSpec(type=type_, id="fake/detector")}

    def get(self, name: str):
        return self.model


def detect_stage(model, ontology, **params) -> Detect:
    context = StageContext(ontology=Ontology.from_config(ontology), models=FakePool(model))
    return Detect("boxes", Detect.Params.model_validate({"type": "detect", "model": "det", **params}), context)


BOXES = Boxes(np.array([[0, 0, 10, 10], [5, 5, 20, 20], [1, 2, 3, 4]], np.float32),
              np.array([0.9, 0.5, 0.7], np.float32), np.array([1, 0, 2]))


@pytest.mark.parametrize("unmapped, status, reason", [("drop", DROPPED, "unmapped_phrase"), ("keep", KEPT, "")])
def test_detect_stage_maps_prompts_to_classes_and_marks_unmapped_ones(unmapped, status, reason):
    model = FakeDetector(BOXES)
    stage = detect_stage(model, {"person": ["person", "man"], "car": None},
                         prompts=["person", "men", "dog"], unmapped=unmapped)
    (item,) = stage([Item.of(noise_image(40, 30))])
    data = item.labels.detections.data
    assert model.asked == [(1, ["person", "men", "dog"], 0.2, None)]  # the model type's default box threshold
    assert list(data["class_name"]) == ["person", "person", ""]  # "men" → person through its prompt "man"
    assert list(data["phrase"]) == ["men", "person", "dog"]
    assert list(data["status"]) == [KEPT, KEPT, status]
    assert list(data["reason"]) == ["", "", reason]
    assert list(data["stage"]) == ["boxes"] * 3
    assert_allclose(item.labels.detections.confidence, [0.9, 0.5, 0.7])
    assert item.labels.provenance["boxes"] == {
        "model": "fake/detector", "revision": "abc123", "model_type": "owlv2", "task": "open_vocabulary_detection",
        "prompts": ["person", "men", "dog"], "score": "model", "box_threshold": 0.2, "text_threshold": None,
        "unmapped": unmapped,
    }


def test_detect_stage_asks_for_every_ontology_prompt_once_by_default():
    model = FakeDetector(Boxes.empty())
    stage = detect_stage(model, {"person": ["person", "man"], "worker": ["man", "worker"]}, box_threshold=0.5)
    stage([Item.of(noise_image(8, 8)), Item.of(noise_image(9, 9))])
    assert model.asked == [(2, ["person", "man", "worker"], 0.5, None)]


def pipeline_dict(model_type: str, model_id: str, **stage) -> dict:
    return {
        "models": {"det": {"type": model_type, "id": model_id}},
        "ontology": {"person": ["person"], "car": ["car"]},
        "stages": [{"type": "detect", "model": "det", **stage}],
    }


def test_detect_stage_config_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"stages\[0\]\.text_threshold: model 'det' \(owlv2\) has one score per box"):
        Pipeline.from_dict(pipeline_dict("owlv2", "x/y", text_threshold=0.3))
    none_maps = r"stages\[0\]\.prompts: none maps to an ontology class \(known: person, car\)"
    with pytest.raises(ConfigError, match=none_maps):
        Pipeline.from_dict(pipeline_dict("owlv2", "x/y", prompts=["dog"]))
    with pytest.raises(ConfigError, match=r"stages\[0\]\.model: model 'det' is a 'sam'; stage type 'detect' runs"):
        Pipeline.from_dict(pipeline_dict("sam", "x/y"))
    with pytest.raises(ConfigError, match=r"stages\[0\]\.box_threshold: input should be less than or equal to 1"):
        Pipeline.from_dict(pipeline_dict("grounding_dino", "x/y", box_threshold=1.5))


# -- whole runs -------------------------------------------------------------------------------------------

def write_inputs(folder: Path) -> dict[str, tuple[int, int]]:
    """Two non-square PNGs and an EXIF-rotated JPEG; their displayed (width, height)."""
    folder.mkdir()
    noise_image(150, 60, seed=1).save(folder / "wide.png")
    noise_image(80, 120, seed=2).save(folder / "tall.png")
    rotated_jpeg(folder / "rotated.jpg", 90, 50)
    return {"wide.png": (150, 60), "tall.png": (80, 120), "rotated.jpg": (50, 90)}


def stored(output: Path) -> dict[str, tuple[dict, object]]:
    with Store(output) as store:
        return {row["rel_path"]: (row, from_record(row["labels"])) for row in store.images()}


def test_grounding_dino_pipeline_labels_displayed_frames_exactly(gdino, tmp_path, monkeypatch):
    from transformers import GroundingDinoForObjectDetection

    sizes = write_inputs(tmp_path / "in")
    car = gdino.processor.tokenizer.convert_tokens_to_ids("car")
    designed = gdino_designed([car])
    original = GroundingDinoForObjectDetection.forward
    calls = []

    def forward(self, *args, **kwargs):
        calls.append(kwargs["pixel_values"].shape[0])
        return designed(original(self, *args, **kwargs), *args, **kwargs)

    monkeypatch.setattr(GroundingDinoForObjectDetection, "forward", forward)
    data = pipeline_dict("grounding_dino", tiny("grounding_dino"))
    summary = Pipeline.from_dict({**data, "batch_size": 2}).run(input=tmp_path / "in", output=tmp_path / "out")
    assert summary.status == "ok" and summary.counts["labeled"] == 3
    assert sorted(calls) == [1, 1, 1]  # one forward per batch and image size (three sizes here)
    rows = stored(tmp_path / "out")
    for name, (w, h) in sizes.items():
        row, labels = rows[name]
        assert (row["width"], row["height"]) == (w, h)
        assert_allclose(labels.detections.xyxy,
                        [[w / 4, h / 4, 3 * w / 4, 3 * h / 4], [3 * w / 4, h / 4, w, 3 * h / 4]], atol=1e-2)
        assert list(labels.detections.data["class_name"]) == ["car", "car"]
        assert_allclose(labels.detections.confidence, [sigmoid(5), sigmoid(3)], rtol=1e-5)
        prov = labels.provenance["detect"]
        assert (prov["model"], prov["model_type"], prov["prompts"], prov["score"]) == (
            tiny("grounding_dino"), "grounding_dino", ["person", "car"], "model")
        assert (prov["box_threshold"], prov["text_threshold"]) == (0.35, 0.25)


def test_owlv2_pipeline_labels_every_image_inside_its_displayed_frame(tmp_path, monkeypatch):
    from transformers import Owlv2ForObjectDetection

    sizes = write_inputs(tmp_path / "in")
    original = Owlv2ForObjectDetection.forward
    calls = []

    def forward(self, *args, **kwargs):
        calls.append(tuple(kwargs["input_ids"].shape))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Owlv2ForObjectDetection, "forward", forward)
    data = pipeline_dict("owlv2", tiny("owlv2"), box_threshold=0.0)
    summary = Pipeline.from_dict({**data, "batch_size": 3}).run(input=tmp_path / "in", output=tmp_path / "out")
    assert summary.status == "ok"
    assert calls == [(6, 16)]  # 3 images × 2 prompts, one pass
    for name, (w, h) in sizes.items():
        row, labels = stored(tmp_path / "out")[name]
        det: sv.Detections = labels.detections
        assert len(det) > 0
        assert (det.xyxy >= 0).all() and (det.xyxy[:, [0, 2]] <= w).all() and (det.xyxy[:, [1, 3]] <= h).all()
        assert set(det.data["class_name"]) <= {"person", "car"}
        assert labels.provenance["detect"]["box_threshold"] == 0.0
