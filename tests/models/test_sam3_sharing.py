"""SAM 3's detector (``concepts``) and tracker (``segment`` with ``sam3_tracker``) from one checkpoint: one backbone
pass per image for both, counted where transformers runs the backbone, and labels exactly as without sharing.

The tracker's vision encoder is the detector's backbone and its own neck (tests/models/test_sam3_model.py checks the
weights come from those tensors of the file): only the backbone's output is shared; each model's neck is checked here
against transformers' own methods, tensor for tensor. Weights that differ by one number never share.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import torch
from real_checkpoints import real
from tiny_models import noise_image

from autolabel import Pipeline
from autolabel.accounting import Account
from autolabel.config import ModelSpec, parse
from autolabel.models.features import BatchFeatures
from autolabel.models.pool import ModelPool
from autolabel.models.sam3 import Sam3, Sam3Tracker
from autolabel.stage import Item
from autolabel.store import Store

pytestmark = pytest.mark.slow  # builds the tiny SAM 3 checkpoint (~7 s) and runs six small pipelines
#: (width, height, seed): a and c share a size (a swap between them keeps every size right)
IMAGES = {"a.png": (96, 64, 1), "b.png": (80, 120, 2), "c.png": (96, 64, 3)}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("in")
    for name, (w, h, seed) in IMAGES.items():
        noise_image(w, h, seed=seed).save(folder / name)
    return folder


@pytest.fixture(scope="module")
def other_weights(tmp_path_factory: pytest.TempPathFactory) -> Sam3Tracker:
    """The tracker of the checkpoint with one number of the shared backbone changed (the tracker reads the
    detector's backbone), loaded from its folder."""
    from safetensors.torch import load_file, save_file

    folder = tmp_path_factory.mktemp("other") / "sam3"
    shutil.copytree(real("sam3"), folder)
    tensors = load_file(folder / "model.safetensors")
    key = next(k for k in tensors if k.startswith("detector_model.vision_encoder.backbone.") and k.endswith("weight"))
    tensors[key].view(-1)[0] += 1e-3
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    return Sam3Tracker.load(ModelSpec(type="sam3_tracker", id=str(folder)))


@pytest.fixture(scope="module")
def pool() -> ModelPool:
    """Both models of the checkpoint, loaded once for the module's pipelines (as a worker keeps them)."""
    return ModelPool(spec().config.models)


def spec(tracker: str | None = None, share: bool = True, **changes: dict) -> Any:
    stages = [
        {"type": "concepts", "name": "concepts", "model": "sam3", "threshold": 0.2, "max_instances": 3},
        {"type": "segment", "name": "masks", "model": "tracker", "from_stages": ["concepts"], "overwrite": True},
    ]
    return parse({
        "models": {"sam3": {"type": "sam3", "id": real("sam3")},
                   "tracker": {"type": "sam3_tracker", "id": tracker or real("sam3")}},
        "ontology": ["cat", "dog"],
        "batch_size": 2,  # two batches: 2 images, then 1
        "share_vision_features": share,
        "stages": [s | changes.get(s["name"], {}) for s in stages],
        "exports": [{"format": "coco"}],  # polygons from the masks
    })


@pytest.fixture
def backbones(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, int]]:
    """(backbone module, images) per run of SAM 3's ViT, recorded where transformers runs it."""
    from transformers.models.sam3.modeling_sam3 import Sam3ViTModel

    seen: list[tuple[Any, int]] = []
    original = Sam3ViTModel.forward

    def counted(self, pixel_values, *args, **kwargs):
        seen.append((self, int(pixel_values.shape[0])))
        return original(self, pixel_values, *args, **kwargs)

    monkeypatch.setattr(Sam3ViTModel, "forward", counted)
    return seen


def ran(seen: list[tuple[Any, int]], pipeline: Pipeline) -> dict[str, int]:
    """Images through each model's backbone."""
    out = {}
    for name in ("sam3", "tracker"):
        backbone = pipeline.models.get(name).model.vision_encoder.backbone
        out[name] = sum(n for module, n in seen if module is backbone)
    assert sum(out.values()) == sum(n for _, n in seen)  # no other backbone ran
    return out


def run(out: Path, inputs: Path, pool: ModelPool | None = None, **options: Any) -> tuple[dict, Pipeline]:
    pipeline = Pipeline(spec(**options), models=pool)
    summary = pipeline.run(inputs, out)
    assert summary.exit_code == 0, summary.failures
    return json.loads((out / "run.json").read_text()), pipeline


def passes(report: dict) -> dict[str, tuple[int, int, int]]:
    return {name: (v["images"], v["passes"], v["requests"]) for name, v in report["vision_passes"].items()}


def stored(out: Path) -> dict[str, dict]:
    with Store(out) as store:
        return {row["rel_path"]: row["labels"] for row in store.images()}


def exported(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())
            if p.suffix in (".json", ".xml") and p.name != "run.json"}


def test_one_backbone_pass_per_image_serves_concepts_and_the_tracker_and_labels_as_without_sharing(
    inputs: Path, tmp_path: Path, pool: ModelPool, backbones: list
) -> None:
    shared, pipeline = run(tmp_path / "shared", inputs, pool)
    # sam3 ran the backbone for the 3 images; the tracker asked the same 3 and computed none
    assert passes(shared) == {"sam3": (3, 3, 3), "tracker": (3, 0, 3)}
    assert ran(backbones, pipeline) == {"sam3": 3, "tracker": 0}
    assert [n for _, n in backbones] == [2, 1]  # one backbone call per batch

    backbones.clear()
    alone, pipeline = run(tmp_path / "alone", inputs, pool, share=False)
    assert passes(alone) == {"sam3": (3, 3, 3), "tracker": (3, 3, 3)}
    assert ran(backbones, pipeline) == {"sam3": 3, "tracker": 3}

    labels = stored(tmp_path / "shared")
    assert labels == stored(tmp_path / "alone")  # every row, box, score, mask and provenance
    files = exported(tmp_path / "shared")
    assert sorted(files) == ["captions.json", "coco.json"]
    assert files == exported(tmp_path / "alone")  # byte for byte
    for name in IMAGES:  # and the tracker did segment each image's concept rows
        data = labels[name]["boxes"]["data"]
        assert data["stage"] and set(data["stage"]) == {"concepts"}
        assert set(data["mask_stage"]) == {"masks"} and all(data["has_mask"])
        assert all(iou > 0 for iou in data["predicted_iou"])


def test_stages_restored_from_the_cache_compute_nothing_and_a_tracker_alone_computes_its_own(
    inputs: Path, tmp_path: Path, pool: ModelPool, backbones: list
) -> None:
    out = tmp_path / "out"
    run(out, inputs, pool)
    with sqlite3.connect(out / "autolabel.db") as conn:
        conn.execute("UPDATE images SET pipeline_hash = 'something else'")  # every image to do again, all cached
    backbones.clear()
    report, _ = run(out, inputs, pool)
    assert report["vision_passes"] == {} and backbones == []

    report, pipeline = run(out, inputs, pool, masks={"multimask": True})  # only the tracker's stage runs again
    assert passes(report) == {"tracker": (3, 3, 3)}
    assert ran(backbones, pipeline) == {"sam3": 0, "tracker": 3}


def test_a_tracker_whose_backbone_differs_by_one_number_computes_its_own(
    pool: ModelPool, other_weights: Sam3Tracker, backbones: list
) -> None:
    pipeline = Pipeline(spec(tracker=other_weights.id))
    pipeline.models._loaded.update(sam3=pool.get("sam3"), tracker=other_weights)  # as the pool would load them
    images = [noise_image(w, h, seed=s) for w, h, s in IMAGES.values()]
    account = Account()
    items = pipeline([Item.of(image, name) for image, name in zip(images, IMAGES)], account=account)
    assert all(item.labels.detections.data["has_mask"].all() for item in items)
    assert {name: (c.images, c.passes) for name, c in account.vision.items()} == {"sam3": (3, 3), "tracker": (3, 3)}
    assert ran(backbones, pipeline) == {"sam3": 3, "tracker": 3}


def test_the_two_models_of_one_checkpoint_are_one_backbone_and_their_necks_are_transformers_own(
    pool: ModelPool, other_weights: Sam3Tracker
) -> None:
    sam3, tracker = pool.get("sam3"), pool.get("tracker")
    images = [noise_image(w, h, seed=s) for w, h, s in IMAGES.values()][:2]
    pixels = sam3.processor(images=images, return_tensors="pt")["pixel_values"]
    assert torch.equal(pixels, tracker.processor(images=images, return_tensors="pt")["pixel_values"])
    mine, its = sam3.vision_features(images), tracker.vision_features(images)
    assert all(torch.equal(a.hidden, b.hidden) and a.size == b.size == (1008, 1008) for a, b in zip(mine, its))
    assert (sam3.vision_family(), sam3.vision_weights()) == (tracker.vision_family(), tracker.vision_weights())

    with torch.inference_mode():
        detector = sam3.model.get_vision_features(pixels)
        embeddings = tracker.model.get_image_embeddings(pixels)
    necked = sam3._neck(mine)
    assert torch.equal(necked.last_hidden_state, detector.last_hidden_state)
    assert len(necked.fpn_hidden_states) == len(detector.fpn_hidden_states) == 4
    for got, want in zip(necked.fpn_hidden_states + necked.fpn_position_encoding,
                         detector.fpn_hidden_states + detector.fpn_position_encoding):
        assert torch.equal(got, want)
    tracked = tracker.embeddings(its)
    assert [size for _, size in tracked] == [(1008, 1008)] * 2
    assert len(embeddings) == 3 and [tuple(e.shape[1:]) for e in embeddings] != [
        tuple(f.shape[1:]) for f in detector.fpn_hidden_states[:3]]  # the tracker's levels are its own
    for j, (levels, _) in enumerate(tracked):
        assert all(torch.equal(got, want[j : j + 1]) for got, want in zip(levels, embeddings))

    assert other_weights.vision_family() == tracker.vision_family()  # same architecture and preprocessing ...
    assert other_weights.vision_weights() != tracker.vision_weights()  # ... other weights
    in_bf16 = Sam3(sam3.model, sam3.processor, sam3.spec, sam3.device, torch.bfloat16)  # the family names the dtype
    assert in_bf16.vision_family() != sam3.vision_family()
    assert BatchFeatures(["a"]).group("sam3", sam3) == "sam3"


def test_a_model_alone_in_its_family_never_digests_its_weights(pool: ModelPool, monkeypatch) -> None:
    """The digest reads every backbone tensor (~3 s at the real size on a CPU): paid only when two models meet."""
    sam3 = pool.get("sam3")
    digested: list[str] = []
    monkeypatch.setattr("autolabel.models.sam3.tensors_digest", lambda module: digested.append("x") or "digest")
    monkeypatch.setattr(sam3, "_weights_digest", None)
    batch = BatchFeatures(["a"])
    assert batch.group("sam3", sam3) == "sam3"
    assert digested == []
    assert batch.group("tracker", pool.get("tracker")) in {"sam3", "tracker"} and len(digested) >= 1
