"""What went where: detections and masks stay paired with their image, prompt and box, whatever shares the batch.

An image's labels must not depend on the batch size, on the other images in its batch or on the order of the
inputs; a prompt's detections must be that prompt's; box ``k``'s mask must be the mask SAM gives for box ``k``.
Each check compares against what the model gives for the image (or prompt, or box) alone, or against an answer
computed here from the model's raw output, and first asserts that the answers differ between images, prompts and
boxes — equal answers would hide a swap.

The tiny random checkpoints already depend on image and prompt, except where noted: OWLv2's random box head
saturates (every box spans half the square); SAM's random neck weights are ~1e-10 (the image embedding is ~0, so
every image gets the same masks); SAM and SAM 2's mask logits are ~1e-5 (every stability score is 0) and their
predicted IoUs differ by ~1e-5. :func:`sharpened` rescales those few weights and saves the checkpoint again.
Thresholds are 0 so every query of a detector is a detection.

What the models promise: OWLv2 scores each text query on its own, so a prompt alone gets the same boxes and scores
as in a set. Grounding DINO reads one caption with per-phrase attention and positions, so reordering the prompts
permutes the labels and leaves boxes and scores as they were; but its image features are fused with the whole
caption, so a prompt alone is not promised the boxes it gets in a set (and does not get them).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import supervision as sv
import torch
from numpy.testing import assert_allclose

from autolabel import Pipeline
from autolabel.config import ModelSpec
from autolabel.labels import DROPPED, Labels
from autolabel.models.grounding_dino import GroundingDino
from autolabel.models.outputs import Boxes, Masks
from autolabel.models.owlv2 import Owlv2
from autolabel.models.sam import Sam, Sam2
from autolabel.ontology import Ontology
from autolabel.records import from_record
from autolabel.stage import Item, StageContext
from autolabel.stages.detect import Detect
from autolabel.stages.segment import Segment
from autolabel.store import Store
from tiny_models import Recorder, noise_image, tiny

PROMPTS = ["cat", "traffic light", "dog"]
#: (width, height, seed): two images of one size (a swap between them keeps every size right), and other sizes
IMAGES = {"A": (150, 60, 1), "B": (80, 120, 2), "C": (150, 60, 3), "D": (64, 64, 4)}
#: batches of the images above, with different neighbours and orders
BATCHES = [list("ABCD"), list("DCBA")]
#: at most this share of a mask's pixels may differ between two runs of one box (float noise at a logit of ~0)
PIXEL_NOISE = 1e-3


def image(name: str):
    w, h, seed = IMAGES[name]
    return noise_image(w, h, seed=seed)


def sharpened(kind: str, folder: Path) -> str:
    """The tiny ``kind`` checkpoint with the weights that hide its input rescaled (see the module docstring)."""
    from transformers import AutoProcessor, Owlv2ForObjectDetection, Sam2Model, SamModel

    model_cls = {"owlv2": Owlv2ForObjectDetection, "sam": SamModel, "sam2": Sam2Model}[kind]
    model = model_cls.from_pretrained(tiny(kind))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        if kind == "owlv2":  # boxes near each patch's own prior, moved by the image; scores spread out
            model.box_head.dense2.weight.mul_(0.02)
            model.box_head.dense2.bias.zero_()
            model.class_head.logit_scale.bias.fill_(3.0)
        else:
            if kind == "sam":  # an image embedding of unit scale instead of ~1e-20
                for conv in (model.vision_encoder.neck.conv1, model.vision_encoder.neck.conv2):
                    conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator))
            for mlp in model.mask_decoder.output_hypernetworks_mlps:  # mask logits of ~±1: stability varies
                mlp.proj_out.weight.mul_(1e6)
            model.mask_decoder.iou_prediction_head.proj_out.weight.mul_(1e3)  # IoUs apart by ~0.01-0.1
    model.save_pretrained(folder)
    AutoProcessor.from_pretrained(tiny(kind)).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("sharpened")
    return {"grounding_dino": tiny("grounding_dino"), "owlv2": sharpened("owlv2", root / "owlv2"),
            "sam": sharpened("sam", root / "sam"), "sam2": sharpened("sam2", root / "sam2")}


@pytest.fixture(scope="module")
def detectors(checkpoints) -> dict:
    return {"grounding_dino": GroundingDino.load(ModelSpec(type="grounding_dino", id=checkpoints["grounding_dino"])),
            "owlv2": Owlv2.load(ModelSpec(type="owlv2", id=checkpoints["owlv2"]))}


@pytest.fixture(scope="module")
def segmenters(checkpoints) -> dict:
    return {"sam": Sam.load(ModelSpec(type="sam", id=checkpoints["sam"])),
            "sam2": Sam2.load(ModelSpec(type="sam2", id=checkpoints["sam2"]))}


def detect(model, images: list, prompts=PROMPTS) -> list[Boxes]:
    kwargs = {"text_threshold": 0.0} if isinstance(model, GroundingDino) else {}
    return model.detect(images, prompts, box_threshold=0.0, **kwargs)


def assert_same_boxes(got: Boxes, expected: Boxes, label_map=None) -> None:
    """Same boxes, scores and labels (``label_map[label]`` when the prompts were permuted)."""
    assert len(got) == len(expected)
    assert_allclose(got.xyxy, expected.xyxy, atol=1e-3)
    assert_allclose(got.scores, expected.scores, rtol=1e-5, atol=1e-6)
    labels = expected.labels if label_map is None else np.asarray(label_map)[expected.labels]
    assert got.labels.tolist() == labels.tolist()


def assert_different_boxes(a: Boxes, b: Boxes) -> None:
    assert len(a) and len(b)
    n = min(len(a), len(b))
    assert np.abs(a.xyxy[:n] - b.xyxy[:n]).max() > 2.0  # pixels: a swap of the two would be seen


# -- detectors: image ↔ detections ------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["grounding_dino", "owlv2"])
def test_an_images_detections_do_not_depend_on_its_batch_its_neighbours_or_their_order(kind, detectors):
    model = detectors[kind]
    alone = {name: detect(model, [image(name)])[0] for name in IMAGES}
    assert_different_boxes(alone["A"], alone["C"])  # same size, different pixels
    assert_different_boxes(alone["A"], alone["B"])
    assert all(len(set(b.labels.tolist())) >= 2 for b in alone.values())  # more than one prompt wins somewhere
    for names in BATCHES:
        found = detect(model, [image(n) for n in names])
        assert len(found) == len(names)
        for name, boxes in zip(names, found):
            w, h, _ = IMAGES[name]
            assert (boxes.xyxy[:, [0, 2]] <= w).all() and (boxes.xyxy[:, [1, 3]] <= h).all()  # its own frame
            assert_same_boxes(boxes, alone[name])


def test_grounding_dino_labels_each_box_with_the_prompt_whose_own_tokens_score_it_highest(detectors):
    model = detectors["grounding_dino"]
    tokenizer = model.processor.tokenizer
    outputs = []
    recorder = Recorder(model.model, "forward", after=lambda out, *a, **kw: outputs.append((kw["input_ids"], out))
                        or out)
    try:
        names = list("ABC")
        found = detect(model, [image(n) for n in names])
    finally:
        recorder.undo()
    words = [tokenizer.convert_tokens_to_ids(p.split()) for p in PROMPTS]  # the prompt's tokens, by id
    expected: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for ids, out in outputs:  # one pass per image size: rows in the order of the images of that size
        probs = out.logits.float().sigmoid()[:, :, : ids.shape[1]].numpy()
        per_prompt = np.stack([np.where(np.isin(ids.numpy(), w)[:, None, :], probs, 0).max(-1) for w in words], -1)
        expected[len(expected)] = (per_prompt.max(-1), per_prompt.argmax(-1))
    (wide_scores, wide_labels), (tall_scores, tall_labels) = expected[0], expected[1]
    for boxes, scores, labels in [(found[0], wide_scores[0], wide_labels[0]), (found[2], wide_scores[1],
                                  wide_labels[1]), (found[1], tall_scores[0], tall_labels[0])]:
        assert len(boxes) == len(labels) == 10  # every query kept at threshold 0
        assert boxes.labels.tolist() == labels.tolist()
        assert_allclose(boxes.scores, scores, rtol=1e-6)
    assert len(set(found[0].labels.tolist())) >= 2 and found[0].labels.tolist() != found[2].labels.tolist()


@pytest.mark.parametrize("kind", ["grounding_dino", "owlv2"])
def test_reordering_the_prompts_permutes_the_labels_not_the_boxes(kind, detectors):
    model = detectors[kind]
    images = [image(n) for n in "AB"]
    forward = detect(model, images)
    order = [2, 0, 1]  # new prompt i is old prompt order[i]
    permuted = detect(model, images, [PROMPTS[i] for i in order])
    new_index = np.argsort(order)  # old label → new label
    for got, expected in zip(permuted, forward):
        assert_same_boxes(got, expected, label_map=new_index)
        assert len(set(expected.labels.tolist())) >= 2



@pytest.mark.parametrize("kind", ["grounding_dino", "owlv2"])
def test_the_detect_stage_names_each_box_the_same_class_whatever_the_prompt_order(kind, detectors):
    model = detectors[kind]
    ontology = Ontology.from_config({"cat": ["cat"], "light": ["traffic light"], "dog": ["dog"]})
    pool = type("Pool", (), {"get": lambda self, name: model, "specs": {"det": ModelSpec(type=kind, id="tiny")}})()
    thresholds = {"box_threshold": 0.0} | ({"text_threshold": 0.0} if kind == "grounding_dino" else {})

    def run(prompts: list[str]) -> list[Item]:
        params = Detect.Params.model_validate({"type": "detect", "model": "det", "prompts": prompts, **thresholds})
        return Detect("boxes", params, StageContext(ontology=ontology, models=pool))([Item.of(image(n)) for n in "AB"])

    for one, other in zip(run(PROMPTS), run([PROMPTS[i] for i in (2, 0, 1)])):
        a, b = one.labels.detections, other.labels.detections
        assert_allclose(b.xyxy, a.xyxy, atol=1e-3)
        assert b.data["class_name"].tolist() == a.data["class_name"].tolist()
        assert b.data["phrase"].tolist() == a.data["phrase"].tolist()
        assert len(set(a.data["class_name"].tolist())) >= 2
        assert {(c, p) for c, p in zip(a.data["class_name"], a.data["phrase"])} <= {
            ("cat", "cat"), ("light", "traffic light"), ("dog", "dog")}

def test_owlv2_scores_each_prompt_alone_as_in_the_set(detectors):
    model = detectors["owlv2"]
    images = [image(n) for n in "ABD"]
    both = detect(model, images, ["traffic light", "dog"])
    light, dog = detect(model, images, ["traffic light"]), detect(model, images, ["dog"])
    for pair, one, other in zip(both, light, dog):
        assert_allclose(pair.xyxy, one.xyxy, atol=1e-4)  # OWLv2's boxes come from the image alone
        assert_allclose(pair.xyxy, other.xyxy, atol=1e-4)
        assert_allclose(pair.scores, np.maximum(one.scores, other.scores), rtol=1e-5, atol=1e-6)
        assert pair.labels.tolist() == (other.scores > one.scores).astype(int).tolist()
    assert {0, 1} <= set(np.concatenate([b.labels for b in both]).tolist())  # each prompt wins some box


# -- SAM / SAM 2: box ↔ mask, image ↔ embedding -------------------------------------------------------------

BOXES = {
    "A": np.array([[0, 0, 50, 30], [10, 10, 140, 50], [60, 5, 150, 60], [20, 30, 90, 58], [100, 0, 140, 20]],
                  np.float32),
    "B": np.array([[5, 5, 70, 110], [0, 60, 80, 120], [30, 10, 60, 50]], np.float32),
    "D": np.zeros((0, 4), np.float32),
}
BOXES["C"] = BOXES["A"]  # image C gets image A's boxes: only its pixels differ


def same_masks(got: Masks, expected: Masks) -> None:
    assert got.masks.shape == expected.masks.shape
    differ = (got.masks != expected.masks).reshape(len(got.masks), -1).mean(-1)
    assert (differ <= PIXEL_NOISE).all(), differ
    assert_allclose(got.predicted_iou, expected.predicted_iou, rtol=1e-4, atol=1e-6)
    assert_allclose(got.stability_score, expected.stability_score, rtol=1e-4, atol=1e-5)


def differ(a: np.ndarray, b: np.ndarray) -> float:
    return float((a != b).mean())


@pytest.fixture(scope="module")
def single_box_masks(segmenters) -> dict:
    """Per segmenter, image and ``multimask``: the masks each box gets as the only box of the call and the batch."""
    out = {}
    for kind, model in segmenters.items():
        for name, multimask in [("A", False), ("B", False), ("C", False), ("A", True)]:
            parts = [model.segment([image(name)], [box[None]], multimask=multimask)[0] for box in BOXES[name]]
            out[kind, name, multimask] = Masks(np.concatenate([p.masks for p in parts]),
                                    np.concatenate([p.predicted_iou for p in parts]),
                                    np.concatenate([p.stability_score for p in parts]))
    return out


def pairwise_gap(values: np.ndarray) -> float:
    return float(np.min(np.abs(values[:, None] - values[None]) + np.eye(len(values)) * 1e9))


@pytest.mark.parametrize("kind", ["sam", "sam2"])
@pytest.mark.parametrize("multimask", [False, True])
def test_the_mask_of_box_k_is_the_mask_of_box_k_alone_whatever_boxes_share_the_call(kind, multimask, segmenters,
                                                                                      single_box_masks):
    model = segmenters[kind]
    alone = single_box_masks[kind, "A", multimask]
    masks = alone.masks
    assert min(differ(masks[i], masks[j]) for i in range(len(masks)) for j in range(i)) > 0.01  # boxes differ
    assert 0.02 < masks.mean() < 0.98
    assert pairwise_gap(alone.predicted_iou) > 1e-4 and pairwise_gap(alone.stability_score) > 1e-3  # scores too
    same_masks(model.segment([image("A")], [BOXES["A"]], multimask=multimask)[0], alone)
    for order in ([4, 3, 2, 1, 0], [2, 0, 4, 1, 3], [1, 3]):
        got = model.segment([image("A")], [BOXES["A"][order]], multimask=multimask)[0]
        same_masks(got, Masks(masks[order], alone.predicted_iou[order], alone.stability_score[order]))


@pytest.mark.parametrize("kind", ["sam", "sam2"])
@pytest.mark.parametrize("max_boxes_per_call", [64, 2])
def test_an_images_masks_do_not_depend_on_the_other_images_of_the_batch(kind, max_boxes_per_call, segmenters,
                                                                        single_box_masks):
    model = segmenters[kind]
    a, c = single_box_masks[kind, "A", False], single_box_masks[kind, "C", False]
    assert differ(a.masks, c.masks) > 0.01 and np.abs(a.predicted_iou - c.predicted_iou).min() > 1e-5  # same boxes
    for names in BATCHES:
        found = model.segment([image(n) for n in names], [BOXES[n] for n in names],
                              max_boxes_per_call=max_boxes_per_call)
        for name, masks in zip(names, found):
            w, h, _ = IMAGES[name]
            if name == "D":
                assert masks.masks.shape == (0, h, w)
            else:
                same_masks(masks, single_box_masks[kind, name, False])


@pytest.mark.parametrize("kind", ["sam", "sam2"])
def test_the_segment_stage_puts_each_mask_on_its_own_row_of_its_own_item(kind, segmenters, single_box_masks):
    model = segmenters[kind]
    specs = {"seg": ModelSpec(type=kind, id="tiny")}
    pool = type("Pool", (), {"get": lambda self, name: model, "specs": specs})()
    context = StageContext(ontology=Ontology.from_config(["thing"]), models=pool, extra={"stage_names": ["masks"]})
    stage = Segment("masks", Segment.Params.model_validate({"type": "segment", "model": "seg",
                                                            "max_boxes_per_call": 1}), context)

    def item(name: str) -> Item:
        """Image ``name`` with its boxes as rows, interleaved with dropped rows (never segmented)."""
        boxes = BOXES[name]
        labels = Labels(width=image(name).width, height=image(name).height)
        for box in boxes:
            labels.add(sv.Detections(xyxy=np.stack([box, box[[1, 0, 3, 2]]]),
                                     data={"status": np.array(["kept", DROPPED], dtype=object)}), stage="det")
        return Item(image=image(name), labels=labels)

    for names in (list("ACB"), list("BCA")):
        items = stage([item(n) for n in names])
        for name, it in zip(names, items):
            det = it.labels.detections
            kept = np.flatnonzero(det.data["status"] != DROPPED)
            assert kept.tolist() == list(range(0, 2 * len(BOXES[name]), 2))
            expected = single_box_masks[kind, name, False]
            same_masks(Masks(det.mask[kept], det.data["predicted_iou"][kept].astype(np.float32),
                             det.data["stability_score"][kept].astype(np.float32)), expected)
            assert not det.mask[det.data["status"] == DROPPED].any()


# -- a whole run: batch size and input order --------------------------------------------------------------

def test_a_detect_and_segment_run_labels_each_image_the_same_at_any_batch_size_and_input_order(tmp_path,
                                                                                              checkpoints):
    folder = tmp_path / "in"
    folder.mkdir()
    paths = []
    for name, (w, h, seed) in IMAGES.items():
        paths.append(folder / f"{name}.png")
        noise_image(w, h, seed=seed).save(paths[-1])
    data = {
        "models": {"det": {"type": "grounding_dino", "id": checkpoints["grounding_dino"]},
                   "seg": {"type": "sam", "id": checkpoints["sam"]}},
        "ontology": {"cat": ["cat"], "light": ["traffic light"], "dog": ["dog"]},
        "stages": [{"name": "boxes", "type": "detect", "model": "det", "box_threshold": 0.0, "text_threshold": 0.0},
                   {"name": "masks", "type": "segment", "model": "seg", "max_boxes_per_call": 3}],
    }
    runs = {}
    for batch_size, order in [(1, paths), (4, paths[::-1])]:
        out = tmp_path / f"out{batch_size}"
        summary = Pipeline.from_dict({**data, "batch_size": batch_size}).run(input=order, output=out)
        assert summary.status == "ok" and summary.counts["labeled"] == len(paths)
        with Store(out) as store:
            runs[batch_size] = {Path(row["rel_path"]).name: from_record(row["labels"]) for row in store.images()}
    assert runs[1].keys() == runs[4].keys() == {p.name for p in paths}
    first = runs[1]["A.png"].detections
    assert len(first) == 10 and len(set(first.data["class_name"].tolist())) >= 2
    assert np.abs(first.xyxy - runs[1]["C.png"].detections.xyxy).max() > 2.0  # a swap would show
    for name, labels in runs[1].items():
        one, four = labels.detections, runs[4][name].detections
        assert_allclose(four.xyxy, one.xyxy, atol=1e-3)
        assert_allclose(four.confidence, one.confidence, rtol=1e-5)
        assert four.data["class_name"].tolist() == one.data["class_name"].tolist()
        assert four.mask.shape == one.mask.shape and one.mask.any()
        assert ((four.mask != one.mask).reshape(len(one), -1).mean(-1) <= PIXEL_NOISE).all()
