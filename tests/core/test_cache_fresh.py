"""Cached model outputs are as good as fresh ones, and exactly the right changes throw them away.

* Every shipped pipeline (tiny checkpoints swapped in with overrides, as users would with ``--set``): a run whose
  model outputs all come from the store's cache writes byte-identical exports, and identical stored labels
  (provenance included), as the run from scratch, without a single model call.
* A model's id, revision, dtype and generation settings are part of what its output is cached under: changing one
  re-runs that model's stage and every model stage after it, and nothing else (counted in ``stage_images``);
  where it runs (``device``) is not.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from tiny_florence import make_tiny_florence
from tiny_models import noise_image, rotated_jpeg, tiny

from autolabel import Pipeline
from autolabel.store import Store

pytestmark = pytest.mark.slow  # real (tiny) models, two runs each
PIPELINES = Path(__file__).parents[2] / "pipelines"
#: one answer for every Florence-2 task: a class, a box, and (read as OCR) a quad
ANSWER = "person<loc_100><loc_200><loc_300><loc_400><loc_300><loc_600><loc_100><loc_600>"


@pytest.fixture(scope="module")
def florence(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(make_tiny_florence(tmp_path_factory.mktemp("florence"), ANSWER, 0.8))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("in")
    noise_image(96, 48, seed=1).save(folder / "wide.png")
    noise_image(40, 64, seed=2).save(folder / "tall.png")
    rotated_jpeg(folder / "rotated.jpg", 60, 40)
    return folder


def overrides(name: str, florence: str) -> list[str]:
    return {
        "detect.yaml": [f"models.florence.id={florence}"],
        "grounding.yaml": [f"models.florence.id={florence}"],
        "quality-fld5b.yaml": [f"models.florence.id={florence}"],
        "fld5b.yaml": [f"models.florence.id={florence}", f"models.sam.id={tiny('sam2')}"],
        "grounding-sam2.yaml": [f"models.detector.id={tiny('grounding_dino')}", f"models.segmenter.id={tiny('sam2')}",
                                "stages.0.box_threshold=0.0", "stages.0.text_threshold=0.0"],
        "owlv2.yaml": [f"models.detector.id={tiny('owlv2')}", "stages.0.box_threshold=0.0"],
        "ocr.yaml": [],
    }[name]


def exported(out: Path, written: list[str]) -> dict[str, bytes]:
    files = {}
    for top in map(Path, written):
        for path in sorted(top.rglob("*")) if top.is_dir() else [top]:
            if path.is_file():
                files[path.relative_to(out).as_posix()] = path.read_bytes()
    return files


def stored(out: Path) -> dict[str, dict]:
    with Store(out) as store:
        return {row["rel_path"]: row["labels"] for row in store.images()}


def forget_done(out: Path) -> None:
    """Make every image look undone (as after a pipeline change), keeping the cached stage outputs."""
    with sqlite3.connect(out / "autolabel.db") as conn:
        conn.execute("UPDATE images SET pipeline_hash = 'something else'")


@pytest.mark.parametrize("name", ["detect.yaml", "grounding.yaml", "quality-fld5b.yaml", "fld5b.yaml",
                                  "grounding-sam2.yaml", "owlv2.yaml", "ocr.yaml"])
def test_a_run_from_cached_model_outputs_equals_a_run_from_scratch(
    name: str, florence: str, inputs: Path, tmp_path: Path
) -> None:
    def pipeline() -> Pipeline:
        return Pipeline.from_yaml(PIPELINES / name, overrides(name, florence))

    out = tmp_path / "out"
    fresh = pipeline().run(inputs, out)
    assert fresh.status == "ok" and fresh.counts["labeled"] == 3
    fresh_files, fresh_labels = exported(out, fresh.exports), stored(out)
    spec = pipeline().spec
    model_stages = {stage for (stage, _, _), key in zip(spec.stages, spec.stage_keys) if key is not None}
    assert model_stages and model_stages <= set(fresh.data["stage_images"])

    forget_done(out)
    cached = pipeline().run(inputs, out)
    assert cached.counts["labeled"] == 3
    assert not model_stages & set(cached.data["stage_images"]), cached.data["stage_images"]  # no model ran
    assert stored(out) == fresh_labels  # boxes, masks, texts, decisions and provenance
    files = exported(out, cached.exports)
    assert sorted(files) == sorted(fresh_files)
    for rel, data in files.items():
        assert data == fresh_files[rel], f"{name}: {rel} differs between the cached and the fresh run"


def two_models(florence: str, other: str | None = None, **changes: dict) -> Pipeline:
    models = {
        "m1": {"type": "florence2", "id": florence, "generation": {"max_new_tokens": 30}},
        "m2": {"type": "florence2", "id": other or florence, "generation": {"max_new_tokens": 30}},
    }
    for model, change in changes.items():
        models[model] = models[model] | change
    return Pipeline.from_dict({
        "models": models,
        "ontology": ["person"],
        "stages": [
            {"type": "florence2", "name": "first", "model": "m1", "task": "od"},
            {"type": "florence2", "name": "second", "model": "m2", "task": "proposals", "label": "person"},
            {"type": "score_threshold", "threshold": 0.5},
        ],
        "exports": [{"format": "coco"}],
    })


def test_model_changes_invalidate_exactly_the_stages_they_must(florence: str, inputs: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    copy = shutil.copytree(florence, tmp_path / "same-weights-elsewhere")
    assert two_models(florence).run(inputs, out).data["stage_images"] == {"first": 3, "second": 3,
                                                                          "score_threshold": 3}
    both = {"first": 3, "second": 3, "score_threshold": 3}
    second = {"second": 3, "score_threshold": 3}
    m2 = {"generation": {"max_new_tokens": 31, "num_beams": 1}}
    m1 = {"dtype": "float32", "revision": "main"}
    cases = [  # each the whole change from the first run, one more thing changed than the case before
        ({"m2": {"generation": {"max_new_tokens": 31}}}, None, second),
        ({"m2": m2}, None, second),
        ({"m2": m2, "m1": {"dtype": "float32"}}, None, both),  # the same numbers on a CPU, but not in general
        ({"m2": m2, "m1": m1}, None, both),
        ({"m2": m2, "m1": m1 | {"device": "cpu"}}, None, {}),  # where it runs: the same labels, nothing to redo
        ({"m2": m2, "m1": m1 | {"device": "cpu"}}, str(copy), second),  # m2's id
    ]
    for changes, other, reran in cases:
        summary = two_models(florence, other, **changes).run(inputs, out)
        assert summary.counts["labeled"] == (3 if reran else 0), (changes, other)
        assert summary.data["stage_images"] == reran, (changes, other)
        for labels in stored(out).values():  # cached or not, each stage's provenance is its own, current
            first, later = labels["provenance"]["first"], labels["provenance"]["second"]
            assert first["model"] == florence and later["model"] == (other or florence)
            assert later["generation"]["max_new_tokens"] == 31
            assert later["generation"]["num_beams"] == (1 if changes["m2"] is m2 else 3)
            assert first["revision"] == changes.get("m1", {}).get("revision")
