"""Masks traced in a batch (one canvas, one OpenCV call per image) give exactly what tracing each mask alone gives."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from autolabel.exports.geometry import mask_polygons, rles_polygons


def random_masks(rng: np.random.Generator) -> np.ndarray:
    """Masks of one image: rectangles (often several parts, some touching the border) and sprinkled pixels."""
    height, width = (int(v) for v in rng.integers(5, 120, 2))
    masks = np.zeros((int(rng.integers(1, 12)), height, width), np.uint8)
    for mask in masks:
        for _ in range(int(rng.integers(0, 4))):
            y, x = rng.integers(0, height), rng.integers(0, width)
            mask[y : y + rng.integers(1, 30), x : x + rng.integers(1, 30)] = 1
        if rng.random() < 0.3:
            mask |= (rng.random((height, width)) < 0.05).astype(np.uint8)
    return masks


@pytest.mark.parametrize("seed", range(2))
def test_batched_tracing_equals_tracing_each_mask_alone(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(20):
        masks = random_masks(rng)
        n, height, width = masks.shape
        rles = [{"size": r["size"], "counts": r["counts"].decode()}
                for r in mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0)))]
        together = rles_polygons(rles)
        tight = rles_polygons(rles, max_bytes=n * height * width)  # canvases split where the crops do not fit
        one_by_one = rles_polygons(rles, max_bytes=0)
        for k, mask in enumerate(masks):
            alone = mask_polygons(mask)
            for traced in (together[k], tight[k], one_by_one[k]):
                assert len(traced) == len(alone)
                for a, b in zip(alone, traced):
                    assert b.dtype == np.float64 and np.array_equal(a, b)
