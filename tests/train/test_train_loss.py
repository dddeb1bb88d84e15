"""The loss the model trains on: transformers' native Florence-2 loss is cross-entropy on the labels at their own
positions (no second shift), pads (-100) count for nothing, and the loop's way in (image features placed in the
encoder's input, as the model's forward does) gives the same loss as ``pixel_values``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
import torch
from PIL import Image
from train_fixtures import built

from autolabel.ontology import Ontology
from autolabel.train import samples
from autolabel.train.data import Dataset, Example, Tally
from autolabel.train.loop import check_loss, embed
from autolabel.train.model import TrainError, check_transformers


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from transformers import AutoProcessor, Florence2ForConditionalGeneration

    path = built(width=16, heads=2)
    return Florence2ForConditionalGeneration.from_pretrained(path).eval(), AutoProcessor.from_pretrained(path)


@pytest.fixture(scope="module")
def batch(tiny):
    _, processor = tiny
    examples = [Example(f"{k}.png", Path(f"{k}.png"), str(k), 320, 240, np.array(boxes, dtype=float).reshape(-1, 4),
                        classes, [""] * len(classes))
                for k, (boxes, classes) in enumerate([([[10, 10, 100, 100]], ["dog"]),
                                                      ([[5, 5, 50, 60], [100, 20, 300, 200]], ["cat", "dog"])])]
    ds = Dataset(examples, Ontology.from_config(["dog", "cat"]), {}, Tally())
    pairs = samples.build(ds, "od", processor, 1022, 400)
    pixels = processor.image_processor([Image.new("RGB", (320, 240), c) for c in ((200, 30, 30), (20, 20, 220))],
                                       return_tensors="pt")["pixel_values"]
    return pairs, samples.collate(pairs, processor.tokenizer.pad_token_id), pixels


def test_the_native_loss_is_cross_entropy_on_aligned_labels(tiny, batch):
    model, _ = tiny
    _, b, pixels = batch
    labels = b["labels"]
    with torch.no_grad():
        out = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], pixel_values=pixels, labels=labels)
    logits = out.logits.float()
    aligned = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                                ignore_index=-100)
    shifted = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                                labels[:, 1:].reshape(-1), ignore_index=-100)
    assert out.loss.item() == pytest.approx(aligned.item(), rel=1e-6)
    assert abs(out.loss.item() - shifted.item()) > 1e-3  # a second shift would be another number
    check_loss(out.loss, out.logits, labels, int((labels != -100).sum()))  # the loop's guard lets it through


def test_a_loss_on_labels_shifted_twice_is_refused_with_one_line(tiny, batch):
    model, _ = tiny
    _, b, pixels = batch
    labels = b["labels"]
    with torch.no_grad():
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], pixel_values=pixels,
                       labels=labels).logits
    items = int((labels[:, 1:] != -100).sum())
    twice = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                              ignore_index=-100, reduction="sum") / items  # what the bug computed
    with pytest.raises(TrainError) as err:
        check_loss(twice, logits, labels, int((labels != -100).sum()))
    assert "\n" not in str(err.value) and "shifts them twice" in str(err.value)


def test_pads_count_for_nothing(tiny, batch):
    """The same pairs padded wider (more -100 and pad ids) give the same loss, per row and for the batch."""
    model, processor = tiny
    pairs, b, pixels = batch
    with torch.no_grad():
        both = model(**b, pixel_values=pixels).loss
        alone = [model(**samples.collate([s], processor.tokenizer.pad_token_id), pixel_values=pixels[k:k + 1])
                 for k, s in enumerate(pairs)]
    tokens = [len(s.labels) for s in pairs]
    mean = sum(o.loss.item() * n for o, n in zip(alone, tokens)) / sum(tokens)
    assert both.item() == pytest.approx(mean, rel=1e-5)
    assert alone[0].logits.shape[1] < b["labels"].shape[1]  # row 0 was padded in the batch


def test_the_loops_image_features_give_the_models_own_loss(tiny, batch):
    model, _ = tiny
    _, b, pixels = batch
    with torch.no_grad():
        native = model(**b, pixel_values=pixels).loss
        features = model.model.multi_modal_projector(model.model.vision_tower(pixels).last_hidden_state)
        ours = model(inputs_embeds=embed(model, b["input_ids"], features), attention_mask=b["attention_mask"],
                     labels=b["labels"]).loss
    assert ours.item() == pytest.approx(native.item(), rel=1e-6)


def test_transformers_with_the_double_shift_is_refused_with_one_line():
    with pytest.raises(TrainError) as err:
        check_transformers("4.57.6")
    assert str(err.value) == ("transformers 4.57.6 trains Florence-2 on labels shifted twice "
                              "(huggingface/transformers#46897): upgrade to transformers>=5.17 to train (labeling "
                              "works with this one)")
    check_transformers("5.17.0")
    check_transformers()  # the installed one


def test_gradient_accumulation_averages_over_every_token_of_the_step(tmp_path):
    """Two batches of 2 accumulated are one step over the 4 pairs: the same loss, the same weights after it."""
    from safetensors.torch import load_file
    from train_fixtures import write_dataset

    from autolabel.train.api import train

    gt = write_dataset(tmp_path / "data", n=4, size=(160, 120), most=3)  # answers of 1 to 3 boxes: unequal lengths
    losses = {}
    for batch, accum in ((4, 1), (2, 2)):
        seen = []
        train(str(built(width=16, heads=2)), gt, tmp_path / f"b{batch}", tmp_path / "data" / "images", mode="full",
              lr=1e-3, epochs=1, batch_size=batch, grad_accum=accum, val_fraction=0, eval_beams=1, progress=False,
              notes=None, on_step=lambda step, loss, seen=seen: seen.append(loss))
        losses[batch] = seen
    assert len(losses[4]) == len(losses[2]) == 1
    assert losses[2][0] == pytest.approx(losses[4][0], rel=1e-5)
    a, b = load_file(tmp_path / "b4" / "model.safetensors"), load_file(tmp_path / "b2" / "model.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_bf16_autocast_trains_and_the_guard_reads_bf16_logits(tmp_path):
    """What a CUDA run does by default (``--precision auto``), here on the CPU's bf16 autocast."""
    from train_fixtures import write_dataset

    from autolabel.train.api import train

    gt = write_dataset(tmp_path / "data", n=2, size=(160, 120))
    losses = []
    summary = train(str(built(width=16, heads=2)), gt, tmp_path / "out", tmp_path / "data" / "images", mode="lora",
                    epochs=1, batch_size=2, precision="bf16", val_fraction=0, eval_beams=1, progress=False,
                    notes=None, on_step=lambda step, loss: losses.append(loss))
    assert len(losses) == 1 and 5 < losses[0] < 20  # a random model's cross-entropy over a 51k vocabulary
    assert summary.lineage["settings"]["precision"] == "bf16"
