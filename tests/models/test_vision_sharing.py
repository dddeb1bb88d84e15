"""One image, one vision pass: a multi-stage pipeline of real (tiny) models runs each image through each model's
vision tower once per batch, says so in run.json, and labels exactly as it does with sharing off.

The Florence-2 model is scripted (tests/support/scripted_florence.py): its answer depends on the image and the prompt,
so features handed to the wrong image, or stale ones, change the labels. The towers are counted where they run
(transformers' ``get_image_features`` / ``get_image_embeddings``), not by the cache that claims to save them.
"""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from scripted_florence import Case, make_scripted_florence
from tiny_models import noise_image, tiny

from autolabel import Pipeline
from autolabel.store import Store

pytestmark = pytest.mark.slow  # builds a scripted checkpoint (~7 s) and runs six small pipelines
SIZES = {"a.png": (80, 60), "b.png": (64, 96), "c.png": (72, 72)}
#: per image: its OD boxes (label, bins) and each box's region category; its caption and the phrase grounded
OD = {"a.png": [("car", (100, 200, 300, 400))],
      "b.png": [("person", (50, 60, 700, 800)), ("dog", (560, 560, 900, 950))],
      "c.png": []}
CATEGORY = {"a.png": ["truck"], "b.png": ["cat", "bird"], "c.png": []}
CAPTION = {"a.png": "a red car", "b.png": "a man and a dog", "c.png": "a wall"}
GROUNDED = {"a.png": ("a car", (120, 220, 320, 420)), "b.png": ("a man", (60, 70, 690, 790)),
            "c.png": ("a wall", (0, 0, 999, 999))}
STAGES = ["detect", "categorize", "caption", "ground"]  # the Florence-2 stages, then two SAM 2 stages


def pixel(b: int, side: int) -> int:
    return int((b + 0.5) * side / 1000)


def locs(bins: tuple[int, ...]) -> str:
    return "".join(f"<loc_{b}>" for b in bins)


def region_prompt(bins: tuple[int, int, int, int], size: tuple[int, int]) -> str:
    """What region_category is asked about an OD box: its pixels quantized again."""
    w, h = size
    xyxy = [pixel(bins[0], w), pixel(bins[1], h), pixel(bins[2], w), pixel(bins[3], h)]
    again = [min(999, math.floor(v / (s / 1000))) for v, s in zip(xyxy, (w, h, w, h))]
    return "<REGION_TO_CATEGORY>" + locs(tuple(again))


def images() -> dict:
    return {name: noise_image(w, h, seed=k + 11) for k, (name, (w, h)) in enumerate(SIZES.items())}


@pytest.fixture(scope="module")
def florence(tmp_path_factory: pytest.TempPathFactory) -> str:
    script = []
    for name, image in images().items():
        script.append(Case(image, "<OD>", "".join(label + locs(bins) for label, bins in OD[name]), 0.9))
        for (_, bins), category in zip(OD[name], CATEGORY[name]):
            script.append(Case(image, region_prompt(bins, image.size), category, 0.8))
        script.append(Case(image, "<CAPTION>", CAPTION[name], 0.85))
        phrase, bins = GROUNDED[name]
        script.append(Case(image, "<CAPTION_TO_PHRASE_GROUNDING>" + CAPTION[name], phrase + locs(bins), 0.7))
    return str(make_scripted_florence(tmp_path_factory.mktemp("scripted"), script, check_beams=(1,)))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("in")
    for name, image in images().items():
        image.save(folder / name)
    return folder


def pipeline(florence: str, share: bool = True, **changes: dict) -> Pipeline:
    stages = [
        {"type": "florence2", "name": "detect", "model": "florence", "task": "od"},
        {"type": "florence2", "name": "categorize", "model": "florence", "task": "region_category",
         "from_stages": ["detect"], "overwrite": True, "unmapped": "keep"},
        {"type": "florence2", "name": "caption", "model": "florence", "task": "caption"},
        {"type": "florence2", "name": "ground", "model": "florence", "task": "grounding", "caption_from": "caption",
         "unmapped": "keep"},
        {"type": "segment", "name": "masks", "model": "sam", "from_stages": ["detect"]},
        {"type": "segment", "name": "ground_masks", "model": "sam", "from_stages": ["ground"]},
    ]
    stages = [s | changes.get(s["name"], {}) for s in stages]
    return Pipeline.from_dict({
        "models": {"florence": {"id": florence, "generation": {"max_new_tokens": 24, "num_beams": 1}},
                   "sam": {"type": "sam2", "id": tiny("sam2")}},
        "ontology": ["car", "person", "dog", "truck", "cat"],
        "batch_size": 4,
        "share_vision_features": share,
        "stages": stages,
        "exports": [{"format": "coco"}, {"format": "labelstudio"}],
    })


@pytest.fixture
def towers(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[int]]:
    """Images per call of each model's vision tower, recorded where transformers runs it."""
    from transformers import Florence2ForConditionalGeneration, Sam2Model

    seen: dict[str, list[int]] = {"florence": [], "sam": []}
    for name, cls, method in (("florence", Florence2ForConditionalGeneration, "get_image_features"),
                              ("sam", Sam2Model, "get_image_embeddings")):
        original = getattr(cls, method)

        def counted(self, pixel_values, *args, _original=original, _name=name, **kwargs):
            seen[_name].append(int(pixel_values.shape[0]))
            return _original(self, pixel_values, *args, **kwargs)

        monkeypatch.setattr(cls, method, counted)
    return seen


def run(florence: str, inputs: Path, out: Path, share: bool = True, **changes: dict) -> dict:
    summary = pipeline(florence, share, **changes).run(inputs, out)
    assert summary.exit_code == 0, summary.failures
    return json.loads((out / "run.json").read_text())


def exported(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())
            if p.suffix in (".json", ".xml") and p.name != "run.json"}


def stored(out: Path) -> dict[str, dict]:
    with Store(out) as store:
        return {row["rel_path"]: row["labels"] for row in store.images()}


def passes(report: dict) -> dict[str, tuple[int, int, int]]:
    return {name: (v["images"], v["passes"], v["requests"]) for name, v in report["vision_passes"].items()}


def test_each_image_runs_through_each_models_tower_once_and_labels_as_without_sharing(
    florence: str, inputs: Path, tmp_path: Path, towers: dict[str, list[int]]
) -> None:
    shared = run(florence, inputs, tmp_path / "shared")
    # florence: 3 images asked by detect, caption and ground, 2 (those with boxes) by categorize; sam: 2 by masks
    # (the images with detect boxes), 3 by ground_masks
    assert passes(shared) == {"florence": (3, 3, 11), "sam": (3, 3, 5)}
    assert all(v["per_image"] == 1.0 and v["seconds"] > 0 for v in shared["vision_passes"].values())
    assert sum(towers["florence"]) == 3 and sum(towers["sam"]) == 3  # what really ran
    assert towers["sam"] == [2, 1]  # masks: a and b; ground_masks: only c was new

    for seen in towers.values():
        seen.clear()
    alone = run(florence, inputs, tmp_path / "alone", share=False)
    assert passes(alone) == {"florence": (3, 11, 11), "sam": (3, 5, 5)}
    assert alone["vision_passes"]["florence"]["per_image"] == pytest.approx(11 / 3, abs=1e-3)
    assert sum(towers["florence"]) == 11 and sum(towers["sam"]) == 5

    assert stored(tmp_path / "shared") == stored(tmp_path / "alone")  # every row, score, mask and provenance
    files = exported(tmp_path / "shared")
    assert sorted(files) == ["captions.json", "coco.json", "labelstudio_config.xml", "labelstudio_tasks.json"]
    assert files == exported(tmp_path / "alone")  # byte for byte

    labels = stored(tmp_path / "shared")  # and they are the script's: each image read its own features
    for name in SIZES:
        data = labels[name]["boxes"]["data"]
        w, h = SIZES[name]
        assert [t["text"] for t in labels[name]["texts"]] == [CAPTION[name]]
        detect = [k for k, s in enumerate(data["stage"]) if s == "detect"]
        assert [data["phrase"][k] for k in detect] == CATEGORY[name]
        (ground,) = [k for k, s in enumerate(data["stage"]) if s == "ground"]
        phrase, bins = GROUNDED[name]
        assert data["phrase"][ground] == phrase
        assert labels[name]["boxes"]["xyxy"][ground] == [float(pixel(b, s)) for b, s in zip(bins, (w, h, w, h))]
        assert all(data["has_mask"])  # every box segmented, by one of the two SAM 2 stages


def test_stages_restored_from_the_cache_compute_no_features(
    florence: str, inputs: Path, tmp_path: Path, towers: dict[str, list[int]]
) -> None:
    out = tmp_path / "out"
    run(florence, inputs, out)
    with sqlite3.connect(out / "autolabel.db") as conn:
        conn.execute("UPDATE images SET pipeline_hash = 'something else'")  # every image to do again, all cached
    for seen in towers.values():
        seen.clear()
    assert run(florence, inputs, out)["vision_passes"] == {}
    assert towers == {"florence": [], "sam": []}

    changed = run(florence, inputs, out, ground_masks={"multimask": True})  # only the last stage runs again
    assert passes(changed) == {"sam": (3, 3, 3)}
    assert towers == {"florence": [], "sam": [3]}

    towers["sam"].clear()
    changed = run(florence, inputs, out, ground={"score": "locations+label"})  # grounding and what follows
    assert passes(changed) == {"florence": (3, 3, 3), "sam": (3, 3, 5)}
    assert towers == {"florence": [3], "sam": [2, 1]}


def test_beam_search_and_decoding_steps_do_not_run_the_tower_again(
    florence: str, inputs: Path, tmp_path: Path, towers: dict[str, list[int]]
) -> None:
    beams = {"generation": {"num_beams": 3, "max_new_tokens": 24}}
    report = run(florence, inputs, tmp_path / "out", detect=beams, caption=beams)
    assert passes(report)["florence"] == (3, 3, 11)
    assert towers["florence"] == [3]  # 4 stages, 3 beams, up to 24 steps: one call, for the three images
