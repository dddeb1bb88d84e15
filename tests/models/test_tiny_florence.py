"""The scripted tiny Florence-2 fixture (tests/support/tiny_florence.py) really does what it promises."""

from __future__ import annotations

import math
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from PIL import Image  # noqa: E402
from tiny_florence import answer_tokens, make_tiny_florence  # noqa: E402

OD_ANSWER = "car<loc_100><loc_200><loc_300><loc_400>person<loc_10><loc_20><loc_500><loc_999>"
OD_PROBS = [0.5 + 0.025 * i for i in range(17)]  # 17 tokens: c a r 4 locs p e r s o n 4 locs
OD_END = 0.6
IMAGES = [Image.new("RGB", (640, 480), (200, 30, 30)), Image.new("RGB", (300, 500), (20, 40, 220))]
EXPECTED_BOXES = {  # (bin + 0.5) * size / 1000, truncated to int
    (640, 480): [[64, 96, 192, 192], [6, 9, 320, 479]],
    (300, 500): [[30, 100, 90, 200], [3, 10, 150, 499]],
}


def _load(path):
    from transformers import AutoProcessor, Florence2ForConditionalGeneration

    return Florence2ForConditionalGeneration.from_pretrained(path).eval(), AutoProcessor.from_pretrained(path)


@pytest.fixture(scope="module")
def od_model(tmp_path_factory):
    path = make_tiny_florence(tmp_path_factory.mktemp("tiny_od"), OD_ANSWER, OD_PROBS, end_prob=OD_END)
    return _load(path)


@pytest.fixture(scope="module")
def od_inputs(od_model):
    _, processor = od_model
    return processor(text=["<OD>", "<OD>"], images=IMAGES, return_tensors="pt")


def test_answer_tokens_match_the_tokenizer(od_model):
    model, processor = od_model
    toks = answer_tokens(OD_ANSWER)
    assert len(toks) == 17 and toks[:4] == ["c", "a", "r", "<loc_100>"]
    ids = processor.tokenizer(OD_ANSWER, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(toks)
    assert processor.tokenizer.decode(ids, skip_special_tokens=False) == OD_ANSWER
    assert len(answer_tokens("A green car.")) == 12
    assert answer_tokens("é") == ["\\xc3", "\\xa9"]
    assert sum(p.numel() for p in model.parameters()) < 300_000


def test_processor_layout(od_model, od_inputs):
    model, processor = od_model
    assert processor.image_processor.image_seq_length == 5 == processor.num_image_tokens
    assert tuple(od_inputs["pixel_values"].shape) == (2, 3, 64, 64)
    image_id = processor.tokenizer.image_token_id
    assert image_id == model.config.image_token_id
    assert (od_inputs["input_ids"] == image_id).sum(dim=1).tolist() == [5, 5]
    with torch.no_grad():
        feats = model.get_image_features(pixel_values=od_inputs["pixel_values"]).pooler_output
    assert feats.shape[1] == 5


def test_greedy_batch_emits_answer_with_known_probabilities(od_model, od_inputs):
    model, processor = od_model
    with torch.no_grad():
        out = model.generate(**od_inputs, max_new_tokens=40, output_scores=True, return_dict_in_generate=True)
    texts = processor.batch_decode(out.sequences, skip_special_tokens=False)
    assert texts == ["</s>" + OD_ANSWER + "</s>"] * 2
    assert processor.batch_decode(out.sequences, skip_special_tokens=True) == [OD_ANSWER] * 2

    scores = model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
    want = torch.tensor([math.log(p) for p in [*OD_PROBS, OD_END]])
    assert scores.shape == (2, 18)
    for row in scores:
        assert torch.allclose(row, want, atol=1e-4)

    for text, image in zip(texts, IMAGES):
        parsed = processor.post_process_generation(text, task="<OD>", image_size=image.size)
        assert parsed == {"<OD>": {"bboxes": EXPECTED_BOXES[image.size], "labels": ["car", "person"]}}
    # Parsing from token ids gives the same.
    parsed = processor.post_process_generation(sequence=out.sequences[1], task="<OD>", image_size=IMAGES[1].size)
    assert parsed["<OD>"]["bboxes"] == EXPECTED_BOXES[(300, 500)]


def test_beam_search_emits_the_same_answer(od_model, od_inputs):
    model, processor = od_model
    with torch.no_grad():
        out = model.generate(
            **od_inputs, max_new_tokens=40, num_beams=3, output_scores=True, return_dict_in_generate=True
        )
    assert processor.batch_decode(out.sequences, skip_special_tokens=False) == ["</s>" + OD_ANSWER + "</s>"] * 2
    logps = [math.log(p) for p in [*OD_PROBS, OD_END]]
    scores = model.compute_transition_scores(out.sequences, out.scores, out.beam_indices, normalize_logits=False)
    for row in scores:
        assert torch.allclose(row, torch.tensor(logps), atol=1e-4)
    # v5 beam scores: summed log-probs divided by the number of generated tokens (length_penalty=1).
    assert torch.allclose(out.sequences_scores, torch.tensor(sum(logps) / len(logps)), atol=1e-4)


def test_any_prompt_any_task_and_other_formats(tmp_path):
    answer = "<poly><loc_100><loc_100><loc_300><loc_100><loc_300><loc_300></poly>"
    model, processor = _load(make_tiny_florence(tmp_path / "seg", answer, 0.7, image_size=96))
    assert processor.image_processor.image_seq_length == 10
    images = [Image.new("RGB", (1000, 500)), Image.new("RGB", (50, 80))]
    prompts = ["<REFERRING_EXPRESSION_SEGMENTATION>a car", "<REGION_TO_SEGMENTATION><loc_1><loc_2><loc_3><loc_4>"]
    inputs = processor(text=prompts, images=images, return_tensors="pt", padding="longest")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=40, output_scores=True, return_dict_in_generate=True)
    texts = processor.batch_decode(out.sequences, skip_special_tokens=False)
    assert texts == ["</s>" + answer + "</s>"] * 2
    scores = model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
    assert torch.allclose(scores, torch.full_like(scores, math.log(0.7)), atol=1e-4)  # end token too (float probs)
    task = "<REFERRING_EXPRESSION_SEGMENTATION>"
    parsed = processor.post_process_generation(texts[0], task=task, image_size=(1000, 500))
    assert parsed == {task: {"polygons": [[[100, 50, 300, 50, 300, 150]]], "labels": [""]}}


def test_bad_probabilities_are_refused(tmp_path):
    with pytest.raises(ValueError, match="entries"):
        make_tiny_florence(tmp_path / "a", "ab", [0.9])
    with pytest.raises(ValueError, match="probabilities"):
        make_tiny_florence(tmp_path / "b", "ab", 1.0)
    with pytest.raises(ValueError, match="multiple of 32"):
        make_tiny_florence(tmp_path / "c", "ab", image_size=50)
