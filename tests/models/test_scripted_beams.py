"""Beam search made visible: a scripted Florence-2 (tests/support/scripted_florence.py) whose decoding *trees* make
greedy decoding and beam search disagree, differently in each row of one batch.

* ``a.png`` (OD and caption): the most probable first token leads on to improbable tokens, another first token to
  probable ones: greedy answers one thing, beam search another.
* ``b.png``: an alternative branch beam search keeps alive but never picks: greedy = beam.
* ``c.png``: two branches share their first two tokens and part ways at the third: the beam that wins was split off
  from another beam mid-answer.

Every expected value is computed here from the script: which branch each decoding picks (greedy: the most probable
token at each step; beam search: best mean log-probability, ``</s>`` counted, transformers' default
``length_penalty`` of 1), the branch's boxes by Florence-2's quantization rule, and the scores autolabel defines
(:mod:`autolabel.models.florence2_scores`: a box's confidence is the geometric mean of its location tokens'
probabilities, or of its location and label tokens' with ``score: locations+label``; a caption's, of its text
tokens'). A score read at another beam, another row, or a beam index ignored shows as a wrong number.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from scripted_florence import Branch, Case, make_scripted_florence
from tiny_florence import answer_tokens
from tiny_models import noise_image

from autolabel import Pipeline
from autolabel.config import parse
from autolabel.models.pool import ModelPool
from autolabel.store import Store

ONTOLOGY = ["car", "cat", "dog", "person", "truck"]
SIZES = {"a.png": (80, 60), "b.png": (64, 96), "c.png": (100, 50)}


def od(label: str, bins: tuple[int, int, int, int], first: tuple[float, ...], locs: tuple[float, ...],
       end: float) -> Branch:
    """An OD answer of one box: ``first`` for the label's tokens, ``locs`` for its four location tokens."""
    assert len(first) == len(label) and len(locs) == 4
    return Branch(label + "".join(f"<loc_{b}>" for b in bins), (*first, *locs, end))


#: per image: its OD decoding tree, the answer written first (the others are branches)
OD = {
    "a.png": [od("car", (100, 200, 300, 400), (0.55, 0.6, 0.5), (0.5, 0.45, 0.6, 0.4), 0.5),
              od("dog", (500, 510, 900, 950), (0.4, 0.95, 0.9), (0.92, 0.85, 0.97, 0.9), 0.95)],
    "b.png": [od("person", (50, 60, 700, 800), (0.6, 0.9, 0.85, 0.95, 0.9, 0.92), (0.88, 0.93, 0.8, 0.91), 0.9),
              od("cat", (10, 20, 300, 400), (0.3, 0.7, 0.75), (0.7, 0.72, 0.74, 0.76), 0.7)],
    "c.png": [od("cat", (20, 30, 600, 700), (0.9, 0.85, 0.55), (0.45, 0.5, 0.4, 0.55), 0.6),
              od("car", (300, 100, 800, 900), (0.9, 0.85, 0.4), (0.96, 0.9, 0.93, 0.95), 0.9)],
}
#: a.png's caption tree: greedy reads "a cat", beam search "the dog"
CAPTIONS = [Branch("a cat", (0.5, 0.6, 0.55, 0.5, 0.6, 0.5)),
            Branch("the dog", (0.45, 0.95, 0.9, 0.9, 0.92, 0.94, 0.9, 0.95))]


def probs(branch: Branch) -> list[float]:
    return list(branch.prob)  # type: ignore[arg-type]


def greedy(branches: list[Branch]) -> Branch:
    """Greedy decoding's branch: at each step the most probable scripted token (branches that share a prefix agree
    on it, so comparing the first token where they differ is enough)."""
    alive = list(branches)
    for t in range(max(len(answer_tokens(b.answer)) for b in branches) + 1):
        tokens = {id(b): (answer_tokens(b.answer) + ["</s>"])[t] for b in alive}
        best = max(alive, key=lambda b: probs(b)[t])
        alive = [b for b in alive if tokens[id(b)] == tokens[id(best)]]
        if len(alive) == 1 or tokens[id(best)] == "</s>":
            return alive[0]
    raise AssertionError("no branch ends")


def beam(branches: list[Branch]) -> Branch:
    """Beam search's branch: the best mean log-probability over its tokens and its ``</s>``."""
    return max(branches, key=lambda b: sum(math.log(p) for p in probs(b)) / len(probs(b)))


def chosen(name: str, num_beams: int) -> Branch:
    return greedy(OD[name]) if num_beams == 1 else beam(OD[name])


def pixel(b: int, side: int) -> int:
    return int((b + 0.5) * side / 1000)


def box(branch: Branch, size: tuple[int, int]) -> list[float]:
    x1, y1, x2, y2 = (int(b) for b in re.findall(r"<loc_(\d+)>", branch.answer))
    w, h = size
    return [float(pixel(x1, w)), float(pixel(y1, h)), float(pixel(x2, w)), float(pixel(y2, h))]


def label(branch: Branch) -> str:
    return branch.answer[: branch.answer.index("<")]


def geometric_mean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def box_score(branch: Branch, method: str) -> float:
    """What autolabel's ``score`` method makes of the branch's one box: over its location tokens (they follow the
    label), with its label tokens too for ``locations+label``."""
    n = len(label(branch))
    locs = probs(branch)[n : n + 4]
    return geometric_mean(locs + probs(branch)[:n] if method == "locations+label" else locs)


def text_score(branch: Branch) -> float:
    return geometric_mean(probs(branch)[:-1])  # every text token, not the </s>


def images() -> dict:
    return {name: noise_image(w, h, seed=k + 11) for k, (name, (w, h)) in enumerate(SIZES.items())}


def test_the_script_makes_greedy_and_beam_search_disagree_where_intended() -> None:
    """Guards the data: a.png and c.png's greedy branch starts (or goes on) more probable yet ends worse."""
    for name in ("a.png", "c.png"):
        assert greedy(OD[name]) is OD[name][0] and beam(OD[name]) is OD[name][1]
    assert greedy(OD["b.png"]) is beam(OD["b.png"]) is OD["b.png"][0]
    assert greedy(CAPTIONS) is CAPTIONS[0] and beam(CAPTIONS) is CAPTIONS[1]
    for a, b in OD.values():  # the other beam's score is told apart at any tolerance used below
        assert all(abs(box_score(a, m) - box_score(b, m)) > 0.05 for m in ("locations", "locations+label"))
    assert abs(text_score(CAPTIONS[0]) - text_score(CAPTIONS[1])) > 0.05


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> str:
    pictures = images()
    script = [Case(pictures[name], "<OD>", first.answer, first.prob, tuple(rest))
              for name, (first, *rest) in OD.items()]
    script.append(Case(pictures["a.png"], "<CAPTION>", CAPTIONS[0].answer, CAPTIONS[0].prob, tuple(CAPTIONS[1:])))
    script += [Case(pictures[name], "<CAPTION>", text, 0.8) for name, text in (("b.png", "grass"), ("c.png", "sky"))]
    return str(make_scripted_florence(tmp_path_factory.mktemp("beams"), script))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("in")
    for name, image in images().items():
        image.save(folder / name)
    return folder


_POOLS: dict[str, ModelPool] = {}  # one loaded model for every pipeline of this module


def run(checkpoint: str, source: Path, out: Path, num_beams: int, score: str = "locations", max_rows: int = 64) -> dict:
    """Per image: (box, class, confidence) of each row and (caption, its score), from the store."""
    generation = {"num_beams": num_beams}
    pipeline = Pipeline(parse({
        "models": {"f": {"type": "florence2", "id": checkpoint, "generation": {"max_new_tokens": 24}}},
        "ontology": ONTOLOGY,
        "batch_size": 3,  # every image in one batch: their beams side by side in one generate
        "stages": [
            {"type": "florence2", "name": "detect", "model": "f", "task": "od", "score": score,
             "generation": generation, "max_rows": max_rows},
            {"type": "florence2", "name": "caption", "model": "f", "task": "caption", "generation": generation,
             "max_rows": max_rows},
        ],
    }), models=_POOLS.get(checkpoint))
    _POOLS.setdefault(checkpoint, pipeline.models)
    summary = pipeline.run(source, out)
    assert summary.exit_code == 0, summary.failures
    with Store(out) as store:
        got = {}
        for image in store.images():
            boxes = image["labels"]["boxes"]
            (text,) = image["labels"]["texts"]
            got[image["rel_path"]] = (
                [(xyxy, cls, conf) for xyxy, cls, conf in
                 zip(boxes["xyxy"], boxes["data"]["class_name"], boxes["confidence"])],
                (text["text"], text["score"]),
            )
    return got


@pytest.mark.slow  # builds a checkpoint (~5 s idle), then a pipeline per case
@pytest.mark.parametrize("num_beams,score,order,max_rows", [
    (1, "locations", "abc", 64), (2, "locations", "abc", 64), (3, "locations", "cab", 64),
    (2, "locations+label", "bca", 64), (2, "locations", "cba", 2),  # 2: rows 0-1 in one generate, row 2 in another
])
def test_each_row_gets_the_branch_its_decoding_picks_and_that_branch_s_scores(
    checkpoint: str, inputs: Path, tmp_path: Path, num_beams: int, score: str, order: str, max_rows: int
) -> None:
    listing = tmp_path / "list.txt"  # this order: each image in another row of the batch
    listing.write_text("".join(f"{inputs / (k + '.png')}\n" for k in order))
    got = run(checkpoint, listing, tmp_path / "out", num_beams, score, max_rows)
    assert sorted(got) == sorted(SIZES)
    for name, (rows, (text, text_conf)) in got.items():
        want = chosen(name, num_beams)
        (other,) = [b for b in OD[name] if b is not want]
        ((xyxy, cls, conf),) = rows
        assert (xyxy, cls) == (box(want, SIZES[name]), label(want)), name
        assert conf == pytest.approx(box_score(want, score), abs=1e-4), name
        assert conf != pytest.approx(box_score(other, score), abs=1e-2), name  # not the other beam's
        if name == "a.png":
            caption = greedy(CAPTIONS) if num_beams == 1 else beam(CAPTIONS)
            assert text == caption.answer
            assert text_conf == pytest.approx(text_score(caption), abs=1e-4)
        else:
            assert (text, text_conf) == ({"b.png": "grass", "c.png": "sky"}[name], pytest.approx(0.8, abs=1e-4))


@pytest.mark.slow
def test_beam_search_in_transformers_itself_scores_the_scripted_branches(checkpoint: str) -> None:
    """Guards the fixture, without autolabel: transformers' beam search returns each image's best branch, and its
    per-token scores (read at each token's beam) are that branch's scripted probabilities."""
    import torch
    from transformers import AutoProcessor, Florence2ForConditionalGeneration

    model = Florence2ForConditionalGeneration.from_pretrained(checkpoint).eval()
    processor = AutoProcessor.from_pretrained(checkpoint)
    batch = processor(text=["<OD>"] * 3, images=list(images().values()), return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=24, num_beams=2, do_sample=False, output_scores=True,
                             return_dict_in_generate=True)
    steps = model.compute_transition_scores(out.sequences, out.scores, out.beam_indices, normalize_logits=False)
    for name, seq, lp in zip(OD, out.sequences, steps):
        want = beam(OD[name])
        n = len(probs(want))
        assert processor.decode(seq[1 : n], skip_special_tokens=False) == want.answer
        assert torch.exp(lp[:n]).tolist() == pytest.approx(probs(want), abs=1e-4)


@pytest.mark.parametrize("branches,problem", [
    ([Branch("ab", (0.5, 0.5, 0.5)), Branch("ac", (0.4, 0.3, 0.5))], "disagree"),  # "a" at 0.5 and at 0.4
    ([Branch("ab", (0.4, 0.5, 0.5)), Branch("cb", (0.4, 0.5, 0.5))], "tie"),
    ([Branch("ab", (0.6, 0.5, 0.5)), Branch("cb", (0.5, 0.5, 0.5))], "sum below 1"),
    ([Branch("ab", (0.5, 0.5))], "need 3 probabilities"),
])
def test_the_builder_refuses_a_tree_it_cannot_script(tmp_path: Path, branches: list[Branch], problem: str) -> None:
    first, *rest = branches
    with pytest.raises(ValueError, match=problem):
        make_scripted_florence(tmp_path, [Case(noise_image(64, 64), "<OD>", first.answer, first.prob, tuple(rest))])
