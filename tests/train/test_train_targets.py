"""What ``autolabel train`` teaches: each task's answers, written with the real Florence-2 processor's quantization,
read back by transformers' own parser, and the token ids the model gets (labels padded with -100)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")
from PIL import Image
from real_checkpoints import fixture

from autolabel.ontology import Ontology
from autolabel.train import samples
from autolabel.train.data import Dataset, Example, Tally
from autolabel.train.targets import pairs_for, parsed, quantize, round_trips

CLASSES = ["dog", "cat", "traffic light"]


@pytest.fixture(scope="module")
def processor():
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(fixture("florence2"))


def example(boxes, classes, size=(640, 480), texts=None, quads=None) -> Example:
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return Example("im.png", Path("im.png"), "sha", size[0], size[1], boxes, list(classes),
                   list(texts or [""] * len(classes)), quads)


BOXES = [[10.4, 20.9, 300.2, 200.7], [0, 0, 640, 480], [5, 5, 9, 12], [400.5, 10, 630, 470.2]]
NAMES = ["dog", "cat", "dog", "traffic light"]


@pytest.mark.parametrize("task", ["od", "ovd", "grounding", "region_category", "ocr_regions"])
def test_every_answer_round_trips_through_transformers_parser_within_one_bin(processor, task):
    ex = example(BOXES, NAMES, texts=["HELLO", "world 2", "a", "STOP"])
    pairs = pairs_for(task, 0, ex, CLASSES, processor.post_processor)
    assert pairs and all(round_trips(processor, task, ex, p) for p in pairs)
    if task in ("region_category", "ocr_regions"):
        return
    bin_w, bin_h = 640 / 1000, 480 / 1000
    for pair in pairs:
        labels, boxes = parsed(processor, task, pair.answer, (640, 480))
        for label, box in zip(labels, boxes):  # each parsed box is a ground-truth box, within a bin (+ truncation)
            k = min(range(len(NAMES)), key=lambda i: np.abs(np.asarray(BOXES[i]) - box).sum() if NAMES[i] == label
                    else np.inf)
            err = np.abs(np.clip(BOXES[k], 0, [640, 480, 640, 480]) - box)
            assert (err[[0, 2]] <= bin_w + 1).all() and (err[[1, 3]] <= bin_h + 1).all(), (label, box, BOXES[k])


def test_answers_are_florence2s_formats(processor):
    ex = example([[0, 0, 640, 480], [64, 48, 128, 96]], ["dog", "dog"])
    post = processor.post_processor
    (od,) = pairs_for("od", 0, ex, CLASSES, post)
    assert od.prompt == "<OD>"
    assert od.answer == "dog<loc_0><loc_0><loc_999><loc_999>dog<loc_100><loc_100><loc_200><loc_200>"
    ovd = pairs_for("ovd", 0, ex, CLASSES, post)  # one per class: an empty answer teaches "none here"
    assert [(p.prompt, p.answer) for p in ovd] == [
        ("<OPEN_VOCABULARY_DETECTION>dog", od.answer), ("<OPEN_VOCABULARY_DETECTION>cat", ""),
        ("<OPEN_VOCABULARY_DETECTION>traffic light", "")]
    (grounding,) = pairs_for("grounding", 0, ex, CLASSES, post)  # the caption the stage builds from the ontology
    assert grounding.prompt == "<CAPTION_TO_PHRASE_GROUNDING>dog. cat. traffic light"
    assert grounding.answer == "dog<loc_0><loc_0><loc_999><loc_999><loc_100><loc_100><loc_200><loc_200>"
    regions = pairs_for("region_category", 0, ex, CLASSES, post)
    assert [(p.prompt, p.answer) for p in regions] == [
        ("<REGION_TO_CATEGORY><loc_0><loc_0><loc_999><loc_999>", "dog"),
        ("<REGION_TO_CATEGORY><loc_100><loc_100><loc_200><loc_200>", "dog")]


def test_region_prompts_are_the_ones_the_stage_asks(processor):
    """The florence2 stage asks region tasks with the adapter's region_prompts: the same quantization."""
    from autolabel.models.florence2 import Florence2

    ex = example(BOXES, NAMES)
    adapter = Florence2.__new__(Florence2)  # region_prompts reads only the processor
    adapter.processor = processor
    prompts = adapter.region_prompts(ex.xyxy, (ex.width, ex.height))
    regions = pairs_for("region_category", 0, ex, CLASSES, processor.post_processor)
    assert sorted(p.prompt.removeprefix("<REGION_TO_CATEGORY>") for p in regions) == sorted(prompts)


def test_quantization_is_transformers_never_bin_1000(processor):
    bins = quantize(processor.post_processor, np.array([[0, 0, 640, 480], [639.99, 479.99, 640, 480]]), (640, 480))
    assert bins.max() == 999 and bins.min() == 0
    assert bins.tolist() == [[0, 0, 999, 999], [999, 999, 999, 999]]


def test_box_order_is_raster_order_whatever_order_the_file_lists_them(processor):
    ex = example(BOXES, NAMES)
    shuffled = example([BOXES[i] for i in (3, 1, 0, 2)], [NAMES[i] for i in (3, 1, 0, 2)])
    post = processor.post_processor
    assert pairs_for("od", 0, ex, CLASSES, post) == pairs_for("od", 0, shuffled, CLASSES, post)
    labels, boxes = parsed(processor, "od", pairs_for("od", 0, ex, CLASSES, post)[0].answer, (640, 480))
    assert [b[1] for b in boxes] == sorted(b[1] for b in boxes)  # top edges ascending
    assert labels == ["cat", "dog", "traffic light", "dog"]


def test_ocr_lines_use_their_quads_else_the_box_corners(processor):
    quads = np.array([[10, 10, 200, 20, 198, 60, 8, 50], [300, 300, 400, 300, 400, 340, 300, 340]], dtype=float)
    ex = example([[8, 10, 200, 60], [300, 300, 400, 340]], ["", ""], texts=["SALE", "open"], quads=quads)
    (pair,) = pairs_for("ocr_regions", 0, ex, CLASSES, processor.post_processor)
    assert pair.answer.startswith("SALE<loc_15><loc_20><loc_312><loc_41><loc_309><loc_125><loc_12><loc_104>open")
    assert round_trips(processor, "ocr_regions", ex, pair)


@pytest.mark.parametrize("name", ["a<b", " dog", "café"])
def test_a_class_the_parser_cannot_read_back_is_caught(processor, name):
    ex = example([[10, 10, 100, 100]], [name])
    (pair,) = pairs_for("od", 0, ex, [name], processor.post_processor)
    assert not round_trips(processor, "od", ex, pair)


def test_token_ids_encoder_as_the_processor_builds_it_labels_bos_answer_eos(processor):
    ex = example([[64, 48, 128, 96]], ["dog"])
    ds = Dataset([ex], Ontology.from_config(CLASSES), {}, Tally())
    (sample,) = samples.build(ds, "od", processor, 1022, 400)
    ref = processor(text=["<OD>"], images=[Image.new("RGB", (32, 32))])["input_ids"][0]
    assert sample.input_ids == list(ref)
    tok = processor.tokenizer
    assert tok.convert_ids_to_tokens(sample.labels) == ["<s>", "dog", "<loc_100>", "<loc_100>", "<loc_200>",
                                                        "<loc_200>", "</s>"]


def test_a_batch_pads_labels_with_minus_100_only(processor):
    ds = Dataset([example([[64, 48, 128, 96]], ["dog"]), example(BOXES, NAMES)], Ontology.from_config(CLASSES),
                 {}, Tally())
    short, long = samples.build(ds, "od", processor, 1022, 400)
    batch = samples.collate([short, long], processor.tokenizer.pad_token_id)
    labels = batch["labels"]
    assert labels[0, : len(short.labels)].tolist() == short.labels
    assert (labels[0, len(short.labels):] == -100).all() and (labels[1] != -100).all()
    assert batch["attention_mask"].sum(1).tolist() == [len(short.input_ids), len(long.input_ids)]


def test_answers_too_long_are_counted_never_cut(processor):
    many = [[i, i, i + 50, i + 50] for i in range(0, 400, 20)]  # 20 boxes: 100 tokens and more
    ds = Dataset([example(many, ["dog"] * len(many)), example([[1, 1, 50, 50]], ["cat"])],
                 Ontology.from_config(CLASSES), {}, Tally())
    kept = samples.build(ds, "od", processor, max_answer=40, max_prompt=400)
    assert len(kept) == 1 and kept[0].example == 1
    assert ds.tally.counts["too_long"] == 1
    assert ds.tally.lines() == ["answers longer than the model's maximum (40 tokens): 1, left out (e.g. im.png: 100 "
                                "tokens); raise --max-target-tokens up to the model's limit, or split crowded images"]
