"""Third-party model and stage types, registered the way an installed package registers them: entry points."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

from autolabel import Pipeline, registry
from autolabel.cli import main
from autolabel.errors import ConfigError
from autolabel.stage import Item
from tiny_models import noise_image

PLUGIN = '''
"""A third party's package: a model type and the stage that runs it."""
import numpy as np
import supervision as sv

from autolabel.stage import Item, ModelStageParams, Stage


class CornerModel:
    """Model type: 'finds' a box in the top-left corner, ``options.size`` of the image wide."""

    @classmethod
    def load(cls, spec):
        model = cls()
        model.id, model.revision, model.size = spec.id, "demo-1", float(spec.options.get("size", 0.5))
        return model

    def find(self, image):
        return [0.0, 0.0, image.width * self.size, image.height * self.size]


class CornerParams(ModelStageParams):
    label: str


class CornerStage(Stage):
    Params = CornerParams
    model_types = ("corner_model",)

    def __call__(self, items):
        model = self.model
        for item in items:
            det = sv.Detections(xyxy=np.array([model.find(item.image)], np.float32),
                                confidence=np.array([1.0], np.float32),
                                data={"class_name": np.array([self.params.label], dtype=object)})
            item.labels.add(det, stage=self.name, provenance={"model": model.id, "revision": model.revision})
        return items
'''

ENTRY_POINTS = """
[autolabel.models]
corner_model = autolabel_corner_plugin:CornerModel

[autolabel.stages]
corner = autolabel_corner_plugin:CornerStage
"""


@pytest.fixture
def installed_plugin(tmp_path, monkeypatch):
    """What ``pip install`` leaves on sys.path: the module and a dist-info folder with entry_points.txt."""
    (tmp_path / "autolabel_corner_plugin.py").write_text(PLUGIN)
    info = tmp_path / "autolabel_corner_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: autolabel-corner-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    monkeypatch.syspath_prepend(str(tmp_path))
    registry._entry_points.cache_clear()  # entry points are read once per process
    yield tmp_path
    registry._entry_points.cache_clear()


PIPELINE = {
    "models": {"corner": {"type": "corner_model", "id": "demo/corner", "options": {"size": 0.25}}},
    "ontology": ["thing"],
    "stages": [{"type": "corner", "model": "corner", "label": "thing"}],
}


def test_entry_points_register_a_model_type_and_a_stage_type(installed_plugin):
    assert "corner_model" in registry.known_types(registry.MODEL_GROUP)
    assert "corner" in registry.known_types(registry.STAGE_GROUP)
    pipeline = Pipeline.from_dict(PIPELINE)
    (item,) = pipeline([Item.of(noise_image(80, 40))])
    np.testing.assert_allclose(item.labels.detections.xyxy, [[0, 0, 20, 10]])
    assert list(item.labels.detections.data["class_name"]) == ["thing"]
    assert item.labels.provenance["corner"] == {"model": "demo/corner", "revision": "demo-1"}
    assert pipeline.models.versions()["corner"] == {"type": "corner_model", "id": "demo/corner", "revision": "demo-1"}


def test_a_plugin_pipeline_validates_from_the_command_line(installed_plugin, capsys):
    path = installed_plugin / "corner.yaml"
    path.write_text(textwrap.dedent("""
        models:
          corner: {type: corner_model, id: demo/corner}
        ontology: [thing]
        stages:
          - {type: corner, model: corner, label: thing}
    """))
    assert main(["validate", str(path)]) == 0
    assert "ok (1 models, 1 stages: corner; 1 classes" in capsys.readouterr().out


def test_without_the_plugin_its_types_are_unknown_and_the_known_ones_are_listed():
    registry._entry_points.cache_clear()
    with pytest.raises(ConfigError) as err:
        Pipeline.from_dict(PIPELINE)
    problems = err.value.problems
    assert problems[0].startswith("models.corner.type: unknown model type 'corner_model' (known: florence2, ")
    assert "grounding_dino, owlv2, rapidocr, sam, sam2" in problems[0]
    assert problems[1].startswith("stages[0].type: unknown stage type 'corner' (known: ")
