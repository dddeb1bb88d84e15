"""SAM's decoding in chunks, on tiny checkpoints whose decoder output is rewritten so that each box of a call gets a
mask, a predicted IoU and a stability of its own: however the boxes are split into decoder calls and the masks into
upscaling chunks, each box keeps its own mask, IoU and stability, in the order of the boxes (mask k for box k)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose

from autolabel.config import ModelSpec
from autolabel.models import sam as sam_module
from autolabel.models.sam import Sam, Sam2
from tiny_models import Recorder, noise_image, tiny


@pytest.fixture(scope="module")
def models() -> dict:
    return {"sam": Sam.load(ModelSpec(type="sam", id=tiny("sam"))),
            "sam2": Sam2.load(ModelSpec(type="sam2", id=tiny("sam2")))}


def by_position(out, *args, **kwargs):
    """Box n of a decoder call: +10 on a top-left block of (n % 4 + 1) rows and (n // 4 + 1) columns of the
    low-resolution frame, 0 on the two rows below it (inside the mask at -1, outside at +1: a stability of its
    own), -10 elsewhere; IoU n / 100. Blocks of up to 6 rows stay inside the image part of SAM's padded frame."""
    masks = torch.full_like(out.pred_masks, -10.0)  # (1, N, K, h, w)
    n = masks.shape[1]
    for k in range(n):
        rows, cols = k % 4 + 1, k // 4 + 1
        masks[0, k, :, :rows, :cols] = 10.0
        masks[0, k, :, rows : rows + 2, :cols] = 0.0
    out.pred_masks = masks
    out.iou_scores = (torch.arange(n, dtype=out.iou_scores.dtype) / 100)[None, :, None].expand_as(out.iou_scores)
    return out


def boxes(n: int) -> np.ndarray:
    return np.array([[k % 7, k % 5, 60 + k % 11, 40 + k % 3] for k in range(n)], np.float32)


@pytest.mark.parametrize("kind", ["sam", "sam2"])
def test_upscaling_in_chunks_keeps_each_boxs_mask_iou_and_stability_in_order(kind, models, monkeypatch) -> None:
    model = models[kind]
    image = noise_image(150, 60, seed=4)
    hook = Recorder(model.model, "forward", after=by_position)
    try:
        monkeypatch.setattr(sam_module, "UPSCALE_CHUNK", 1000)
        whole = model.segment([image], [boxes(35)])[0]  # one decoder call, one upscale of 35 masks
        for chunk in (16, 5, 1):
            monkeypatch.setattr(sam_module, "UPSCALE_CHUNK", chunk)
            chunked = model.segment([image], [boxes(35)])[0]
            assert np.array_equal(chunked.masks, whole.masks), chunk
            assert_allclose(chunked.stability_score, whole.stability_score, rtol=1e-6)
            assert_allclose(chunked.predicted_iou, whole.predicted_iou, rtol=1e-6)
    finally:
        hook.undo()
    assert whole.masks.shape == (35, 60, 150) and whole.masks.dtype == np.dtype(bool)
    assert whole.predicted_iou.dtype == whole.stability_score.dtype == np.float32
    assert_allclose(whole.predicted_iou, np.arange(35) / 100, atol=1e-6)  # box k's, in the boxes' order
    assert len({m.tobytes() for m in whole.masks}) == 35 and whole.masks.any(axis=(1, 2)).all()  # each its own
    assert ((whole.stability_score > 0) & (whole.stability_score < 1)).all()
    assert len(set(np.round(whole.stability_score, 6).tolist())) > 20


@pytest.mark.parametrize("kind", ["sam", "sam2"])
def test_decoder_calls_of_a_few_boxes_keep_the_boxes_order_across_images(kind, models) -> None:
    """The same box in a call of its own, or third in a call of three: the first mask of the rewritten decoder either
    way, so a box's mask follows its position in the call, and calls follow the boxes."""
    model = models[kind]
    images = [noise_image(90, 70, seed=5), noise_image(40, 40, seed=6), noise_image(70, 90, seed=7)]
    per_image = [boxes(7), np.zeros((0, 4), np.float32), boxes(4)]
    hook = Recorder(model.model, "forward", after=by_position)
    try:
        by3 = model.segment(images, per_image, max_boxes_per_call=3)
        by1 = model.segment(images, per_image, max_boxes_per_call=1)
    finally:
        hook.undo()
    assert [m.masks.shape[0] for m in by3] == [7, 0, 4] and by3[1].masks.shape == (0, 40, 40)
    assert [len(c[1]["input_boxes"][0]) for c in hook.calls] == [3, 3, 1, 3, 1] + [1] * 11
    for three, one in zip(by3, by1):
        # in calls of three, box k is at position k % 3: its IoU says so; alone, every box is at position 0
        assert_allclose(three.predicted_iou, (np.arange(len(three.predicted_iou)) % 3) / 100, atol=1e-6)
        assert_allclose(one.predicted_iou, 0.0, atol=1e-6)
        assert np.array_equal(three.masks[0::3], one.masks[0::3])  # position 0 in both: the same mask
        if len(three.masks) > 1:
            assert not np.array_equal(three.masks[1], one.masks[1])  # position 1 vs 0: another mask


@pytest.mark.parametrize("kind", ["sam", "sam2"])
def test_a_mask_is_where_the_upscaled_logits_are_positive(kind, models, monkeypatch) -> None:
    """The processor's upscaled logits, as they came (recorded, not replaced): the mask is ``logits > 0``, the
    stability is SAM's ratio at ±1 — pixels between 0 and 1 (the blocks' blurred edges) are inside the mask."""
    model = models[kind]
    seen = []
    real = model._upscale

    def spy(low, size, resized):
        seen.append(real(low, size, resized))
        return seen[-1]

    monkeypatch.setattr(model, "_upscale", spy)
    hook = Recorder(model.model, "forward", after=by_position)
    try:
        got = model.segment([noise_image(150, 60, seed=4)], [boxes(9)])[0]
    finally:
        hook.undo()
    logits = torch.cat(seen).float()
    assert ((logits > 0) & (logits <= 1)).any()  # the test can tell a threshold of 0 from one of 1
    assert np.array_equal(got.masks, (logits > 0).numpy())
    inner, outer = (logits > 1).flatten(1).sum(-1), (logits > -1).flatten(1).sum(-1)
    assert_allclose(got.stability_score, (inner / outer).numpy(), rtol=1e-6)
