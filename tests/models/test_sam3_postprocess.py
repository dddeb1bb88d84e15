"""SAM 3 post-processing: transformers' semantics, the real model's recorded outputs, and bounded memory.

``autolabel.models.concepts.post_process`` must give what transformers' ``post_process_instance_segmentation``
gives (score = sigmoid(query) × sigmoid(presence), kept strictly above the threshold, in query order; boxes =
normalized xyxy × the image's width and height, unclipped; masks = bilinear(sigmoid) > mask_threshold), without
its memory: a 4000×3000 image with every query kept holds the kept masks as bool plus one bounded chunk.
The recorded numbers are those transformers' integration tests assert for the real facebook/sam3 on COCO images
(tests/fixtures/checkpoints/expected/sam3_real_outputs.json; the cat image 000000077595.jpg is 640×425).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose
from real_checkpoints import EXPECTED, real

from autolabel.models.concepts import UPSCALE_BYTES, chunk_rows, post_process, select, upsample_into

RECORDED = {t["test"]: t for t in json.loads((EXPECTED / "sam3_real_outputs.json").read_text())["tests"]}
CAT = (425, 640)  # COCO 000000077595.jpg, (height, width)
QUERIES = 200


class Outputs:
    """The fields of a Sam3ImageSegmentationOutput that post-processing reads."""

    def __init__(self, logits: np.ndarray, presence: np.ndarray, boxes: np.ndarray, masks: np.ndarray):
        self.pred_logits = torch.as_tensor(logits, dtype=torch.float32)
        self.presence_logits = torch.as_tensor(presence, dtype=torch.float32).reshape(-1, 1)
        self.pred_boxes = torch.as_tensor(boxes, dtype=torch.float32)
        self.pred_masks = torch.as_tensor(masks, dtype=torch.float32)


def logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


def recorded_outputs(case: dict, best_at: int, second_at: int, presence: float) -> Outputs:
    """200 queries as the real model answered ``case``'s first image: its top-3 query logits at query indices
    ``best_at``, ``second_at`` and 150, its best query's box there, every other query far below any threshold."""
    rng = np.random.default_rng(0)
    (image,) = case["per_image"][:1]
    logits = np.full((1, QUERIES), -9.0, np.float32)
    logits[0, [best_at, second_at, 150]] = image["top3_logits"]
    boxes = rng.uniform(0.1, 0.6, (1, QUERIES, 4)).astype(np.float32)
    boxes[..., 2:] += 0.3
    boxes[0, best_at] = image["top_box_normalized_xyxy"]
    masks = rng.normal(0, 3, (1, QUERIES, 72, 72)).astype(np.float32)
    return Outputs(logits, np.array([logit(presence)]), boxes, masks)


def transformers_post_process(outputs: Outputs, sizes: list[tuple[int, int]], threshold: float,
                              mask_threshold: float = 0.5) -> list[dict]:
    from transformers.models.sam3.image_processing_sam3 import Sam3ImageProcessor

    return Sam3ImageProcessor().post_process_instance_segmentation(outputs, threshold, mask_threshold, sizes)


def assert_same_as_transformers(outputs: Outputs, sizes: list[tuple[int, int]], threshold: float,
                                mask_threshold: float = 0.5) -> list:
    ours = post_process(outputs, sizes, threshold, mask_threshold)
    theirs = transformers_post_process(outputs, sizes, threshold, mask_threshold)
    for got, want in zip(ours, theirs):
        assert_allclose(got.scores, want["scores"].numpy(), rtol=1e-6)
        assert_allclose(got.xyxy, want["boxes"].numpy(), rtol=1e-6, atol=1e-4)
        assert want["masks"].dtype == torch.int64 and got.masks.dtype == bool  # 8 bytes a pixel there, 1 here
        if len(want["masks"]):  # (transformers leaves an empty result at the low resolution; ours is the image's)
            np.testing.assert_array_equal(got.masks, want["masks"].numpy().astype(bool))
        assert got.masks.shape[0] == len(want["masks"])
    return ours


@pytest.mark.parametrize("case, index", [("test_inference_single_box_prompt", 0),
                                         ("test_inference_batched_mixed_prompts", 0)])
def test_the_real_models_recorded_first_box_is_its_normalized_box_times_the_images_width_and_height(case, index):
    """Where the real model's first kept query is its best one, the recorded pixel box is the recorded normalized
    box scaled by (640, 425), left unclipped (-0.85 px): our boxes, from the same numbers, are that box."""
    record = RECORDED[case]
    image = record["per_image"][index]
    presence = image["pp_first_score"] / image["top3_scores"][0]  # what the recorded product implies
    assert 0.98 < presence <= 1.0
    record = dict(record, per_image=[image])
    (found,) = assert_same_as_transformers(recorded_outputs(record, 20, 40, presence), [CAT], record["pp_threshold"])
    assert found.queries[0] == 20
    assert_allclose(found.xyxy[0], image["pp_first_box_px"], atol=0.05)  # 4-decimal normalized → ±0.032 px
    assert_allclose(found.scores[0], image["pp_first_score"], atol=2e-4)


def test_the_first_kept_query_is_the_first_in_query_order_not_the_best():
    """The real model's "ear" answer: post-processing's first score 0.9210 is its second-best query (0.9214 before
    the presence factor), not its best (0.9381): kept queries come in query order, unsorted."""
    record = RECORDED["test_inference_text_prompt_only"]
    image = record["per_image"][0]
    presence = image["pp_first_score"] / image["top3_scores"][1]
    found, = assert_same_as_transformers(recorded_outputs(record, best_at=30, second_at=10, presence=presence),
                                         [CAT], record["pp_threshold"])
    assert found.queries.tolist() == [10, 30]  # the third (0.091) is below 0.5
    assert_allclose(found.scores, [image["pp_first_score"], image["top3_scores"][0] * presence], atol=2e-4)
    assert_allclose(found.scores, found.query_scores * found.presence_scores, rtol=1e-6)
    assert found.scores[0] < found.scores[1]


@pytest.mark.parametrize("threshold, mask_threshold", [(0.0, 0.5), (0.3, 0.5), (0.5, 0.8), (0.7, 0.1)])
def test_post_process_is_transformers_at_any_threshold_and_image_size(threshold, mask_threshold):
    rng = np.random.default_rng(1)
    outputs = Outputs(rng.normal(0, 3, (3, 30)), rng.normal(1, 1, 3), rng.uniform(-0.05, 1.05, (3, 30, 4)),
                      rng.normal(0, 3, (3, 30, 24, 24)))
    sizes = [(60, 150), (120, 80), (37, 53)]
    found = assert_same_as_transformers(outputs, sizes, threshold, mask_threshold)
    assert [f.masks.shape[1:] for f in found] == sizes
    assert sum(len(f) for f in found) > 0


def test_chunked_upsampling_is_the_same_as_upsampling_all_at_once():
    low = torch.as_tensor(np.random.default_rng(2).normal(0, 3, (7, 18, 18)), dtype=torch.float32)
    whole, chunked = np.empty((7, 90, 70), bool), np.empty((7, 90, 70), bool)
    upsample_into(whole, low, 0.5)
    upsample_into(chunked, low, 0.5, budget=2 * 4 * 90 * 70)  # two masks at a time
    np.testing.assert_array_equal(chunked, whole)
    assert chunk_rows(90, 70, 2 * 4 * 90 * 70) == 2 and chunk_rows(3000, 4000) == 1


def test_max_instances_and_the_threshold_are_decided_before_any_mask_is_touched():
    chosen = select(np.array([0.9, 0.2, 0.95, 0.6, 0.95]), 1.0, threshold=0.5, max_instances=2)
    assert chosen.queries.tolist() == [2, 4]  # the two best, ties by query order, listed in query order
    assert select(np.array([0.5, 0.51]), 1.0, threshold=0.5).queries.tolist() == [1]  # strictly above


MEMORY_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    from PIL import Image
    from autolabel.config import ModelSpec
    from autolabel.models.concepts import ConceptPrompt
    from autolabel.models.sam3 import Sam3

    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024

    model = Sam3.load(ModelSpec(type="sam3", id=sys.argv[1]))
    small = Image.fromarray(np.zeros((64, 64, 3), np.uint8))
    model.segment_concepts([small], [[ConceptPrompt("cat")]], threshold=0.0)  # libraries loaded, caches warm
    rng = np.random.default_rng(1)
    big = Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).resize((4000, 3000))
    before = status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak (VmHWM) to the current size
    (found,) = model.segment_concepts([big], [[ConceptPrompt("cat")]], threshold=0.0)
    print(json.dumps({"before": before, "peak": status("VmHWM"), "shape": list(found.masks.shape),
                      "dtype": str(found.masks.dtype), "kept": len(found)}))
""")


@pytest.mark.slow
def test_a_4000x3000_image_with_every_query_kept_stays_within_the_documented_bound(subprocess_env):
    """Kept masks as bool (1 byte a pixel) + one chunk of float32 + a bool chunk + 64 MiB for everything else
    (the model's activations at its 1008 px input); transformers' post-processing would hold 12 bytes a pixel of
    every kept mask at once (float32 probabilities, then int64)."""
    out = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, real("sam3")], capture_output=True, text=True,
                         env=subprocess_env, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    pixels = 4000 * 3000
    assert result["shape"] == [20, 3000, 4000] and result["kept"] == 20 and result["dtype"] == "bool"  # every query
    masks = 20 * pixels
    bound = masks + max(UPSCALE_BYTES, 4 * pixels) + pixels + (64 << 20)
    grown = result["peak"] - result["before"]
    assert masks <= grown <= bound, (grown / 2**20, bound / 2**20)
    assert grown < 20 * pixels * 12 / 4  # a quarter of what transformers' post-processing alone would hold
