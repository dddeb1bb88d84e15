"""The same ontology written another way is the same pipeline: no relabel, no model call, same cache keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from autolabel import Pipeline
from autolabel.config import PipelineSpec, parse
from runs import n_calls, two_model_pipeline
from runs import make_images

CLASSES = ("thing", "other", "third")
SAME = {
    "list": list(CLASSES),
    "class: prompt": {c: c for c in CLASSES},
    "class: [prompt]": {c: [c] for c in CLASSES},
    "class: null": dict.fromkeys(CLASSES),
    "mixed": {"thing": None, "other": ["other"], "third": "third"},
}


def _spec(ontology: object) -> PipelineSpec:
    data = two_model_pipeline(Path("calls"))
    data["ontology"] = ontology
    return parse(data)


@pytest.mark.parametrize("form", list(SAME))
def test_equivalent_forms_hash_alike(form: str) -> None:
    reference, other = _spec(SAME["class: [prompt]"]), _spec(SAME[form])
    assert other.hash == reference.hash
    assert other.stage_keys == reference.stage_keys and other.stage_keys[0] is not None


def test_a_real_change_of_the_ontology_changes_the_hash_and_the_keys() -> None:
    reference = _spec(SAME["list"])
    for changed in ({"thing": ["thing", "object"], "other": "other", "third": "third"}, ["thing", "other"]):
        assert _spec(changed).hash != reference.hash
        assert _spec(changed).stage_keys[0] != reference.stage_keys[0]


def test_rewriting_the_ontology_relabels_nothing_and_calls_no_model(tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    make_images(tmp_path / "in", 4)
    data = two_model_pipeline(calls)
    data["ontology"] = SAME["class: prompt"]
    assert Pipeline.from_dict(data).run(tmp_path / "in", tmp_path / "out").counts["labeled"] == 4
    for form in ("list", "class: [prompt]", "class: null", "mixed"):
        data["ontology"] = SAME[form]
        summary = Pipeline.from_dict(data).run(tmp_path / "in", tmp_path / "out")
        assert summary.counts == {"seen": 4, "labeled": 0, "skipped": 4, "failed": 0}, form
    assert n_calls(calls, "first") == 4 and n_calls(calls, "second") == 4
