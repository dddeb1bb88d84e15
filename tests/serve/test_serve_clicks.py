"""Smart-tool clicks reach SAM / SAM 2 in the model's input frame exactly as the model's own processor would put
them there (``processor(images=..., input_points=..., input_boxes=...)``), for images wider and taller than they
are wide: the embedding is cached per image, so the backend scales clicks itself, and must agree with the
processor's rule (SAM: longest side to its size, aspect kept, then padded; SAM 2: both sides to its square)."""

from __future__ import annotations

import numpy as np
import pytest
from tiny_models import noise_image, tiny

from autolabel.config import ModelSpec
from autolabel.models.sam import Sam, Sam2
from autolabel.serve.interactive import Interactive, model_prompt
from autolabel.serve.protocol import Prompt

SEGMENTERS = {"sam": Sam, "sam2": Sam2}


@pytest.fixture(scope="module", params=sorted(SEGMENTERS))
def segmenter(request: pytest.FixtureRequest):
    return request.param, SEGMENTERS[request.param].load(ModelSpec(type=request.param, id=tiny(request.param)))


@pytest.mark.parametrize("width, height", [(150, 60), (60, 150), (97, 31)])
def test_clicks_and_boxes_are_scaled_as_the_models_processor_scales_them(segmenter, width: int, height: int) -> None:
    kind, model = segmenter
    image = noise_image(width, height, seed=width)
    points = [(0.1 * width, 0.3 * height), (0.9 * width, 0.95 * height)]
    box = (0.05 * width, 0.1 * height, 0.7 * width, 0.8 * height)
    ours = model_prompt(Interactive(model).embed("k", image), Prompt(points=points, point_labels=[1, 0], box=box))
    nest = (lambda x: [x]) if kind == "sam2" else (lambda x: x)  # SAM 2 takes one more level: objects per image
    theirs = model.processor(images=[image], input_points=nest([[list(p) for p in points]]),
                             input_labels=nest([[1, 0]]), input_boxes=[[list(box)]], return_tensors="pt")
    np.testing.assert_allclose(ours["input_points"], theirs["input_points"][0, 0].numpy(), rtol=1e-5)
    np.testing.assert_allclose(ours["input_boxes"], theirs["input_boxes"][0, 0].numpy(), rtol=1e-5)
    assert ours["input_labels"].tolist() == theirs["input_labels"][0, 0].tolist() == [1, 0]
    assert ours["input_points"][:, 0].max() < model.processor.image_processor.size.get(
        "longest_edge", model.processor.image_processor.size.get("width"))  # inside the model's frame


def test_a_prompt_without_points_or_box_gives_the_model_nothing_of_it(segmenter) -> None:
    _, model = segmenter
    entry = Interactive(model).embed("k", noise_image(40, 20))
    assert set(model_prompt(entry, Prompt(box=(1.0, 1.0, 5.0, 5.0)))) == {"input_boxes"}
    assert set(model_prompt(entry, Prompt(points=[(2.0, 3.0)], point_labels=[1]))) == {"input_points", "input_labels"}


def reference(kind: str, model, image, points, labels, box):
    """The mask and IoU the model's own public path gives: its processor's inputs (image and prompt together), its
    forward pass, its processor's post-processing; the best of SAM's proposals for a lone click."""
    import torch

    nest = (lambda x: [x]) if kind == "sam2" else (lambda x: x)
    prompt = {}
    if points:
        prompt = {"input_points": nest([[list(p) for p in points]]), "input_labels": nest([labels])}
    if box is not None:
        prompt["input_boxes"] = [[list(box)]]
    inputs = model.processor(images=[image], return_tensors="pt", **prompt)
    feed = {k: (v.to(model.dtype) if v.is_floating_point() else v) for k, v in inputs.items()
            if k in ("pixel_values", "input_points", "input_labels", "input_boxes")}
    with torch.inference_mode():
        out = model.model(**feed, multimask_output=len(points) == 1 and box is None)
    sizes = [inputs["original_sizes"]] + ([inputs["reshaped_input_sizes"]] if kind == "sam" else [])
    (masks,) = model.processor.post_process_masks(out.pred_masks.float(), *sizes)
    iou = out.iou_scores[0, 0].float()
    best = int(iou.argmax())
    return masks[0, best].numpy(), float(iou[best])


@pytest.mark.parametrize("points, labels, box", [
    ([(31.3, 12.7)], [1], None),  # a lone click: three proposals, the best kept
    ([(31.3, 12.7), (70.2, 40.9)], [1, 0], None),
    ([], [], (10.5, 5.25, 80.75, 44.5)),
    ([(40.5, 20.5)], [1], (10.5, 5.25, 80.75, 44.5)),
])
def test_a_click_gives_the_mask_the_models_own_path_gives(segmenter, points, labels, box) -> None:
    kind, model = segmenter
    image = noise_image(97, 51, seed=3)
    interactive = Interactive(model)
    prompt = Prompt(points=points, point_labels=labels, box=box)
    mask, iou = interactive.mask("img", image, prompt)
    expected, expected_iou = reference(kind, model, image, points, labels, box)
    assert mask.shape == (51, 97) and mask.dtype == bool
    np.testing.assert_array_equal(mask, expected)
    assert iou == pytest.approx(expected_iou, abs=1e-5)
    again, _ = interactive.mask("img", image, prompt)  # from the cached embedding: the same, no encoder run
    np.testing.assert_array_equal(again, expected)
    assert interactive.encoder_calls == 1 and list(interactive.cache) == ["img"]


def test_a_bfloat16_segmenter_gets_inputs_of_its_dtype() -> None:
    model = Sam.load(ModelSpec(type="sam", id=tiny("sam"), dtype="bfloat16"))
    image = noise_image(60, 40, seed=4)
    mask, iou = Interactive(model).mask("k", image, Prompt(points=[(30.5, 20.5)], point_labels=[1]))
    expected, expected_iou = reference("sam", model, image, [(30.5, 20.5)], [1], None)
    np.testing.assert_array_equal(mask, expected)
    assert iou == pytest.approx(expected_iou, abs=1e-2)


def test_the_embedding_cache_keeps_the_most_recent_images() -> None:
    model = Sam.load(ModelSpec(type="sam", id=tiny("sam")))
    interactive = Interactive(model, cache_size=2)
    for key in ("a", "b", "a", "c"):
        interactive.embed(key, noise_image(30, 20, seed=ord(key)))
    assert list(interactive.cache) == ["a", "c"] and interactive.encoder_calls == 3
    off = Interactive(model, cache_size=0)
    off.embed("a", noise_image(30, 20))
    off.embed("a", noise_image(30, 20))
    assert off.encoder_calls == 2 and not off.cache
