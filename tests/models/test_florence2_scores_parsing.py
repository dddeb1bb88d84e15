"""Random answers of every Florence-2 task through :meth:`Florence2.answer`, checked against transformers' own parse.

The real tokenizer and processor (tests/fixtures/checkpoints, no weights) parse seeded random answer texts: boxes,
quads, polygons (``<poly>``, ``<sep>``, odd location counts), labels with spaces, banned grounding phrases, stray
tags, repeated coordinates. For every instance transformers returns, the tokens our scoring pairs with it are
checked from the tokens themselves, not from our locator: its location tokens are ``<loc_K>`` tokens spelling
exactly its coordinates, in order; its label tokens decode to exactly its label; no token serves two instances.
Then each score is the geometric mean of the probabilities given to those tokens. A wrong offset, a dropped or
swapped token, a mis-paired instance anywhere in the locating code changes one of these.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
from real_checkpoints import fixture  # noqa: E402

from autolabel.config import ModelSpec  # noqa: E402
from autolabel.models.florence2 import TASKS, Florence2, Generated  # noqa: E402

_LOC = re.compile(r"<loc_(\d+)>")
WORDS = ["car", "a red car", " dog", "the image", "HELLO", "x", "two  people", "a", "Stop sign", " 12 ", "a"]
SIZES = [(640, 480), (300, 500), (1000, 1000), (37, 91)]


@pytest.fixture(scope="module")
def florence() -> Florence2:
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(fixture("florence2"))
    return Florence2(None, processor, ModelSpec(type="florence2", id=str(fixture("florence2"))), "cpu", None)


def locs(rng: np.random.Generator, n: int) -> str:
    pool = rng.integers(0, 1000, size=n) if rng.random() < 0.6 else rng.choice([5, 500, 995], size=n)
    return "".join(f"<loc_{int(b)}>" for b in pool)


def random_answer(rng: np.random.Generator) -> str:
    """A mix of well-formed instances of every kind and stray pieces, as a confused model might write."""
    pieces = []
    for _ in range(int(rng.integers(1, 6))):
        kind = rng.choice(["box", "quad", "poly", "bare_poly", "word", "locs", "tag"], p=[.25, .1, .2, .1, .1, .15, .1])
        label = str(rng.choice(WORDS)) if rng.random() < 0.8 else ""
        if kind == "box":
            pieces.append(label + locs(rng, 4 * int(rng.integers(1, 3)) + int(rng.choice([0, 0, 0, 1, 3]))))
        elif kind == "quad":
            pieces.append(label + locs(rng, 8))
        elif kind in ("poly", "bare_poly"):
            polys = "<sep>".join(locs(rng, int(rng.integers(1, 9))) for _ in range(int(rng.integers(1, 4))))
            pieces.append((label + "<poly>" + polys + "</poly>") if kind == "poly" else polys)
        elif kind == "word":
            pieces.append(label or "word")
        elif kind == "locs":
            pieces.append(locs(rng, int(rng.integers(1, 7))))
        else:
            pieces.append(str(rng.choice(["<sep>", "<poly>", "</poly>"])))
    return "".join(pieces)


def logprobs_of(n: int, seed: int) -> np.ndarray:
    """A distinct probability per token, so a token paired with the wrong instance changes its score."""
    return np.log(np.random.default_rng(seed).uniform(0.05, 0.999, size=n))


def gmean(logprobs: np.ndarray, positions) -> float:
    positions = list(positions)
    return math.exp(float(np.mean(logprobs[positions]))) if positions else math.nan


def check_answer(florence: Florence2, task: str, text: str, size: tuple[int, int], seed: int) -> int:
    """Parse ``text`` as ``task``'s answer and check every instance's tokens and scores; the instances count."""
    processor, post = florence.processor, florence.processor.post_processor
    ids = processor.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert processor.tokenizer.decode(ids, skip_special_tokens=False) == text  # the answer round-trips
    logprobs = logprobs_of(len(ids), seed)
    answer = florence.answer(task, Generated(np.array(ids), logprobs, True), size)
    theirs = processor.post_process_generation(text, task=task, image_size=size)[task]
    assert answer.result == theirs and answer.text == text and answer.task == task
    tokens = processor.tokenizer.convert_ids_to_tokens(ids)
    is_loc = [bool(_LOC.fullmatch(t)) for t in tokens]

    def decoded(positions) -> str:
        return processor.tokenizer.decode([ids[k] for k in positions], skip_special_tokens=False).strip()

    if isinstance(theirs, str):  # a text answer: all its text tokens, none of its location tokens
        (whole,) = answer.instances
        assert whole.label.tolist() == [k for k in range(len(ids)) if not is_loc[k]]
        assert whole.locs.tolist() == [k for k in range(len(ids)) if is_loc[k]]
        assert whole.phrase == _LOC.sub("", theirs).strip()
        want = gmean(logprobs, whole.label.tolist())
        assert answer.text_score() == pytest.approx(want, rel=1e-9) or (math.isnan(want) and
                                                                        math.isnan(answer.text_score()))
        return 1

    shapes = [("bboxes", "labels"), ("bboxes", "bboxes_labels"), ("quad_boxes", "labels"), ("polygons", "labels"),
              ("polygons", "polygons_labels")]
    expected = [(coords, label, key) for key, labels in shapes if key in theirs and labels in theirs
                for coords, label in zip(theirs[key], theirs[labels])]
    assert answer.instances is not None, text
    assert len(answer.instances) == len(expected), text
    used: set[int] = set()
    scores = {method: answer.scores(method) for method in ("locations", "label", "locations+label")}
    for n, (instance, (coords, label, key)) in enumerate(zip(answer.instances, expected)):
        positions = instance.locs.tolist()
        assert all(is_loc[k] for k in positions), (text, positions)
        assert positions == sorted(positions) and not used & set(positions)
        bins = [int(_LOC.fullmatch(tokens[k]).group(1)) for k in positions]
        if key == "bboxes":
            assert len(bins) == 4
            mine = post.dequantize(torch.tensor([bins]), size=size)[0].tolist()
        else:
            flat = [c for polygon in coords for c in polygon] if key == "polygons" else coords
            mine, coords = post.dequantize(torch.tensor(bins).reshape(-1, 2), size=size).flatten().tolist(), flat
        assert mine == coords, (text, bins)
        label_positions = instance.label.tolist()
        if label:
            assert label_positions == list(range(label_positions[0], label_positions[-1] + 1))
            # transformers' labelled regex may start inside a tag (``<poly>`` gives label "poly>")
            assert decoded(label_positions) in (label, "<" + label), (text, label)
            assert label_positions[-1] < positions[0] or not positions
        else:
            assert label_positions == [], (text, label)
        used |= set(positions)
        labelled = label_positions or positions
        expected_scores = {"locations": gmean(logprobs, positions), "label": gmean(logprobs, labelled),
                           "locations+label": gmean(logprobs, sorted(set(positions) | set(label_positions)))}
        for method, want in expected_scores.items():
            got = float(scores[method][n])
            assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want, rel=1e-5), (text, method)
    return len(expected)


@pytest.mark.parametrize("task", list(TASKS.values()))
def test_random_answers_pair_each_instance_with_the_tokens_that_wrote_it(florence, task: str) -> None:
    rng = np.random.default_rng(sum(map(ord, task)))
    check_answer(florence, task, "", (64, 48), seed=0)  # an empty answer: no instances, or one empty text
    found = 0
    for k in range(40):
        found += check_answer(florence, task, random_answer(rng), SIZES[k % len(SIZES)], seed=k)
    assert found >= 20  # the generator gives every task instances to check, not just empty answers


def test_ocr_lines_the_area_threshold_skips_leave_the_others_paired(florence) -> None:
    ocr = florence.processor.post_processor.parse_task_config["ocr"]
    old = ocr.get("AREA_THRESHOLD", 0.0)
    ocr["AREA_THRESHOLD"] = 0.01
    try:
        rng = np.random.default_rng(7)
        for k in range(40):
            check_answer(florence, "<OCR_WITH_REGION>", random_answer(rng), SIZES[k % len(SIZES)], seed=k)
    finally:
        ocr["AREA_THRESHOLD"] = old


@pytest.mark.parametrize(("text", "label", "positions"), [
    # unlabelled polygons: the label is what follows the first location, as transformers reads it
    ("<loc_1><sep><loc_2><loc_3><loc_4><loc_5><loc_6><loc_7>", "<sep>", [1]),
    ("<loc_9><loc_1></poly><loc_2><loc_3><loc_4><loc_5><loc_6><loc_7>", "", []),
    ("<loc_1></poly><sep><loc_3><loc_4><loc_5><loc_6><loc_7><loc_8>", "</poly><sep>", [1, 2]),
])
def test_the_label_of_an_unlabelled_segmentation_starts_after_its_first_location(florence, text, label, positions):
    task = "<REFERRING_EXPRESSION_SEGMENTATION>"
    ids = florence.processor.tokenizer(text, add_special_tokens=False)["input_ids"]
    answer = florence.answer(task, Generated(np.array(ids), logprobs_of(len(ids), 0), True), (100, 100))
    assert answer.result["labels"] == [label]
    (instance,) = answer.instances
    assert (instance.phrase, instance.label.tolist()) == (label, positions)
    check_answer(florence, task, text, (100, 100), seed=0)
