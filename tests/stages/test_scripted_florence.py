"""Florence-2 end to end with a model whose answer depends on its input (tests/support/scripted_florence.py): each image
gets its own detections, each region box its own category, each open-vocabulary prompt its own box, each answer
its own token probability. So a batch row given another image's features, a region answer paired with the wrong
box, a prompt swapped, or a score taken from another row shows — and an image's labels must not depend on the
batch size, its neighbours, ``max_rows`` or the input order.

Every expected value is computed here from the script and Florence-2's quantization rule (a bin ``b`` of a side
``S`` is the pixel ``int((b + 0.5) * S / 1000)``; a pixel ``x`` is the bin ``floor(x * 1000 / S)``).
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from scripted_florence import Case, make_scripted_florence
from tiny_models import noise_image

from autolabel import Pipeline
from autolabel.config import parse
from autolabel.models.pool import ModelPool
from autolabel.store import Store

pytestmark = pytest.mark.slow  # builds a checkpoint (~10 s idle) and runs a dozen small pipelines

ONTOLOGY = ["car", "dog", "person", "cat", "truck", "bird"]
SIZES = {"a.png": (80, 60), "b.png": (64, 96), "c.png": (100, 50), "d.png": (72, 72)}
#: per image: its OD answer as (label, bins) boxes, that answer's token probability, and per box its region
#: category answer and probability
OD = {
    "a.png": ([("car", (100, 200, 300, 400)), ("dog", (500, 500, 900, 950))], 0.9, [("truck", 0.95), ("bird", 0.55)]),
    "b.png": ([("person", (50, 60, 700, 800))], 0.8, [("cat", 0.85)]),
    "c.png": ([("cat", (10, 20, 300, 400))], 0.7, [("person", 0.75)]),
    "d.png": ([("dog", (600, 100, 990, 300)), ("car", (0, 0, 500, 500))], 0.6, [("bird", 0.65), ("truck", 0.9)]),
}
#: a caption of a.png, and what grounding that caption answers
CAPTION, GROUNDED = "a dog on the grass", ((100, 100, 500, 500), 0.8)
#: open-vocabulary detection: (image, prompt) → box bins, probability
OVD = {
    ("a.png", "car"): ((0, 0, 400, 400), 0.9), ("a.png", "dog"): ((600, 600, 999, 999), 0.8),
    ("b.png", "car"): ((100, 500, 300, 900), 0.7), ("b.png", "dog"): ((50, 50, 950, 150), 0.6),
}


def pixel(b: int, side: int) -> int:
    return int((b + 0.5) * side / 1000)


def bin_of(x: float, side: int) -> int:
    return min(999, max(0, math.floor(x / (side / 1000))))


def box(bins: tuple[int, int, int, int], size: tuple[int, int]) -> list[float]:
    w, h = size
    return [float(pixel(bins[0], w)), float(pixel(bins[1], h)), float(pixel(bins[2], w)), float(pixel(bins[3], h))]


def locs(bins: tuple[int, ...]) -> str:
    return "".join(f"<loc_{b}>" for b in bins)


def region_prompt(bins: tuple[int, int, int, int], size: tuple[int, int]) -> str:
    """What a region task is asked about an OD box: the box's pixels quantized again."""
    x1, y1, x2, y2 = box(bins, size)
    w, h = size
    return "<REGION_TO_CATEGORY>" + locs((bin_of(x1, w), bin_of(y1, h), bin_of(x2, w), bin_of(y2, h)))


def images() -> dict:
    return {name: noise_image(w, h, seed=k + 1) for k, (name, (w, h)) in enumerate(SIZES.items())}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> str:
    script = []
    for name, image in images().items():
        boxes, prob, regions = OD[name]
        script.append(Case(image, "<OD>", "".join(label + locs(bins) for label, bins in boxes), prob))
        for (_, bins), (category, p) in zip(boxes, regions):
            script.append(Case(image, region_prompt(bins, image.size), category, p))
    a = images()["a.png"]
    script.append(Case(a, "<CAPTION>", CAPTION, 0.9))
    script.append(Case(a, "<CAPTION_TO_PHRASE_GROUNDING>" + CAPTION, "a dog" + locs(GROUNDED[0]), GROUNDED[1]))
    for (name, prompt), (bins, prob) in OVD.items():
        script.append(Case(images()[name], "<OPEN_VOCABULARY_DETECTION>" + prompt, prompt + locs(bins), prob))
    return str(make_scripted_florence(tmp_path_factory.mktemp("scripted"), script))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("in")
    for name, image in images().items():
        image.save(folder / name)
    return folder


_POOLS: dict[str, ModelPool] = {}  # one loaded model for every pipeline of this module: they declare the same


def build(checkpoint: str, data: dict) -> Pipeline:
    data = {"models": {"f": {"type": "florence2", "id": checkpoint, "generation": {"max_new_tokens": 24}}},
            "ontology": ONTOLOGY} | data
    built = Pipeline(parse(data), models=_POOLS.get(checkpoint))
    _POOLS.setdefault(checkpoint, built.models)
    return built


def pipeline(checkpoint: str, batch_size: int = 4, max_rows: int = 64, num_beams: int = 3) -> Pipeline:
    generation = {"num_beams": num_beams}
    return build(checkpoint, {
        "batch_size": batch_size,
        "stages": [
            {"type": "florence2", "name": "detect", "model": "f", "task": "od", "max_rows": max_rows,
             "generation": generation},
            {"type": "florence2", "name": "categorize", "model": "f", "task": "region_category",
             "overwrite": True, "max_rows": max_rows,  # OD's phrases are there: categorize them anew
             "generation": generation},
        ],
        "exports": [{"format": "coco"}],
    })


def labeled(out: Path) -> dict[str, list[tuple]]:
    """Per image, its rows as (box, class, phrase, score, phrase score), from the store."""
    with Store(out) as store:
        rows = {}
        for image in store.images():
            boxes = image["labels"]["boxes"]
            data = boxes["data"]
            rows[image["rel_path"]] = [
                (xyxy, data["class_name"][k], data["phrase"][k], round(boxes["confidence"][k], 4),
                 round(data["phrase_score"][k], 4))
                for k, xyxy in enumerate(boxes["xyxy"])
            ]
    return rows


def expected() -> dict[str, list[tuple]]:
    out = {}
    for name, (boxes, prob, regions) in OD.items():
        out[name] = [(box(bins, SIZES[name]), category, category, round(prob, 4), round(p, 4))
                     for (_, bins), (category, p) in zip(boxes, regions)]
    return out


def run(checkpoint: str, folder: Path, out: Path, **kw: int) -> dict[str, list[tuple]]:
    summary = pipeline(checkpoint, **kw).run(folder, out)
    assert summary.exit_code == 0, summary.failures
    return labeled(out)


def test_each_image_gets_its_own_boxes_and_each_box_its_own_category(
    checkpoint: str, inputs: Path, tmp_path: Path
) -> None:
    assert run(checkpoint, inputs, tmp_path / "out") == expected()


@pytest.mark.parametrize("batch_size,max_rows,num_beams", [(1, 64, 3), (3, 1, 1), (2, 3, 2)])
def test_labels_do_not_depend_on_batch_size_max_rows_or_beams(
    checkpoint: str, inputs: Path, tmp_path: Path, batch_size: int, max_rows: int, num_beams: int
) -> None:
    got = run(checkpoint, inputs, tmp_path / "out", batch_size=batch_size, max_rows=max_rows, num_beams=num_beams)
    assert got == expected()


def test_labels_do_not_depend_on_neighbours_or_input_order(checkpoint: str, inputs: Path, tmp_path: Path) -> None:
    want = expected()
    for k, names in enumerate([["d.png", "c.png", "b.png", "a.png"], ["c.png", "a.png"]]):
        listing = tmp_path / f"list{k}.txt"
        listing.write_text("".join(str(inputs / n) + "\n" for n in names))  # this order, these neighbours
        got = run(checkpoint, listing, tmp_path / f"out{k}", batch_size=2)
        assert got == {n: want[n] for n in names}


def test_a_duplicated_image_in_a_batch_gets_the_same_labels_in_both_rows(
    checkpoint: str, inputs: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "in"
    shutil.copytree(inputs, folder)
    shutil.copyfile(folder / "a.png", folder / "a2.png")  # two rows of one content, beside the others
    got = run(checkpoint, folder, tmp_path / "out")
    assert got["a2.png"] == got["a.png"] == expected()["a.png"]


def test_open_vocabulary_prompts_each_get_their_own_answer(checkpoint: str, inputs: Path, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        shutil.copyfile(inputs / name, folder / name)
    for max_rows in (64, 3):
        summary = build(checkpoint, {
            "stages": [{"type": "florence2", "model": "f", "task": "ovd", "prompts": ["car", "dog"],
                        "max_rows": max_rows}],
        }).run(folder, tmp_path / f"out{max_rows}")
        assert summary.exit_code == 0
        with Store(tmp_path / f"out{max_rows}") as store:
            got = {
                (im["rel_path"], cls): (xyxy, round(score, 4))
                for im in store.images()
                for xyxy, cls, score in zip(im["labels"]["boxes"]["xyxy"], im["labels"]["boxes"]["data"]["class_name"],
                                            im["labels"]["boxes"]["confidence"])
            }
        assert got == {key: (box(bins, SIZES[key[0]]), round(p, 4)) for key, (bins, p) in OVD.items()}


@pytest.mark.parametrize("min_chars,grounded", [(5, True), (100, False)])
def test_grounding_uses_the_caption_only_while_no_filter_dropped_it(
    checkpoint: str, inputs: Path, tmp_path: Path, min_chars: int, grounded: bool
) -> None:
    (tmp_path / "in").mkdir()
    shutil.copyfile(inputs / "a.png", tmp_path / "in" / "a.png")
    summary = build(checkpoint, {"stages": [
        {"type": "florence2", "name": "caption", "model": "f", "task": "caption"},
        {"type": "text_length", "min_chars": min_chars},  # 100: drops the 18-character caption
        {"type": "florence2", "name": "ground", "model": "f", "task": "grounding", "caption_from": "caption",
         "unmapped": "keep"},
    ]}).run(tmp_path / "in", tmp_path / "out")
    assert summary.exit_code == 0
    with Store(tmp_path / "out") as store:
        (labels,) = [im["labels"] for im in store.images()]
    assert [(t["text"], t["status"]) for t in labels["texts"]] == [(CAPTION, "kept" if grounded else "dropped")]
    boxes = labels["boxes"]
    if grounded:
        assert boxes["xyxy"] == [box(GROUNDED[0], SIZES["a.png"])] and boxes["data"]["phrase"] == ["a dog"]
        assert boxes["confidence"][0] == pytest.approx(GROUNDED[1], abs=1e-4)
    else:
        assert boxes["xyxy"] == []  # a dropped caption is not grounded


def test_the_scripted_model_really_reads_the_image(checkpoint: str) -> None:
    """Guards the fixture: the same prompt about another image gives another answer, straight from transformers."""
    import torch
    from transformers import AutoProcessor, Florence2ForConditionalGeneration

    model = Florence2ForConditionalGeneration.from_pretrained(checkpoint).eval()
    processor = AutoProcessor.from_pretrained(checkpoint)
    pictures = list(images().values())
    batch = processor(text=["<OD>"] * 4, images=pictures[::-1], return_tensors="pt")
    with torch.no_grad():
        texts = processor.batch_decode(model.generate(**batch, max_new_tokens=40, num_beams=1),
                                       skip_special_tokens=True)
    assert texts == ["".join(label + locs(bins) for label, bins in OD[name][0]) for name in list(OD)[::-1]]
    assert len(set(texts)) == 4
    assert np.array(pictures[0]).std() > 10  # noise, not a flat colour
