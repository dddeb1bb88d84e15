"""What the real Florence-2 generates, through our parsing and scoring, with the real tokenizer and processor.

The token ids are those transformers' integration tests record for the real florence-community checkpoints
(tests/fixtures/checkpoints/expected/). Each sequence goes through the same steps as a generated one: the ids as
``generate`` returns them, each step's log-probability as the recorder keeps it, :func:`_collect`, then
:meth:`Florence2.answer`. Every box, quad and polygon must equal transformers' own parse of the text, and be paired
with the very location tokens that wrote it (so its score is theirs).
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from real_checkpoints import EXPECTED, fixture

from autolabel.config import ModelSpec
from autolabel.models.florence2 import Florence2, _collect

SEQUENCES = json.loads((EXPECTED / "florence2_real_sequences.json").read_text())
_LOC = re.compile(r"<loc_(\d+)>")


@pytest.fixture(scope="module")
def florence() -> Florence2:
    """The adapter around the real processor alone: parsing and scoring need no weights."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(fixture("florence2"))
    return Florence2(None, processor, ModelSpec(type="florence2", id=str(fixture("florence2"))), "cpu", None)


def logprob(step: int) -> float:
    """A distinct log-probability per generation step, so a token paired with the wrong instance shows."""
    return float(np.log(0.99 - 0.005 * step))


def generated(florence: Florence2, ids: list[int]):
    """The sequence through ``_collect``, as after ``generate``: ``ids[0]`` is the decoder start, each later one
    was chosen at its step with probability ``exp(logprob(step))``."""
    recorder = type("Recorder", (), {})()
    recorder.values = [torch.tensor([[logprob(t), -30.0]]) for t in range(len(ids) - 1)]
    recorder.indices = [torch.tensor([[token, 3]]) for token in ids[1:]]
    (out,) = _collect(torch.tensor([ids]), None, recorder, florence._specials(), max_new_tokens=1024)
    return out


def step_of(ids: list[int], kept: np.ndarray, position: int) -> int:
    """The generation step of ``kept[position]`` (``kept``: the ids left after start, <s> and padding are dropped)."""
    tokenizer_steps = [t for t, token in enumerate(ids[1:]) if token not in (0, 1)]
    return tokenizer_steps[position]


@pytest.mark.parametrize("case", SEQUENCES, ids=[c["name"] for c in SEQUENCES])
def test_real_sequences_parse_as_transformers_does_and_each_instance_is_paired_with_its_tokens(florence, case):
    processor, task, size, ids = florence.processor, case["task"], tuple(case["size"]), case["ids"]
    if case["text"] is not None:  # the real tokenizer decodes what transformers recorded (batch padding included)
        assert processor.tokenizer.decode(ids, skip_special_tokens=False) == case["text"]
    end = ids.index(2, 1) + 1  # this row's own answer: up to its </s>, without the batch's padding after it
    text = processor.tokenizer.decode(ids[:end], skip_special_tokens=False)
    theirs = processor.post_process_generation(text, task=task, image_size=size)[task]
    if case["parsed"] is not None:
        assert json.loads(json.dumps(theirs)) == case["parsed"][task]

    gen = generated(florence, ids)
    answer = florence.answer(task, gen, size)
    assert json.loads(json.dumps(answer.result)) == json.loads(json.dumps(theirs))
    if isinstance(theirs, str):
        assert answer.text_score() == pytest.approx(
            np.exp(np.mean([logprob(step_of(ids, gen.ids, k)) for k in answer.instances[0].label])), rel=1e-9)
        return

    key = next(k for k in ("quad_boxes", "polygons", "bboxes") if theirs.get(k))
    assert answer.instances is not None and len(answer.instances) == len(theirs[key])
    tokens = processor.tokenizer.convert_ids_to_tokens(gen.ids.tolist())
    post = processor.post_processor
    for instance, coordinates in zip(answer.instances, theirs[key]):
        bins = [int(_LOC.fullmatch(tokens[k]).group(1)) for k in instance.locs]  # every paired token is a <loc_K>
        if key == "bboxes":
            mine = post.dequantize(torch.tensor([bins]), size=size)[0].tolist()
        else:
            flat = [c for polygon in coordinates for c in polygon] if key == "polygons" else coordinates
            mine = post.dequantize(torch.tensor(bins).reshape(-1, 2), size=size).flatten().tolist()
            coordinates = flat
        assert mine == pytest.approx(coordinates)
    scores = answer.scores("locations")
    expected = [np.exp(np.mean([logprob(step_of(ids, gen.ids, k)) for k in i.locs])) for i in answer.instances]
    assert scores == pytest.approx(expected, rel=1e-6)
    labels = theirs.get("labels") or theirs.get("bboxes_labels") or theirs.get("labels", [])
    for instance, label in zip(answer.instances, labels):
        if label:
            assert processor.tokenizer.decode(gen.ids[instance.label].tolist()).strip() == label


def test_location_tokens_are_special_in_the_real_tokenizer_and_nothing_decodes_them_skipping_specials(florence):
    """In the real tokenizer ``<loc_K>`` are special tokens: decoded with skip_special_tokens=True every box vanishes.
    The whole answer path runs here with a tokenizer that refuses to decode that way."""
    (case,) = [c for c in SEQUENCES if c["task"] == "<OD>"]
    tokenizer = florence.processor.tokenizer
    assert "<loc_" not in tokenizer.decode(case["ids"], skip_special_tokens=True)  # why this test exists

    class Refusing:
        """The backend tokenizer, failing any decode that drops special tokens."""

        def __init__(self, inner):
            self.inner = inner
            self.decodes = 0

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def decode(self, ids, skip_special_tokens=False):
            assert not skip_special_tokens, "location tokens decoded with skip_special_tokens=True"
            self.decodes += 1
            return self.inner.decode(ids, skip_special_tokens=skip_special_tokens)

        def decode_batch(self, batch, skip_special_tokens=False):
            assert not skip_special_tokens, "location tokens decoded with skip_special_tokens=True"
            self.decodes += 1
            return self.inner.decode_batch(batch, skip_special_tokens=skip_special_tokens)

    backend = tokenizer._tokenizer
    tokenizer._tokenizer = Refusing(backend)
    try:
        answer = florence.answer(case["task"], generated(florence, case["ids"]), tuple(case["size"]))
        assert tokenizer._tokenizer.decodes >= 1
    finally:
        tokenizer._tokenizer = backend
    assert answer.result["bboxes"] == case["parsed"]["<OD>"]["bboxes"]
    assert np.isfinite(answer.scores()).all()


def test_the_real_processor_builds_the_encoder_inputs_transformers_records(florence):
    """Encoder ids from :meth:`Florence2.encoder_ids` = ``[image] * 577`` + the ids transformers' tests expect."""
    expected = {}
    for line in (EXPECTED / "test_modeling_florence2.integration.md").read_text().splitlines():
        found = re.match(r"- `(.+)` → ([\d, ]+)$", line)
        if found:
            expected[found.group(1)] = [int(v) for v in found.group(2).split(",")]
    assert len(expected) == 9
    got = florence.encoder_ids(list(expected))
    image = florence.processor.image_token_id
    for (prompt, ids), mine in zip(expected.items(), got):
        assert mine == [image] * 577 + ids, prompt
