"""The model contract: what each model stage calls on its model, checked when the pipeline is built."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

from autolabel import Pipeline
from autolabel.errors import ConfigError
from autolabel.models.contract import (BoxTracker, ConceptModel, ConceptTracker, Detector, Florence2Model, OcrModel,
                                       Segmenter, methods, missing_methods)
from autolabel.registry import MODEL_GROUP, STAGE_GROUP, resolve
from autolabel.stage import Item, ModelStage
from autolabel.stages import STAGES
from tiny_models import noise_image

PLUGIN = '''
import numpy as np

from autolabel.models.outputs import Boxes


class Loads:
    @classmethod
    def load(cls, spec):
        model = cls()
        model.id, model.revision = spec.id, "v7"
        return model


class NoDetect(Loads):
    def find(self, images, prompts):  # the wrong name: the detect stage calls detect()
        return []


class NoSegment(Loads):
    pass


class NoRead(Loads):
    read = "not a method"


class NoRegions(Loads):
    def settings(self, overrides=None):
        return {}

    def run(self, task, images, rows=None, generation=None, max_rows=64):
        return []


class HalfDetector(Loads):
    """A detector returning the top-left quarter of each image for prompt 1, scored 0.5."""

    def detect(self, images, prompts, box_threshold=None, text_threshold=None):
        self.asked = (box_threshold, text_threshold)
        return [Boxes(np.array([[0, 0, im.width / 2, im.height / 2]], np.float32), np.array([0.5], np.float32),
                      np.array([1])) for im in images]
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    (tmp_path / "contract_plugin.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "contract_plugin"


def pipeline(model_type: str, stage: dict) -> dict:
    return {"models": {"m": {"type": model_type, "id": "demo/m"}}, "ontology": ["cat", "dog"],
            "stages": [{"model": "m", **stage}]}


@pytest.mark.parametrize(("model", "stage", "method", "protocol"), [
    ("NoDetect", {"type": "detect"}, "detect", "Detector: load, detect"),
    ("NoSegment", {"type": "segment"}, "segment", "Segmenter: load, segment"),
    ("NoRead", {"type": "ocr", "label": "cat"}, "read", "OcrModel: load, read"),
    ("NoRegions", {"type": "florence2", "task": "od"}, "region_prompts",
     "Florence2Model: load, settings, run, region_prompts"),
])
def test_a_model_without_a_method_its_stage_calls_is_one_config_line_at_build(plugin, model, stage, method, protocol):
    with pytest.raises(ConfigError) as err:
        Pipeline.from_dict(pipeline(f"{plugin}:{model}", stage))
    (line,) = err.value.problems
    assert line.startswith(f"stages[0].model: model 'm' (type {plugin}:{model}: {plugin}.{model}) has no method "
                           f"{method}(), which stage type {stage['type']!r} calls ("), line
    assert f"(interface {protocol}; " in line
    assert line.endswith("; see README, Your own models and stages)")


def test_a_plugin_detector_runs_under_the_builtin_detect_stage(plugin):
    p = Pipeline.from_dict(pipeline(f"{plugin}:HalfDetector", {"type": "detect", "name": "boxes"}))
    (item,) = p([Item.of(noise_image(40, 20))])
    det = item.labels.detections
    np.testing.assert_allclose(det.xyxy, [[0, 0, 20, 10]])
    assert list(det.data["class_name"]) == ["dog"]  # prompt 1 of the ontology's
    assert p.models.get("m").asked == (0.3, None)  # the contract's defaults for what the model does not declare
    prov = item.labels.provenance["boxes"]
    assert (prov["model"], prov["revision"], prov["model_type"], prov["task"]) == (
        "demo/m", "v7", f"{plugin}:HalfDetector", "open_vocabulary_detection")


def test_a_builtin_model_type_still_runs_only_under_its_stage_types():
    with pytest.raises(ConfigError, match=r"^stages\[0\]\.model: model 'm' is a 'sam'; stage type 'detect' runs "):
        Pipeline.from_dict(pipeline("sam", {"type": "detect"}))


def test_every_builtin_model_implements_what_its_stages_call():
    protocols = {}
    for stage_type in STAGES:
        cls = resolve(STAGE_GROUP, stage_type)
        assert issubclass(cls, ModelStage) and cls.model_protocol is not None, stage_type
        protocols[stage_type] = cls.model_protocol
        for model_type in cls.model_types:
            assert missing_methods(resolve(MODEL_GROUP, model_type), cls.model_protocol) == [], model_type
    assert protocols == {"detect": Detector, "segment": Segmenter, "ocr": OcrModel, "florence2": Florence2Model,
                         "concepts": ConceptModel, "track": ConceptTracker, "track_boxes": BoxTracker}
    assert methods(Segmenter) == ["load", "segment"]
    assert methods(ConceptModel) == ["load", "segment_concepts"]


@pytest.mark.parametrize(("stages", "problems"), [
    ([{"type": "segment", "model": "sam", "from_stages": ["later", "nowhere"]}, {"type": "nms", "name": "later"}],
     ["stages[0].from_stages: 'later' is not an earlier stage (earlier stages: none)",
      "stages[0].from_stages: 'nowhere' is not an earlier stage (earlier stages: none)"]),
    ([{"type": "nms", "name": "a"}, {"type": "wbf", "weights": {"a": 1.0, "b": 2.0}}],
     ["stages[1].weights: 'b' is not an earlier stage (earlier stages: a)"]),
    ([{"type": "nms", "name": "a"}, {"type": "florence2", "model": "f", "task": "region_ocr", "from_stages": ["c"]}],
     ["stages[1].from_stages: 'c' is not an earlier stage (earlier stages: a)"]),
])
def test_stage_references_are_checked_once_for_every_stage_type(stages, problems):
    config = {"models": {"sam": {"type": "sam", "id": "/nowhere"}, "f": {"type": "florence2", "id": "/nowhere"}},
              "ontology": ["cat"], "stages": stages}
    with pytest.raises(ConfigError) as err:
        Pipeline.from_dict(config)
    assert err.value.problems == problems


@pytest.mark.parametrize(("settings", "problems"), [
    ({"num_beams": "3"}, ["num_beams: must be a whole number >= 1 (got '3')"]),  # strict: no silent conversion
    ({"num_beams": None}, ["num_beams: must be a whole number >= 1 (got None)"]),
    ({"min_new_tokens": 0, "no_repeat_ngram_size": 2.5},
     ["no_repeat_ngram_size: must be a whole number >= 0 (got 2.5)"]),
    ({"early_stopping": 1, "use_cache": "yes"}, ["early_stopping: expected bool or str (got 1)",
                                                 "use_cache: expected bool (got 'yes')"]),
    ({"early_stopping": "never", "length_penalty": 1, "repetition_penalty": 1.2}, []),
])
def test_generation_settings_are_checked_by_one_strict_model(settings, problems):
    from autolabel.models.florence2 import Generation, generation_problems

    assert generation_problems(settings) == problems
    assert list(Generation.model_fields) == ["max_new_tokens", "min_new_tokens", "num_beams", "early_stopping",
                                             "length_penalty", "no_repeat_ngram_size", "repetition_penalty",
                                             "use_cache"]
