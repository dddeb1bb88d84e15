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
