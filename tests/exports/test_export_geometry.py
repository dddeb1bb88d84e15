"""Shapes from masks: masks traced in a batch (one canvas, one OpenCV call per image) give exactly what tracing each
mask alone gives; a mask's parts joined into one polygon walk every part and bridge exactly as the rule says."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from autolabel.geometry import (
    _closest,
    decode_rle,
    join_parts,
    mask_polygons,
    polygons_to_rle,
    rle_area,
    rle_polygons,
    rles_areas,
    rles_polygons,
)


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


# --- joining a mask's parts into one polygon (YOLO segment lines) ---------------------------------------------------

def ring_edges(points: np.ndarray) -> list[tuple[tuple[float, float], tuple[float, float]]]:
    """The directed edges of a closed ring of vertices."""
    n = len(points)
    return [(tuple(points[i].tolist()), tuple(points[(i + 1) % n].tolist())) for i in range(n)]


def closest_vertices(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    """Brute force: the first closest pair of vertices in row-major order (numpy's argmin over the n×m matrix)."""
    d = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    i, j = np.unravel_index(int(np.argmin(d)), d.shape)
    return int(i), int(j)


def expected_walk(parts: list[np.ndarray]) -> Counter:
    """What the joined polygon's edges must be, computed from the rule alone: every edge of every part once, in
    its ring's direction, and for each consecutive pair of parts a bridge between their closest vertices, walked
    once each way (so it encloses nothing)."""
    edges = Counter(e for p in parts for e in ring_edges(p))
    for a, b in zip(parts, parts[1:]):
        i, j = closest_vertices(a, b)
        u, v = tuple(a[i].tolist()), tuple(b[j].tolist())
        edges[(u, v)] += 1
        edges[(v, u)] += 1
    return edges


def random_parts(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    """``n`` disjoint convex polygons of 3 to 7 vertices (some with 40: the numpy closest-pair path), in grid cells
    visited in random order, each ring starting at a random vertex."""
    cells = rng.permutation(16)[:n]
    parts = []
    for cell in cells:
        k = 40 if rng.random() < 0.2 else int(rng.integers(3, 8))
        angles = np.sort(rng.uniform(0, 2 * np.pi, k))
        radius = rng.uniform(1.0, 4.0)
        centre = np.array([cell % 4, cell // 4], float) * 10.0 + 5.0
        ring = centre + radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
        parts.append(np.roll(ring, int(rng.integers(0, k)), axis=0))
    return parts


def shoelace(p: np.ndarray) -> float:
    return 0.5 * float(np.dot(p[:, 0], np.roll(p[:, 1], -1)) - np.dot(p[:, 1], np.roll(p[:, 0], -1)))


@pytest.mark.parametrize("n", [2, 3, 4, 5, 6])
def test_joined_polygon_walks_every_part_and_each_bridge_both_ways(n: int) -> None:
    rng = np.random.default_rng(n)
    for _ in range(40):
        parts = random_parts(rng, n)
        joined = join_parts(parts)
        assert joined.dtype == np.float64 and joined.shape[1] == 2
        assert Counter(ring_edges(joined)) == expected_walk(parts)
        i, _ = closest_vertices(parts[0], parts[1])
        assert joined[0].tolist() == parts[0][i].tolist()  # starts on part 0, at its bridge to part 1
        assert shoelace(joined) == pytest.approx(sum(shoelace(p) for p in parts))  # bridges add no area


def test_a_middle_part_whose_two_bridges_meet_at_one_vertex_is_still_walked_whole() -> None:
    """The triangle's tip is the closest vertex to both squares: one side of the walk through it is empty, the
    other goes all the way round."""
    square = np.array([[0, 0], [2, 0], [2, 2], [0, 2]], float)
    triangle = np.array([[10, 10], [20, 5], [20, 15]], float)
    for parts in ([square, triangle, square + [0, 18]], [square, triangle, square + [0, 18], triangle + [20, 0]],
                  [square + [0, 18], triangle, square, triangle + [20, 0], square + [40, 18]]):
        joined = join_parts(parts)
        assert Counter(ring_edges(joined)) == expected_walk(parts)
        assert shoelace(joined) == pytest.approx(sum(shoelace(p) for p in parts))


def test_joined_mask_parts_fill_the_mask() -> None:
    """A mask of 2 to 5 rectangles, traced and joined, filled back as Ultralytics fills a segment line: the mask's
    pixels, plus at most the one-pixel-wide bridges."""
    import cv2

    rng = np.random.default_rng(0)
    for n in (2, 3, 4, 5):
        for _ in range(5):
            mask = np.zeros((60, 80), np.uint8)
            for cell in rng.permutation(12)[:n]:
                x, y = int(cell % 4) * 20 + 3, int(cell // 4) * 20 + 3
                mask[y : y + int(rng.integers(4, 14)), x : x + int(rng.integers(4, 14))] = 1
            parts = mask_polygons(mask.astype(bool))
            assert len(parts) == n
            drawn = np.zeros_like(mask)
            cv2.fillPoly(drawn, [np.round(join_parts(parts) - 0.5).astype(np.int32)], 1)
            assert (drawn & mask).sum() == mask.sum()  # every part, whole
            pairs = [(a, b, *closest_vertices(a, b)) for a, b in zip(parts, parts[1:])]
            bridges = [np.linalg.norm(a[i] - b[j]) for a, b, i, j in pairs]
            extra = drawn & ~mask.astype(bool)
            assert extra.sum() <= sum(length + 2 for length in bridges)  # only bridges: one pixel wide


def test_closest_vertices_searched_in_chunks_equal_numpy_argmin() -> None:
    """Polygons too big for the plain-float loop are searched a chunk of rows at a time; every chunk counts."""
    rng = np.random.default_rng(1)
    for _ in range(300):
        n, m = (int(v) for v in rng.integers(17, 80, 2))
        grid = rng.random() < 0.5  # ties: the first in row-major order wins, across chunks too
        a = rng.integers(0, 8, (n, 2)) + 0.5 if grid else rng.uniform(0, 1000, (n, 2))
        b = rng.integers(0, 8, (m, 2)) + 0.5 if grid else rng.uniform(0, 1000, (m, 2))
        assert _closest(a, b, chunk=int(rng.integers(1, 20))) == closest_vertices(a, b)
        assert _closest(a, b) == closest_vertices(a, b)
    ring = np.stack([np.cos(np.linspace(0, 2 * np.pi, 5000)), np.sin(np.linspace(0, 2 * np.pi, 5000))], axis=1)
    far = np.array([[3.0, -0.1], [4.0, -0.2]])  # nearest ring vertex: the last ones (angle just under 2π)
    assert _closest(ring, far) == closest_vertices(ring, far) and _closest(ring, far)[0] > 4000


# --- masks ⇄ RLE -----------------------------------------------------------------------------------------------

def test_decode_rle_is_the_boolean_mask() -> None:
    mask = np.zeros((7, 9), bool)
    mask[1:4, 2:8] = True
    mask[6, 0] = True
    coded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle = {"size": coded["size"], "counts": coded["counts"].decode()}
    decoded = decode_rle(rle)
    assert decoded.dtype == np.bool_ and decoded.shape == (7, 9) and np.array_equal(decoded, mask)
    assert rle_area(rle) == 19 and rles_areas([rle, rle]) == [19, 19] and rles_areas([]) == []
    again = polygons_to_rle(rle_polygons(rle), 7, 9)
    assert isinstance(again["counts"], str) and again["size"] == [7, 9]


def test_single_part_polygons_are_on_pixel_centres() -> None:
    one = np.zeros((6, 6), bool)
    one[2, 3] = True  # one pixel: its square
    assert [p.tolist() for p in mask_polygons(one)] == [[[3.0, 2.0], [4.0, 2.0], [4.0, 3.0], [3.0, 3.0]]]
    two = np.zeros((6, 6), bool)
    two[1, 1:3] = True  # two pixels: their rectangle
    assert [p.tolist() for p in mask_polygons(two)] == [[[1.0, 1.0], [3.0, 1.0], [3.0, 2.0], [1.0, 2.0]]]
    block = np.zeros((6, 6), bool)
    block[1:4, 2:5] = True
    (poly,) = mask_polygons(block, offset=(10, 20))
    assert poly.dtype == np.float64 and poly.tolist() == [[12.5, 21.5], [12.5, 23.5], [14.5, 23.5], [14.5, 21.5]]


def test_batched_tracing_keeps_each_canvas_within_max_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Crops share a canvas only while it fits in ``max_bytes`` (a crop bigger than that gets a canvas alone), every
    crop is traced exactly once, and masks that do not fit at all are traced one by one."""
    import autolabel.geometry as geometry

    canvases: list[tuple[int, int, int]] = []
    real = geometry._trace_side_by_side

    def recording(masks, crops, tall, wide, out):
        assert tall == max(c[4] for c in crops) and wide == sum(c[3] for c in crops) + len(crops) - 1
        canvases.append((len(crops), tall, wide))
        return real(masks, crops, tall, wide, out)

    monkeypatch.setattr(geometry, "_trace_side_by_side", recording)
    masks = np.zeros((6, 30, 40), np.uint8)
    for k, mask in enumerate(masks):
        mask[k:, :] = 1  # full-width crops: side by side (with a blank column between) they outgrow the stack
    rles = [{"size": r["size"], "counts": r["counts"].decode()}
            for r in mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0)))]
    expected = [mask_polygons(m)[0].tolist() for m in masks]
    for max_bytes, n_canvases in ((7200, 2), (7349, 2), (7350, 1), (7199, 0)):  # 6 x 30 x 40 = 7200; 30 x 245
        canvases.clear()
        traced = rles_polygons(rles, max_bytes=max_bytes)
        assert len(canvases) == n_canvases, (max_bytes, canvases)
        assert sum(n for n, _, _ in canvases) == (6 if n_canvases else 0)
        assert all(tall * wide <= max_bytes or n == 1 for n, tall, wide in canvases), (max_bytes, canvases)
        assert [[p.tolist() for p in t] for t in traced] == [[e] for e in expected]
