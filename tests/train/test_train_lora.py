"""LoRA on the native Florence-2: adapters on the modules that exist in it (the language model's projections, not the
frozen vision tower), trained from a hub id whose commit the lineage records, and the adapter folder loading in a
pipeline exactly as the same adapter merged into whole weights does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("peft")
from real_checkpoints import hub_cache
from train_fixtures import built, write_dataset

from autolabel.cli import main
from autolabel.errors import ExitCode
from autolabel.store import Store
from autolabel.train.model import LORA_TEXT, LoraSettings, matching, prepare

HUB_ID = "florence-community/Florence-2-base"
COMMIT = "c0ffee" + "0" * 34


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return built(width=16, heads=2)


def fresh(base: Path):
    from transformers import Florence2ForConditionalGeneration

    return Florence2ForConditionalGeneration.from_pretrained(base)


def test_lora_wraps_the_language_models_projections_and_nothing_of_the_frozen_vision_tower(base):
    model = fresh(base)
    assert matching(model, r".*\.(o_proj|linear|Conv2d)") == []  # the remote-code model's list: nothing here
    targets = matching(model, LORA_TEXT)
    assert sorted({name.rsplit(".", 1)[-1] for name in targets}) == ["fc1", "fc2", "k_proj", "out_proj", "q_proj",
                                                                     "v_proj"]
    assert len(targets) == 6 + 10  # encoder layer: self-attention + ffn; decoder layer: self- and cross-attention too
    prepare(model, "lora", train_vision=False, lora=LoraSettings(r=4, alpha=8, dropout=0.0))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_" in n and ".language_model." in n for n in trainable)
    assert len(trainable) == 2 * len(targets)


def test_full_trains_all_but_the_vision_tower_and_train_vision_adds_it(base):
    model = fresh(base)
    prepare(model, "full", train_vision=False, lora=LoraSettings())
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {n for n, _ in model.named_parameters() if n.startswith("model.vision_tower.")}
    model = fresh(base)
    prepare(model, "lora", train_vision=True, lora=LoraSettings(r=4, alpha=8, dropout=0.0))
    vision = {n.split(".lora_")[0] for n, p in model.named_parameters() if p.requires_grad and "vision_tower" in n}
    assert vision and all(n.rsplit(".", 1)[-1] in ("qkv", "proj", "fc1", "fc2") for n in vision)


PIPELINE = """
version: 1
models:
  florence: {{type: florence2, id: {model}, generation: {{num_beams: 1, max_new_tokens: 8}}}}
ontology: [dog, cat]
stages:
  - {{name: detect, type: florence2, model: florence, task: od, unmapped: keep}}
"""


def answers(model: Path, images: Path, out: Path) -> dict:
    pipeline = out.with_suffix(".yaml")
    pipeline.write_text(PIPELINE.format(model=model))
    assert main(["run", str(pipeline), "-i", str(images), "-o", str(out), "--no-progress"]) == ExitCode.OK
    with Store(out) as store:
        return {row["rel_path"]: (row["labels"]["boxes"], row["labels"]["provenance"]["detect"])
                for row in store.images()}


def test_an_adapter_trained_from_a_hub_id_records_its_commit_and_loads_like_its_merged_weights(
        base, tmp_path, monkeypatch):
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    hub_cache(cache, HUB_ID, base, COMMIT)
    gt = write_dataset(tmp_path / "data", n=2, size=(128, 96))
    images = tmp_path / "data" / "images"
    common = ["train", "--model", HUB_ID, "--gt", str(gt), "--images", str(images), "--lr", "0.01", "--epochs", "2",
              "--lora-r", "4", "--val-fraction", "0", "--eval-beams", "1", "--no-progress"]
    assert main([*common, "-o", str(tmp_path / "adapter")]) == ExitCode.OK
    assert main([*common, "-o", str(tmp_path / "merged"), "--save", "merged"]) == ExitCode.OK
    adapter = json.loads((tmp_path / "adapter" / "lineage.json").read_text())
    merged = json.loads((tmp_path / "merged" / "lineage.json").read_text())
    assert adapter["base"] == {"id": HUB_ID, "revision": COMMIT} and adapter["saved_as"] == "adapter"
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    assert not (tmp_path / "adapter" / "model.safetensors").exists()  # the adapter alone: a few kB, not the model
    assert not (tmp_path / "merged" / "adapter_config.json").exists() and merged["saved_as"] == "merged"

    from_adapter = answers(tmp_path / "adapter", images, tmp_path / "run-adapter")
    from_merged = answers(tmp_path / "merged", images, tmp_path / "run-merged")
    assert from_adapter.keys() == from_merged.keys() and len(from_adapter) == 2
    for name, (boxes, provenance) in from_adapter.items():
        other, other_provenance = from_merged[name]
        assert boxes["xyxy"] == other["xyxy"] and boxes["data"]["phrase"] == other["data"]["phrase"]
        assert boxes["confidence"] == pytest.approx(other["confidence"], abs=1e-4)
        assert provenance["lineage"]["base_revision"] == COMMIT == other_provenance["lineage"]["base_revision"]
        assert provenance["revision"] == adapter["weights"] != other_provenance["revision"] == merged["weights"]
