"""The ``florence2`` stage, task by task, on tiny scripted checkpoints: exact boxes, classes, masks, texts, scores.

A tiny checkpoint answers the same text whatever it is asked (tests/support/tiny_florence.py), each token with a known
probability, so each test picks an answer that parses for its task and checks the labels to the pixel.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
from PIL import Image
from tiny_florence import answer_tokens, make_tiny_florence

from autolabel import Pipeline
from autolabel.errors import ConfigError
from autolabel.labels import DROPPED, KEPT
from autolabel.models.florence2 import Florence2
from autolabel.stage import Item

ONTOLOGY = {"car": ["car", "automobile"], "person": ["person", "man"]}
SIZES = [(640, 480), (300, 500)]  # a batch of differently sized, non-square images

_BUILT: dict[tuple, Path] = {}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    """``tiny(answer, probs)`` → a checkpoint folder answering ``answer`` (built once per module and answer)."""

    def build(answer: str, probs: float | list[float] = 0.9) -> str:
        key = (answer, tuple(probs) if isinstance(probs, list) else probs)
        if key not in _BUILT or not _BUILT[key].exists():
            _BUILT[key] = make_tiny_florence(tmp_path_factory.mktemp("tiny"), answer, probs)
        return str(_BUILT[key])

    return build


def probs_for(answer: str) -> list[float]:
    """Distinct probabilities per token (0.50, 0.52, ...), so a wrong token choice changes the score."""
    return [round(0.5 + 0.02 * i, 4) for i in range(len(answer_tokens(answer)))]


def gmean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def pixel(b: int, size: int) -> float:
    return float(int((b + 0.5) * size / 1000))


_LOADED: dict[str, Florence2] = {}


def pipeline_of(config: dict) -> Pipeline:
    """The pipeline, its Florence-2 models loaded once per test module (the load path has its own tests)."""
    pipeline = Pipeline.from_dict(config)
    for name, spec in pipeline.config.models.items():
        if spec.id not in _LOADED:
            _LOADED[spec.id] = Florence2.load(spec)
        loaded = _LOADED[spec.id]
        pipeline.models._loaded[name] = Florence2(loaded.model, loaded.processor, spec, loaded.device, loaded.dtype)
    return pipeline


def run(path: str, stages: list[dict], ontology: Any = ONTOLOGY, generation: dict | None = None,
        sizes=SIZES, items: list[Item] | None = None) -> list[Item]:
    config = {
        "models": {"florence": {"id": path, "generation": generation or {"max_new_tokens": 60}}},
        "ontology": ontology,
        "stages": stages,
    }
    items = items or [Item.of(Image.new("RGB", size, (120, 60, 30))) for size in sizes]
    return pipeline_of(config)(items)


def stage(task: str, **keys: Any) -> dict:
    return {"type": "florence2", "name": keys.pop("name", task), "model": "florence", "task": task, **keys}


# -- detection
OD = "cars<loc_100><loc_200><loc_300><loc_400>dog<loc_10><loc_20><loc_500><loc_999>"


@pytest.mark.parametrize("num_beams", [1, 3])
def test_od_maps_phrases_to_classes_and_drops_the_unmapped(tiny, num_beams: int) -> None:
    p = probs_for(OD)  # c a r s L L L L d o g L L L L
    items = run(tiny(OD, p), [stage("od", generation={"num_beams": num_beams})])
    for item, (w, h) in zip(items, SIZES):
        det = item.labels.detections
        np.testing.assert_array_equal(det.xyxy, [
            [pixel(100, w), pixel(200, h), pixel(300, w), pixel(400, h)],
            [pixel(10, w), pixel(20, h), pixel(500, w), pixel(999, h)],
        ])
        assert det.data["class_name"].tolist() == ["car", ""]  # "cars" → car; "dog" names no class
        assert det.data["phrase"].tolist() == ["cars", "dog"]
        assert det.data["status"].tolist() == [KEPT, DROPPED]
        assert det.data["reason"].tolist() == ["", "unmapped_phrase"]
        np.testing.assert_allclose(det.confidence, [gmean(p[4:8]), gmean(p[11:15])], rtol=1e-4)
        prov = item.labels.provenance["od"]
        assert prov["task"] == "<OD>" and prov["prompt"] == "<OD>"
        assert prov["score_method"] == "geometric mean of location-token probabilities"
        assert prov["generation"] == {"max_new_tokens": 60, "num_beams": num_beams}
        assert prov["unmapped"] == "drop" and prov["model_type"] == "florence2"
    assert items[0].labels.detections.xyxy[0].tolist() == [64.0, 96.0, 192.0, 192.0]  # by hand, 640x480


def test_score_option_and_unmapped_keep(tiny) -> None:
    p = probs_for(OD)
    (item,) = run(tiny(OD, p), [stage("od", score="locations+label", unmapped="keep")], sizes=SIZES[:1])
    det = item.labels.detections
    assert det.data["status"].tolist() == [KEPT, KEPT] and det.data["class_name"].tolist() == ["car", ""]
    np.testing.assert_allclose(det.confidence, [gmean(p[0:8]), gmean(p[8:15])], rtol=1e-4)
    assert item.labels.provenance["od"]["score_method"] == "geometric mean of location- and label-token probabilities"


def test_proposals_keep_every_box_with_the_stage_label(tiny) -> None:
    answer = "<loc_0><loc_0><loc_999><loc_999><loc_250><loc_250><loc_750><loc_750>"
    (item,) = run(tiny(answer, 0.8), [stage("proposals", label="car")], sizes=[(200, 100)])
    det = item.labels.detections
    np.testing.assert_array_equal(det.xyxy, [[0, 0, 199, 99], [50, 25, 150, 75]])
    assert det.data["class_name"].tolist() == ["car", "car"] and det.data["phrase"].tolist() == ["", ""]
    np.testing.assert_allclose(det.confidence, [0.8, 0.8], rtol=1e-4)


def spy_rows(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, list]]:
    """Record what each stage asks the model: (task token, rows)."""
    calls: list[tuple[str, list]] = []
    original = Florence2.run

    def spy(self, task, images, rows=None, generation=None, max_rows=64):
        calls.append((task, list(rows) if rows is not None else None))
        return original(self, task, images, rows, generation, max_rows)

    monkeypatch.setattr(Florence2, "run", spy)
    return calls


def test_grounding_asks_for_every_ontology_prompt_in_one_caption(tiny, monkeypatch) -> None:
    calls = spy_rows(monkeypatch)
    answer = "a man<loc_100><loc_200><loc_300><loc_400>automobile<loc_1><loc_2><loc_3><loc_4>"
    items = run(tiny(answer), [stage("grounding")])
    assert calls == [("<CAPTION_TO_PHRASE_GROUNDING>", [(0, "car. automobile. person. man"),
                                                        (1, "car. automobile. person. man")])]
    det = items[1].labels.detections
    assert det.data["class_name"].tolist() == ["person", "car"]  # through the prompts: man → person
    assert det.data["phrase"].tolist() == ["a man", "automobile"]
    assert det.xyxy[0].tolist() == [pixel(100, 300), pixel(200, 500), pixel(300, 300), pixel(400, 500)]
    assert items[1].labels.provenance["grounding"]["prompt"] == "car. automobile. person. man"


def test_grounding_a_caption_from_an_earlier_stage(tiny, monkeypatch) -> None:
    calls = spy_rows(monkeypatch)
    config = {
        "models": {
            "captioner": {"id": tiny("A man  next to a car."), "generation": {"max_new_tokens": 40}},
            "florence": {"id": tiny("a car<loc_100><loc_200><loc_300><loc_400>"), "generation": {"max_new_tokens": 40}},
        },
        "ontology": ONTOLOGY,
        "stages": [
            {"type": "florence2", "name": "cap", "model": "captioner", "task": "caption"},
            stage("grounding", caption_from="cap"),
        ],
    }
    items = [Item.of(Image.new("RGB", s)) for s in SIZES]
    items = pipeline_of(config)(items)
    assert calls[1] == ("<CAPTION_TO_PHRASE_GROUNDING>", [(0, "A man next to a car."), (1, "A man next to a car.")])
    assert items[0].labels.detections.data["class_name"].tolist() == ["car"]
    assert items[0].labels.provenance["grounding"]["prompt"] == "caption of stage 'cap'"


def test_ovd_asks_every_image_prompt_pair_in_one_generate(tiny, monkeypatch) -> None:
    generates = []
    original = Florence2.generate

    def spy(self, images, image_index, prompts, generation=None, max_rows=64):
        generates.append(list(prompts))
        return original(self, images, image_index, prompts, generation, max_rows)

    monkeypatch.setattr(Florence2, "generate", spy)
    answer = "automobile<loc_100><loc_200><loc_300><loc_400>"
    items = run(tiny(answer), [stage("ovd", prompts=["car", "man", "dog"], unmapped="keep")])
    assert generates == [["<OPEN_VOCABULARY_DETECTION>" + p for p in ["car", "man", "dog"] * 2]]
    det = items[0].labels.detections
    # the class comes from the prompt asked (the tiny model answers "automobile" to all; a prompt naming no
    # class falls back to the phrase)
    assert det.data["class_name"].tolist() == ["car", "person", "car"]
    assert len(det) == 3 and items[0].labels.provenance["ovd"]["prompt"] == ["car", "man", "dog"]


# -- text, quads, polygons
def test_ocr_regions_give_quads_texts_and_bounding_boxes(tiny) -> None:
    answer = "HELLO<loc_100><loc_100><loc_500><loc_120><loc_490><loc_300><loc_90><loc_280>"
    p = probs_for(answer)
    (item,) = run(tiny(answer, p), [stage("ocr_regions", score="label")], ontology={"text": None}, sizes=[(1000, 500)])
    det = item.labels.detections
    quad = [100, 50, 500, 60, 490, 150, 90, 140]  # (bin + 0.5) * (1000 | 500) / 1000, truncated
    np.testing.assert_array_equal(det.data["quad"], [quad])
    np.testing.assert_array_equal(det.xyxy, [[90, 50, 500, 150]])
    assert det.data["text"].tolist() == ["HELLO"] and det.data["class_name"].tolist() == [""]
    np.testing.assert_allclose(det.confidence, [gmean(p[0:5])], rtol=1e-4)  # score: label → the text's tokens


def test_res_polygons_become_masks_scored_by_all_their_locations(tiny) -> None:
    answer = "<loc_100><loc_100><loc_500><loc_100><loc_500><loc_500><loc_100><loc_500>"
    p = [0.9, 0.8, 0.7, 0.6, 0.9, 0.8, 0.7, 0.6]
    (item,) = run(tiny(answer, p), [stage("res", prompts=["car"])], sizes=[(200, 200)])
    det = item.labels.detections
    assert det.xyxy.tolist() == [[20, 20, 100, 100]]  # polygon (20,20) (100,20) (100,100) (20,100)
    assert det.data["class_name"].tolist() == ["car"] and bool(det.data["has_mask"][0])
    mask = det.mask[0]
    assert mask[21:99, 21:99].all() and not mask[:19].any() and not mask[:, 102:].any()
    assert 78 * 78 <= mask.sum() <= 82 * 82
    np.testing.assert_array_equal(det.data["polygon"][0], [[20, 20], [100, 20], [100, 100], [20, 100]])
    np.testing.assert_allclose(det.confidence, [gmean(p)], rtol=1e-4)


def test_captions_and_ocr_become_image_texts_with_a_sequence_confidence(tiny) -> None:
    answer = "A red car."
    p = probs_for(answer)
    (item,) = run(tiny(answer, p), [stage("caption"), stage("more_detailed_caption"), stage("ocr")], sizes=[(64, 32)])
    texts = [(t.kind, t.text, t.stage) for t in item.labels.texts]
    assert texts == [("caption", "A red car.", "caption"),
                     ("more_detailed_caption", "A red car.", "more_detailed_caption"), ("ocr", "A red car.", "ocr")]
    for t in item.labels.texts:
        assert t.score == pytest.approx(gmean(p), rel=1e-4)
    assert item.labels.provenance["caption"]["score_method"] == "geometric mean of text-token probabilities"


# -- region tasks on the boxes of an earlier stage
def test_region_category_names_the_boxes_of_an_earlier_stage(tiny) -> None:
    answer = "automobile<loc_1><loc_2><loc_3><loc_4>"
    p = probs_for(answer)
    items = run(tiny(answer, p), [
        {"type": "plugins:CenterBox", "name": "box", "label": ""},
        stage("region_category", from_stages=["box"]),
        stage("region_description", name="describe"),
    ])
    for item, (w, h) in zip(items, SIZES):
        det = item.labels.detections
        assert det.xyxy.tolist() == [[w / 4, h / 4, 3 * w / 4, 3 * h / 4]]  # rows are filled, none added
        assert det.data["phrase"].tolist() == ["automobile"] and det.data["class_name"].tolist() == ["car"]
        assert det.data["phrase_score"][0] == pytest.approx(gmean(p[:10]), rel=1e-4)  # text tokens only
        assert det.data["description"].tolist() == ["automobile"]
        assert det.data["description_score"][0] == pytest.approx(gmean(p[:10]), rel=1e-4)
        assert item.labels.provenance["region_category"]["prompt"] == "<REGION_TO_CATEGORY> with each box of stages box"


@pytest.mark.parametrize("order", [("region_description", "region_ocr"), ("region_ocr", "region_description")])
def test_two_region_text_tasks_on_the_same_boxes_both_answer_in_their_own_columns(tiny, order) -> None:
    from autolabel.models.florence2 import TASKS

    answer = "EXIT"
    p = probs_for(answer)
    items = run(tiny(answer, p), [{"type": "plugins:CenterBox", "name": "box", "label": "car"},
                                  stage(order[0], name="first"), stage(order[1], name="second")])
    for item in items:
        data = item.labels.detections.data
        assert data["description"].tolist() == ["EXIT"] and data["text"].tolist() == ["EXIT"]
        assert data["description_score"][0] == pytest.approx(gmean(p), rel=1e-4)
        assert data["text_score"][0] == pytest.approx(gmean(p), rel=1e-4)
        assert [item.labels.provenance[n]["task"] for n in ("first", "second")] == [TASKS[t] for t in order]


def test_text_filters_still_read_region_descriptions_in_their_own_column(tiny) -> None:
    answer = "a car a car a car a car"
    items = run(tiny(answer, 0.9), [{"type": "plugins:CenterBox", "name": "box", "label": "car"},
                                    stage("region_description"), {"type": "repetition"}])
    for item in items:
        data = item.labels.detections.data
        assert data["description"].tolist() == [answer] and data["text"].tolist() == [""]
        assert data["status"].tolist() == [DROPPED] and data["reason"].tolist() == ["repetition"]


def test_region_segmentation_fills_masks_of_earlier_boxes(tiny) -> None:
    answer = "<loc_100><loc_100><loc_500><loc_100><loc_500><loc_500><loc_100><loc_500>"
    items = run(tiny(answer, 0.7), [{"type": "plugins:CenterBox", "name": "box", "label": "car"},
                                    stage("region_segmentation")], sizes=[(200, 200)])
    det = items[0].labels.detections
    assert len(det) == 1 and bool(det.data["has_mask"][0]) and det.data["mask_stage"][0] == "region_segmentation"
    assert det.mask[0][21:99, 21:99].all() and det.mask[0].sum() <= 82 * 82
    assert det.data["mask_score"][0] == pytest.approx(0.7, rel=1e-4)
    assert det.xyxy.tolist() == [[50, 50, 150, 150]]  # the box stays the detector's


def test_answers_cut_by_max_new_tokens_are_counted_in_provenance(tiny) -> None:
    (item,) = run(tiny(OD), [stage("od", generation={"max_new_tokens": 6, "num_beams": 1})], sizes=[(64, 64)])
    assert item.labels.provenance["od"]["truncated_answers"] == 1
    assert len(item.labels.detections) == 0  # "cars" + 1 location: no box yet


# -- configuration errors: one line each, naming the key
@pytest.mark.parametrize(
    ("keys", "ontology", "problem"),
    [
        ({"task": "od", "prompts": ["car"]}, ONTOLOGY,
         "stages[0].prompts: applies to task ovd, res, grounding, not od"),
        ({"task": "grounding", "caption_from": "later"}, ONTOLOGY,
         "stages[0].caption_from: 'later' is not an earlier stage (earlier stages: none)"),
        ({"task": "proposals", "label": "truck"}, ONTOLOGY,
         "stages[0].label: unknown class 'truck' (known: car, person)"),
        ({"task": "ovd"}, {}, "stages[0].prompts: none to look for (add classes to the ontology, or give a non-empty "
                              "list of prompts)"),
        ({"task": "ovd", "prompts": ["dog"]}, ONTOLOGY,
         "stages[0].prompts: none maps to an ontology class (known: car, person); every box would be dropped "
         "(fix the prompts, or set unmapped: keep)"),
        ({"task": "caption", "score": "label"}, ONTOLOGY, "stages[0].score: applies to task proposals, od,"),
        ({"task": "od", "generation": {"num_beams": 0}}, ONTOLOGY,
         "stages[0].generation.num_beams: must be a whole number >= 1 (got 0)"),
        ({"task": "od", "generation": {"do_sample": True}}, ONTOLOGY, "stages[0].generation.do_sample: unknown key"),
        ({"task": "detect"}, ONTOLOGY, "stages[0].task: input should be 'proposals', 'od',"),
    ],
)
def test_config_errors_name_the_key(keys: dict, ontology: Any, problem: str) -> None:
    config = {"models": {"florence": {"id": "/nowhere"}}, "ontology": ontology,
              "stages": [{"type": "florence2", "model": "florence", **keys}]}
    with pytest.raises(ConfigError) as err:
        Pipeline.from_dict(config)
    assert len(err.value.problems) == 1 and err.value.problems[0].startswith(problem), err.value.problems


def test_model_generation_settings_are_checked_with_the_stage() -> None:
    config = {"models": {"florence": {"id": "/nowhere", "generation": {"beams": 3}}}, "ontology": ONTOLOGY,
              "stages": [stage("od")]}
    unknown = r"stages\[0\]\.generation\.beams: unknown key .*\(in models\.florence\.generation\)"
    with pytest.raises(ConfigError, match=unknown):
        Pipeline.from_dict(config)


def test_grounding_takes_prompts_or_a_caption_not_both() -> None:
    config = {"models": {"florence": {"id": "/nowhere"}}, "ontology": ONTOLOGY,
              "stages": [stage("caption", name="cap"), stage("grounding", caption_from="cap", prompts=["car"])]}
    with pytest.raises(ConfigError) as err:
        Pipeline.from_dict(config)
    assert err.value.problems == ["stages[1].prompts: give prompts or caption_from, not both"]


def test_an_answer_without_shapes_adds_no_rows(tiny) -> None:
    (item,) = run(tiny("no such thing"), [stage("res", prompts=["car"]), stage("od")], sizes=[(50, 40)])
    assert len(item.labels.detections) == 0
    assert set(item.labels.provenance) == {"res", "od"}


def test_ovd_rows_mix_boxes_and_masks_across_prompts() -> None:
    """Open-vocabulary detection may answer one prompt with boxes and another with polygons: rows of both merge."""
    from autolabel.models.florence2 import Answer

    class Scripted:  # a model answering each prompt with a fixed parsed result (no alignment: scores unknown)
        id, revision = "scripted", None

        def settings(self, overrides=None):
            return {"num_beams": 3}

        def run(self, task, images, rows, generation, max_rows):
            results = {
                "car": {"bboxes": [[10, 10, 30, 20]], "bboxes_labels": ["car"], "polygons": [], "polygons_labels": []},
                "man": {"bboxes": [], "bboxes_labels": [], "polygons": [[[40, 40, 60, 40, 60, 60, 40, 60]]],
                        "polygons_labels": ["man"]},
            }
            return [Answer(task, "", results[text], None, np.zeros(0), True) for _, text in rows]

    pipeline = Pipeline.from_dict({"models": {"florence": {"id": "/nowhere"}}, "ontology": ONTOLOGY,
                                   "stages": [stage("ovd", prompts=["car", "man"])]})
    pipeline.models._loaded["florence"] = Scripted()
    (item,) = pipeline([Item.of(Image.new("RGB", (100, 80)))])
    det = item.labels.detections
    assert det.xyxy.tolist() == [[10, 10, 30, 20], [40, 40, 60, 60]]
    assert det.data["class_name"].tolist() == ["car", "person"]
    assert det.data["has_mask"].tolist() == [False, True]
    assert not det.mask[0].any() and det.mask[1][41:59, 41:59].all()
    assert np.isnan(det.confidence).all()  # tokens not aligned: no score rather than a wrong one
