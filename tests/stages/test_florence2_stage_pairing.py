"""The ``florence2`` stage with answers that depend on what was asked: which image, which prompt, which box.

:class:`Answering` is the real adapter (real tokenizer and processor, tests/fixtures/checkpoints, no weights) whose
``generate`` is a script: each row's answer text is computed from the row's image (its red channel is its number)
and its prompt (the task, the text input, a region's location tokens). Every token gets its own probability. So
an answer given to the wrong image, prompt or box, a row skipped or asked twice, or a score read from the wrong
tokens shows in the labels; the expected labels are worked out here from the script, by transformers' own
dequantization and pycocotools.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable

import numpy as np
import pytest
import supervision as sv

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
from PIL import Image  # noqa: E402
from real_checkpoints import fixture  # noqa: E402

from autolabel import Pipeline  # noqa: E402
from autolabel.labels import DROPPED, KEPT  # noqa: E402
from autolabel.models.florence2 import Florence2, Generated  # noqa: E402
from autolabel.stage import Item  # noqa: E402
from autolabel.geometry import polygons_mask  # noqa: E402
from autolabel.stages.florence2 import polygons_bounds  # noqa: E402

ONTOLOGY = {"car": ["car", "automobile"], "person": ["person", "man"]}
_LOC = re.compile(r"<loc_(\d+)>")
Script = Callable[[int, str], str]


@pytest.fixture(scope="module")
def processor():
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(fixture("florence2"))


def prob(token_id: int, position: int) -> float:
    """Each token's probability: from its id and place, distinct enough that the wrong tokens give another mean."""
    return 0.2 + 0.79 * (((token_id * 7919 + position * 104729) % 1009) / 1009)


class Answering(Florence2):
    """The adapter, answering ``script(image number, prompt)`` for every row (``prompt``: task token + text)."""

    def __init__(self, processor: Any, spec: Any, script: Script, unfinished: Callable[[int, str], bool] = None):
        super().__init__(None, processor, spec, "cpu", None)
        self.script, self.unfinished = script, unfinished or (lambda image, prompt: False)
        self.asked: list[tuple[int, str]] = []

    def generate(self, images, image_index, prompts, generation=None, max_rows=64) -> list[Generated]:
        out = []
        for i, prompt in zip(image_index, prompts):
            number = images[i].getpixel((0, 0))[0]
            self.asked.append((number, prompt))
            ids = self.processor.tokenizer(self.script(number, prompt), add_special_tokens=False)["input_ids"]
            logprobs = np.log([prob(t, k) for k, t in enumerate(ids)])
            out.append(Generated(np.array(ids, dtype=np.int64), logprobs, not self.unfinished(number, prompt)))
        return out


def image(number: int, size: tuple[int, int]) -> Image.Image:
    return Image.new("RGB", size, (number, 90, 40))


def run_stage(processor, script: Script, stages: list[dict], items: list[Item], ontology: Any = ONTOLOGY,
              unfinished=None) -> tuple[list[Item], Answering]:
    pipeline = Pipeline.from_dict({"models": {"florence": {"id": "/nowhere", "generation": {"num_beams": 1}}},
                                   "ontology": ontology, "stages": stages})
    model = Answering(processor, pipeline.config.models["florence"], script, unfinished)
    pipeline.models._loaded["florence"] = model
    return pipeline(items), model


def stage(task: str, **keys: Any) -> dict:
    return {"type": "florence2", "name": keys.pop("name", task), "model": "florence", "task": task, **keys}


def tokens_of(processor, text: str) -> tuple[list[int], list[str]]:
    ids = processor.tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids, processor.tokenizer.convert_ids_to_tokens(ids)


def score(processor, text: str, which: str = "locs") -> float:
    """The geometric mean of the script's probabilities over ``text``'s location tokens (``locs``) or the others."""
    ids, tokens = tokens_of(processor, text)
    want_locs = which == "locs"
    picked = [prob(t, k) for k, (t, tok) in enumerate(zip(ids, tokens)) if bool(_LOC.fullmatch(tok)) == want_locs]
    return math.exp(sum(math.log(p) for p in picked) / len(picked))


def box_scores(processor, text: str) -> list[float]:
    """The geometric mean of the script's probabilities over each run of 4 location tokens of ``text``."""
    ids, tokens = tokens_of(processor, text)
    picked = [prob(t, k) for k, (t, tok) in enumerate(zip(ids, tokens)) if _LOC.fullmatch(tok)]
    return [math.exp(sum(math.log(p) for p in picked[j:j + 4]) / 4) for j in range(0, len(picked), 4)]


def dequantize(processor, bins: list[int], size: tuple[int, int]) -> list[float]:
    points = torch.tensor(bins).reshape(-1, 2)
    return processor.post_processor.dequantize(points, size=size).flatten().tolist()


def loc(*bins: int) -> str:
    return "".join(f"<loc_{b}>" for b in bins)


def with_boxes(item: Item, xyxy: list[list[float]], **columns: list) -> Item:
    n = len(xyxy)
    data = {"class_name": np.array(columns.pop("class_name", ["car"] * n), dtype=object)}
    data |= {k: np.array(v, dtype=object) for k, v in columns.items()}
    item.labels.add(sv.Detections(xyxy=np.array(xyxy, np.float32).reshape(-1, 4),
                                  confidence=np.full(n, 0.5, np.float32), data=data), stage="boxes")
    return item


# -- image tasks: each image its own answer
def od_script(number: int, prompt: str) -> str:
    assert prompt == "<OD>"
    a = 10 * number
    return "car" + loc(a, a + 1, a + 300, a + 400) + (" man" + loc(900 - a, 5, 990 - a, 7) if number % 2 else "")


def test_each_image_of_a_batch_gets_the_boxes_of_its_own_answer(processor) -> None:
    sizes = [(640, 480), (300, 500), (123, 77), (500, 500)]
    items = [Item.of(image(k + 1, size)) for k, size in enumerate(sizes)]
    items, model = run_stage(processor, od_script, [stage("od")], items)
    assert model.asked == [(k + 1, "<OD>") for k in range(4)]
    for k, (item, size) in enumerate(zip(items, sizes)):
        number, det = k + 1, item.labels.detections
        answer = od_script(number, "<OD>")
        boxes = [dequantize(processor, [int(b) for b in _LOC.findall(answer)[j:j + 4]], size)
                 for j in range(0, len(_LOC.findall(answer)), 4)]
        np.testing.assert_array_equal(det.xyxy, np.array(boxes, np.float32))
        assert det.data["class_name"].tolist() == ["car", "person"][: len(boxes)]
        assert det.data["phrase"].tolist() == ["car", "man"][: len(boxes)]
        np.testing.assert_allclose(det.confidence, box_scores(processor, answer), rtol=1e-5)


def test_proposals_and_ocr_regions_follow_their_image(processor) -> None:
    def script(number: int, prompt: str) -> str:
        a = 100 * number
        if prompt == "<REGION_PROPOSAL>":
            return loc(a, a, a + 50, a + 60) * number
        return f"T{number}" + loc(a, a, a + 80, a, a + 80, a + 40, a, a + 40)

    sizes = [(400, 300), (200, 600), (640, 480)]
    items = [Item.of(image(k + 1, s)) for k, s in enumerate(sizes)]
    items, _ = run_stage(processor, script, [stage("proposals", label="car"), stage("ocr_regions", score="label")],
                         items, ontology={"car": None, "text": None})
    for k, (item, size) in enumerate(zip(items, sizes)):
        number, det = k + 1, item.labels.detections
        a = 100 * number
        box = dequantize(processor, [a, a, a + 50, a + 60], size)
        quad = dequantize(processor, [a, a, a + 80, a, a + 80, a + 40, a, a + 40], size)
        assert det.data["stage"].tolist() == ["proposals"] * number + ["ocr_regions"]
        np.testing.assert_array_equal(det.xyxy[:number], [box] * number)
        assert det.data["class_name"].tolist() == ["car"] * number + [""]
        np.testing.assert_array_equal(det.data["quad"][number], quad)
        assert det.data["text"][number] == f"T{number}" and det.data["phrase"].tolist() == [""] * (number + 1)
        np.testing.assert_array_equal(det.xyxy[number], [quad[0], quad[1], quad[2], quad[5]])
        ocr = script(number, "<OCR_WITH_REGION>")
        assert det.confidence[number] == pytest.approx(score(processor, ocr, "text"), rel=1e-5)  # score: label


def test_open_vocabulary_rows_follow_image_and_prompt(processor) -> None:
    def script(number: int, prompt: str) -> str:
        asked = prompt.removeprefix("<OPEN_VOCABULARY_DETECTION>")
        a = 10 * number + (0 if asked == "car" else 500)
        if asked == "man":
            return "a man<poly>" + loc(a, a, a + 90, a, a + 90, a + 90) + "</poly>"
        return asked + loc(a, a, a + 100, a + 100)

    sizes = [(200, 100), (100, 300)]
    items = [Item.of(image(k + 1, s)) for k, s in enumerate(sizes)]
    items, model = run_stage(processor, script, [stage("ovd", prompts=["car", "man", "dog"], unmapped="keep")], items)
    assert [p for _, p in model.asked] == ["<OPEN_VOCABULARY_DETECTION>" + p for p in ["car", "man", "dog"] * 2]
    for k, (item, size) in enumerate(zip(items, sizes)):
        det, a = item.labels.detections, 10 * (k + 1)
        assert det.data["class_name"].tolist() == ["car", "person", ""]
        assert det.data["has_mask"].tolist() == [False, True, False]
        np.testing.assert_array_equal(det.xyxy[0], dequantize(processor, [a, a, a + 100, a + 100], size))
        triangle = dequantize(processor, [a + 500, a + 500, a + 590, a + 500, a + 590, a + 590], size)
        np.testing.assert_array_equal(det.xyxy[1], polygons_bounds([triangle]))
        np.testing.assert_array_equal(det.mask[1], coco_mask([triangle], size))
        np.testing.assert_array_equal(det.data["polygon"][1], np.reshape(triangle, (-1, 2)))
        assert det.confidence[1] == pytest.approx(score(processor, script(k + 1, "<OPEN_VOCABULARY_DETECTION>man")))


def coco_mask(polygons: list[list[float]], size: tuple[int, int]) -> np.ndarray:
    from pycocotools import mask as mask_utils

    w, h = size
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygons, h, w))).astype(bool)


# -- text tasks
def test_captions_follow_their_image_and_empty_ones_add_nothing(processor) -> None:
    def script(number: int, prompt: str) -> str:
        return "   " if number == 2 else f"picture {number}"

    items = [Item.of(image(k + 1, (50, 40))) for k in range(3)]
    items, _ = run_stage(processor, script, [stage("caption")], items)
    assert [[t.text for t in item.labels.texts] for item in items] == [["picture 1"], [], ["picture 3"]]
    for item in (items[0], items[2]):
        (text,) = item.labels.texts
        assert text.score == pytest.approx(score(processor, text.text, "text"), rel=1e-6)
        assert (text.kind, text.stage) == ("caption", "caption")
    assert all("caption" in item.labels.provenance for item in items)


def test_grounding_asks_only_images_with_a_kept_caption_and_each_gets_its_own(processor) -> None:
    def script(number: int, prompt: str) -> str:
        if prompt == "<CAPTION>":
            return {1: "a car", 2: "  ", 3: "a  man", 4: "a car"}[number]
        assert prompt.startswith("<CAPTION_TO_PHRASE_GROUNDING>")
        caption = prompt.removeprefix("<CAPTION_TO_PHRASE_GROUNDING>")
        b = 100 * number
        return caption.removeprefix("a ") + loc(b, b, b + 10, b + 10)

    items = [Item.of(image(k + 1, (1000, 1000))) for k in range(4)]
    items, model = run_stage(processor, script, [stage("caption", name="cap"), stage("grounding", caption_from="cap")],
                             items)
    asked = [(n, p) for n, p in model.asked if p != "<CAPTION>"]
    assert asked == [(1, "<CAPTION_TO_PHRASE_GROUNDING>a car"), (3, "<CAPTION_TO_PHRASE_GROUNDING>a man"),
                     (4, "<CAPTION_TO_PHRASE_GROUNDING>a car")]
    classes = [item.labels.detections.data["class_name"].tolist() for item in items]
    assert classes == [["car"], [], ["person"], ["car"]]
    for k in (0, 2, 3):
        b = 100 * (k + 1)
        np.testing.assert_array_equal(items[k].labels.detections.xyxy,
                                      [dequantize(processor, [b, b, b + 10, b + 10], (1000, 1000))])
    assert "grounding" in items[1].labels.provenance


def test_answers_cut_short_or_unpaired_are_counted_per_image(processor) -> None:
    def script(number: int, prompt: str) -> str:
        return "car" + loc(1, 2, 3, 4)

    items = [Item.of(image(k + 1, (100, 100))) for k in range(3)]
    items, _ = run_stage(processor, script, [stage("od")], items, unfinished=lambda n, p: n != 2)
    assert [item.labels.provenance["od"].get("truncated_answers") for item in items] == [1, None, 1]
    assert "unscored_answers" not in items[0].labels.provenance["od"]


# -- region tasks: each box its own answer
def box_bins(prompt: str, token: str) -> list[int]:
    assert prompt.startswith(token), prompt
    bins = [int(b) for b in _LOC.findall(prompt)]
    assert len(bins) == 4 and prompt == token + loc(*bins)
    return bins


def category_script(number: int, prompt: str) -> str:
    x1, y1, x2, y2 = box_bins(prompt, "<REGION_TO_CATEGORY>")
    return ("automobile" if x1 < 500 else "giraffe") + loc(x1, y1, x2, y2)


def region_items() -> list[Item]:
    """Three images: boxes of every kind a region task must skip or answer, in a different order in each."""
    first = with_boxes(Item.of(image(1, (1000, 500))),
                       [[100, 100, 200, 200], [600, 50, 900, 450], [300, 300, 300, 400], [50, 50, 150, 60]],
                       status=[KEPT, KEPT, KEPT, DROPPED], reason=["", "", "", "low_score"])
    second = Item.of(image(2, (200, 200)))  # no boxes at all
    third = with_boxes(Item.of(image(3, (400, 800))), [[300, 400, 390, 790], [10, 10, 100, 700], [0, 0, 20, 700]],
                       phrase=["", "already named", ""])
    return [first, second, third]


@pytest.mark.parametrize("overwrite", [False, True])
def test_region_category_answers_each_box_it_should_in_its_own_row(processor, overwrite: bool) -> None:
    items, model = run_stage(processor, category_script, [stage("region_category", overwrite=overwrite)],
                             region_items())
    token = "<REGION_TO_CATEGORY>"
    bins = [(n, box_bins(p, token)) for n, p in model.asked]
    # image 1: the degenerate (zero-width) and the dropped box are not asked; image 3: the named one unless overwrite
    want = [(1, [100, 200, 200, 400]), (1, [600, 100, 900, 900]), (3, [750, 500, 975, 987])]
    want += [(3, [25, 12, 250, 875])] * overwrite + [(3, [0, 0, 50, 875])]
    assert bins == want
    first, third = items[0].labels.detections, items[2].labels.detections
    assert first.data["phrase"].tolist() == ["automobile", "giraffe", "", ""]
    assert first.data["class_name"].tolist() == ["car", "car", "car", "car"]  # giraffe: unmapped, kept as it was
    assert first.data["status"].tolist() == [KEPT, KEPT, KEPT, DROPPED]
    text = category_script(1, token + loc(100, 200, 200, 400))
    assert first.data["phrase_score"][0] == pytest.approx(score(processor, text, "text"), rel=1e-5)
    assert np.isnan(first.data["phrase_score"][2:].astype(float)).all()
    assert third.data["phrase"].tolist() == ["giraffe", "automobile" if overwrite else "already named", "automobile"]
    assert len(items[1].labels.detections) == 0 and "region_category" in items[1].labels.provenance
    assert items[0].labels.provenance["region_category"]["unmapped"] == "keep"


def test_region_category_drops_unmapped_phrases_when_asked(processor) -> None:
    items, _ = run_stage(processor, category_script, [stage("region_category", unmapped="drop")], region_items())
    data = items[0].labels.detections.data
    assert data["status"].tolist() == [KEPT, DROPPED, KEPT, DROPPED]
    assert data["reason"].tolist() == ["", "unmapped_phrase", "", "low_score"]
    assert items[0].labels.provenance["region_category"]["unmapped"] == "drop"


def test_region_tasks_ask_only_the_boxes_of_from_stages(processor) -> None:
    def script(number: int, prompt: str) -> str:
        return "box at " + ",".join(map(str, box_bins(prompt, "<REGION_TO_DESCRIPTION>")))

    items = [with_boxes(Item.of(image(k + 1, (400, 400))), [[0, 0, 40, 40]]) for k in range(2)]
    stages = [{"type": "plugins:CenterBox", "name": "center", "label": "car"},
              stage("region_description", from_stages=["center"])]
    items, model = run_stage(processor, script, stages, items)
    assert [n for n, _ in model.asked] == [1, 2]
    for item in items:
        assert item.labels.detections.data["description"].tolist() == ["", "box at 250,250,750,750"]
        assert item.labels.provenance["region_description"]["prompt"] == (
            "<REGION_TO_DESCRIPTION> with each box of stages center")


def segmentation_script(number: int, prompt: str) -> str:
    """A triangle (exactly 3 points) in the box; two triangles for wide boxes; a bare segment for thin ones."""
    x1, y1, x2, y2 = box_bins(prompt, "<REGION_TO_SEGMENTATION>")
    if x2 - x1 < 60:
        return loc(x1, y1, x2, y2)  # 2 points: no area, the row keeps no mask
    triangle = loc(x1, y1, x2, y1, x1, y2)
    if x2 - x1 > 250:
        return "<poly>" + triangle + "</poly><poly>" + loc(x2, y2, x2, y1 + 1, x1 + 1, y2) + "</poly>"
    return triangle


def test_region_segmentation_masks_each_box_with_its_own_polygons(processor) -> None:
    items, model = run_stage(processor, segmentation_script, [stage("region_segmentation")], region_items())
    token = "<REGION_TO_SEGMENTATION>"
    boxes = {1: [[100, 200, 200, 400], [600, 100, 900, 900], None, None],  # degenerate and dropped: not asked
             3: [[750, 500, 975, 987], [25, 12, 250, 875], [0, 0, 50, 875]]}
    assert [(n, box_bins(p, token)) for n, p in model.asked] == [(n, b) for n, bs in boxes.items() for b in bs if b]
    for item, number in ((items[0], 1), (items[2], 3)):
        det, size = item.labels.detections, item.image.size
        has_mask = []
        for row, bins in enumerate(boxes[number]):
            answer = segmentation_script(number, token + loc(*bins)) if bins else ""
            polygons = [dequantize(processor, [int(b) for b in _LOC.findall(part)], size)
                        for part in answer.split("</poly><poly>") if answer]
            polygons = [p for p in polygons if len(p) >= 6]
            has_mask.append(bool(polygons))
            if polygons:
                assert det.data["mask_stage"][row] == "region_segmentation"
                np.testing.assert_array_equal(det.mask[row], coco_mask(polygons, size))
                assert det.data["mask_score"][row] == pytest.approx(score(processor, answer), rel=1e-5)
            else:
                assert np.isnan(float(det.data["mask_score"][row])) and not det.mask[row].any()
        assert det.data["has_mask"].tolist() == has_mask
    assert items[0].labels.detections.data["has_mask"].tolist() == [True, True, False, False]
    assert items[2].labels.detections.data["has_mask"].tolist() == [True, True, False]  # the thin one: a segment
    np.testing.assert_array_equal(items[0].labels.detections.xyxy[:2], [[100, 100, 200, 200], [600, 50, 900, 450]])


def test_polygons_mask_and_bounds() -> None:
    square = [10, 10, 30, 10, 30, 20, 10, 20]
    mask = polygons_mask([square, [0, 0, 5, 5]], 40, 50)  # a 2-point polygon adds nothing
    assert mask.shape == (40, 50) and mask.dtype == bool
    np.testing.assert_array_equal(mask, coco_mask([square], (50, 40)))
    empty = polygons_mask([[1, 2, 3, 4]], 7, 9)
    assert empty.shape == (7, 9) and empty.dtype == bool and not empty.any()
    assert polygons_mask([], 3, 4).shape == (3, 4)
    triangle = polygons_mask([[0, 0, 8, 0, 0, 8]], 10, 10)
    assert triangle.any() and triangle[1, 1] and not triangle[8, 8]
    np.testing.assert_array_equal(polygons_bounds([[5, 6, 1, 9], [7, 2, 3, 3], []]), [1, 2, 7, 9])


def test_several_text_lines_and_polygons_of_one_answer_are_rows_in_their_order(processor) -> None:
    """Answers with more than one quad or polygon: each becomes its own row, in the answer's order."""
    quads = [[10 * j, 5, 10 * j + 60, 5, 10 * j + 60, 30, 10 * j, 30] for j in range(1, 4)]
    triangles = [[20 * j, 20, 20 * j + 90, 20, 20 * j + 90, 110] for j in range(1, 3)]

    def script(number: int, prompt: str) -> str:
        if prompt == "<OCR_WITH_REGION>":
            return "".join(f"L{j}" + loc(*q) for j, q in enumerate(quads))
        return "".join("a man<poly>" + loc(*t) + "</poly>" for t in triangles)

    size = (400, 300)
    stages = [stage("ocr_regions"), stage("ovd", prompts=["man"], unmapped="keep")]
    (item,), _ = run_stage(processor, script, stages, [Item.of(image(1, size))], ontology={"text": None, "man": None})
    det = item.labels.detections
    assert det.data["stage"].tolist() == ["ocr_regions"] * 3 + ["ovd"] * 2
    assert det.data["text"][:3].tolist() == ["L0", "L1", "L2"]
    for j, q in enumerate(quads):
        quad = dequantize(processor, q, size)
        np.testing.assert_array_equal(det.data["quad"][j], quad)
        np.testing.assert_array_equal(det.xyxy[j], [quad[0], quad[1], quad[2], quad[5]])
    for j, t in enumerate(triangles):
        points = np.asarray(dequantize(processor, t, size)).reshape(-1, 2)
        np.testing.assert_allclose(det.xyxy[3 + j], [*points.min(0), *points.max(0)], atol=1)
        np.testing.assert_array_equal(det.data["polygon"][3 + j], points.astype(np.float32))
