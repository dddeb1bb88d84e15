"""The filter benchmark's small version, in the suite: the shipped quality preset must earn its gains, and a preset
weakened on purpose must not.

``benchmarks/filters_quality.py`` injects the errors auto-labelers make (duplicates, low scores, tiny and
whole-image boxes, hallucinated classes) into synthetic ground truth. Here 300 images (seed 0) go through the
preset exactly as ``pipelines/quality-fld5b.yaml`` writes it, and the benchmark's own targets are asserted, plus
per kind of error that the filter meant for it removes it. Then each filter is weakened alone (a threshold that
keeps everything) and the kind it is there for must come back: so a preset edited into a no-op fails here.
"""

from __future__ import annotations

import copy
import importlib.util
import sys
import types
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PRESET = ROOT / "pipelines" / "quality-fld5b.yaml"
IMAGES, SEED = 300, 0


def _load_benchmark() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("filters_quality", ROOT / "benchmarks" / "filters_quality.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


bench = _load_benchmark()


@pytest.fixture(scope="module")
def samples() -> list:
    return bench.synthesize(IMAGES, SEED)


def run_preset(path: Path, samples: list) -> tuple[dict, dict, dict]:
    """(scores before, scores after, kept boxes per injected kind after) for the preset's filters."""
    ontology = bench.Ontology.from_config(bench.CLASSES)
    stages = [bench.build(kind, raw, ontology) for kind, raw in bench.preset_stages(path, ontology)]
    raw_labels, _ = bench.apply([], samples)
    labels, _ = bench.apply(stages, samples)
    return bench.score(samples, raw_labels), bench.score(samples, labels), bench.kinds_kept(labels)


def weakened(tmp_path: Path, changes: dict[str, dict | None]) -> Path:
    """A copy of the preset with some filters' keys changed (``None``: the filter removed)."""
    data = yaml.safe_load(PRESET.read_text())
    stages = []
    for stage in data["stages"]:
        if stage["type"] in changes:
            if changes[stage["type"]] is None:
                continue
            stage = copy.deepcopy(stage) | changes[stage["type"]]
        stages.append(stage)
    data["stages"] = stages
    path = tmp_path / "weakened.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_the_shipped_preset_meets_the_benchmark_targets(samples: list) -> None:
    before, after, kinds = run_preset(PRESET, samples)
    assert 100 * (after["precision"] - before["precision"]) >= 20  # the benchmark's own targets
    assert 100 * (after["recall"] - before["recall"]) >= -2
    raw = bench.kinds_kept(bench.apply([], samples)[0])
    assert all(raw[k] > 20 for k in ("duplicate", "low_score", "tiny", "hallucinated", "whole_image"))
    assert {k: kinds.get(k, 0) for k in ("duplicate", "low_score", "tiny", "hallucinated", "whole_image")} == {
        "duplicate": 0, "low_score": 0, "tiny": 0, "hallucinated": 0, "whole_image": 0}
    assert kinds["true"] >= 0.97 * raw["true"]  # and it keeps the real objects


def test_the_benchmark_script_reports_the_targets_met(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(["--images", str(IMAGES), "--seed", str(SEED)]) == 0
    assert "target >= +20" in capsys.readouterr().out


@pytest.mark.parametrize("filter_type,change,comes_back", [
    ("score_threshold", {"threshold": 0.0}, "low_score"),
    ("nms", {"iou": 1.0}, "duplicate"),
    ("box_area", {"min_pixels": 0}, "tiny"),
    ("box_area", {"max_area": 1.0}, "whole_image"),
    ("known_classes", None, "hallucinated"),
])
def test_weakening_one_filter_brings_back_the_errors_it_is_for(
    samples: list, tmp_path: Path, filter_type: str, change: dict | None, comes_back: str
) -> None:
    _, _, kinds = run_preset(weakened(tmp_path, {filter_type: change}), samples)
    assert kinds.get(comes_back, 0) > 10, kinds


def test_a_keep_everything_preset_fails_the_targets(samples: list, tmp_path: Path) -> None:
    path = weakened(tmp_path, {"score_threshold": {"threshold": 0.0}, "nms": {"iou": 1.0},
                               "box_area": {"min_pixels": 0, "max_area": 1.0}})
    before, after, _ = run_preset(path, samples)
    assert 100 * (after["precision"] - before["precision"]) < 20  # what the first test would catch
