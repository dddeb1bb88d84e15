"""Shapes from what the store keeps: masks (COCO RLE) ⇄ polygons, polygons rasterized, boxes as polygons.

Shared by the stages (Florence-2's polygons become masks) and the exports (masks become polygons, polygons RLE), so
a polygon is rasterized one way everywhere (pycocotools).

Conventions (pixels, displayed frame):

* Mask → polygons: one polygon per connected part (OpenCV external contours; holes are not represented — use
  RLE where they matter). Contour vertices are pixel indices; we add 0.5 to put them on pixel centres, as
  detectron2 does. Parts too thin for a contour of three points (one or two pixels) become their pixel square.
* YOLO segment labels hold one polygon per object: several parts are joined into one polygon by zero-width
  bridges between their closest vertices, the rule of Ultralytics' own converter (``merge_multi_segment``), so
  no part is lost and the filled area is the parts' area.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
from pycocotools import mask as mask_utils

#: COCO polygons must have at least 3 points (pycocotools reads a 4-number list as a box, not a polygon).
MIN_POINTS = 3


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    """One stored COCO RLE (``counts`` a str) as a boolean (H, W) mask."""
    return mask_utils.decode(_bytes(rle)).astype(bool)


def rle_area(rle: dict[str, Any]) -> int:
    """Pixel count of a stored COCO RLE, without decoding it."""
    return int(mask_utils.area(_bytes(rle)))


def rles_areas(rles: Sequence[dict[str, Any]]) -> list[int]:
    """:func:`rle_area` of several RLEs in one pycocotools call."""
    return [int(a) for a in mask_utils.area([_bytes(r) for r in rles])] if rles else []


def rle_polygons(rle: dict[str, Any]) -> list[np.ndarray]:
    """:func:`mask_polygons` of a stored RLE, traced only inside the mask's bounding box (fast for small objects
    in big images: the contour search is the cost)."""
    return rles_polygons([rle])[0]


def rles_polygons(rles: Sequence[dict[str, Any]], max_bytes: int = 64 << 20) -> list[list[np.ndarray]]:
    """:func:`rle_polygons` of several RLEs of one image, decoded in one pycocotools call and traced in one OpenCV
    call when they fit in ``max_bytes`` (most of the cost of a small mask is the per-call overhead), else one by one.

    Traced together, each mask's crop is laid side by side on one canvas with a blank column between crops: an
    outer contour never crosses a blank column, so each contour belongs to one crop, traced exactly as alone.
    """
    if not rles:
        return []
    coded = [_bytes(r) for r in rles]
    boxes = mask_utils.toBbox(coded).astype(int).tolist()
    height, width = coded[0]["size"]
    out: list[list[np.ndarray]] = [[] for _ in coded]
    if len(coded) * height * width > max_bytes:
        for k, (x, y, w, h) in enumerate(boxes):
            if w and h:
                out[k] = mask_polygons(mask_utils.decode(coded[k])[y : y + h, x : x + w], offset=(x, y))
        return out
    masks = mask_utils.decode(coded)  # (H, W, N)
    crops = [(k, x, y, w, h) for k, (x, y, w, h) in enumerate(boxes) if w and h]
    while crops:
        taken, tall, wide = 0, 0, -1
        while taken < len(crops):  # as many crops as fit in max_bytes (at least one)
            w, h = crops[taken][3], crops[taken][4]
            if taken and max(tall, h) * (wide + 1 + w) > max_bytes:
                break
            tall, wide, taken = max(tall, h), wide + 1 + w, taken + 1
        _trace_side_by_side(masks, crops[:taken], tall, wide, out)
        crops = crops[taken:]
    return out


def _trace_side_by_side(
    masks: np.ndarray, crops: list[tuple[int, int, int, int, int]], tall: int, wide: int, out: list[list[np.ndarray]]
) -> None:
    canvas = np.zeros((tall, wide), dtype=np.uint8)
    lefts, at = [], 0
    for k, x, y, w, h in crops:
        canvas[:h, at : at + w] = masks[y : y + h, x : x + w, k]
        lefts.append(at)
        at += w + 1
    contours, _ = cv2.findContours(canvas, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    found: dict[int, list[np.ndarray]] = {}
    for contour in contours:  # bisect on a list: np.searchsorted's per-call cost is ~10x a contour's
        t = bisect_right(lefts, int(contour[0, 0, 0])) - 1
        k, x, y, _, _ = crops[t]
        found.setdefault(k, []).append(contour[:, 0, :] + (x - lefts[t], y))  # back to the image's pixel grid
    for k, contours_of_k in found.items():
        out[k] = _parts(contours_of_k)


def mask_polygons(mask: np.ndarray, offset: tuple[int, int] = (0, 0)) -> list[np.ndarray]:
    """The parts of a boolean mask as (K, 2) float polygons (x, y), largest first; ``[]`` for an empty mask.
    ``offset`` is added to every point (where a crop of a bigger mask starts).

    >>> m = np.zeros((8, 8), bool); m[1:3, 1:4] = True
    >>> mask_polygons(m)[0].tolist()
    [[1.5, 1.5], [1.5, 2.5], [3.5, 2.5], [3.5, 1.5]]
    """
    contours, _ = cv2.findContours(np.ascontiguousarray(mask, dtype=np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_SIMPLE, offset=offset)
    return _parts([contour[:, 0, :] for contour in contours])


def _parts(contours: Sequence[np.ndarray]) -> list[np.ndarray]:
    """OpenCV's (K, 2) integer contours of one mask as polygons on pixel centres, largest first."""
    if len(contours) == 1 and len(contours[0]) >= MIN_POINTS:  # the common case: one part, no sort
        return [contours[0] + 0.5]  # int32 + 0.5 → float64, as astype then add
    parts = []
    for contour in contours:
        points = contour.astype(np.float64)
        if len(points) >= MIN_POINTS:
            parts.append(points + 0.5)
        else:  # a part one or two pixels across: its pixel square, so that it is not lost (plain floats: ints)
            xs, ys = points[:, 0].tolist(), points[:, 1].tolist()
            x0, y0, x1, y1 = min(xs), min(ys), max(xs) + 1.0, max(ys) + 1.0
            parts.append(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]))
    if len(parts) > 1:  # largest (polygon area) first, ties by position: the same whatever order OpenCV found
        parts.sort(key=lambda p: (-cv2.contourArea(p.astype(np.float32)), p[0, 1], p[0, 0]))
    return parts


def _bytes(rle: dict[str, Any]) -> dict[str, Any]:
    return {"size": rle["size"], "counts": rle["counts"].encode("ascii")}


def box_polygon(xyxy: Sequence[float]) -> np.ndarray:
    """A box's four corners, clockwise from the top-left (a box-only annotation's segmentation)."""
    x1, y1, x2, y2 = xyxy
    return np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], dtype=np.float64)


def rasterize(polygons: Sequence[Sequence[float]], height: int, width: int) -> dict[str, Any]:
    """Polygons (one object; flat ``x, y, x, y, ...`` pixel lists) as pycocotools' compressed RLE of their union.
    The one rasterizer: every polygon that becomes a mask goes through here."""
    return mask_utils.merge(mask_utils.frPyObjects([list(p) for p in polygons], height, width))


def polygons_to_rle(polygons: Sequence[np.ndarray], height: int, width: int) -> dict[str, Any]:
    """Polygons (one object) rasterised by pycocotools into one compressed RLE with a JSON-safe ``counts``."""
    rle = rasterize([np.asarray(p, dtype=np.float64).ravel().tolist() for p in polygons], height, width)
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def polygons_mask(polygons: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    """The union of an object's polygons (flat pixel coordinates) as a boolean (H, W) mask.

    Polygons with fewer than :data:`MIN_POINTS` points cover nothing (pycocotools would read 4 numbers as a box).
    """
    flat = [[float(v) for v in p] for p in polygons if len(p) >= 2 * MIN_POINTS]
    if not flat:
        return np.zeros((height, width), dtype=bool)
    return mask_utils.decode(rasterize(flat, height, width)).astype(bool)


def join_parts(parts: Sequence[np.ndarray]) -> np.ndarray:
    """Join polygons into one by zero-width bridges between consecutive parts' closest vertices.

    The walk goes around part 0, out along each bridge through one side of each middle part, around the last
    part, and back through the other sides: every bridge is walked once each way, so it encloses no area.

    >>> a = np.array([[0, 0], [2, 0], [2, 2], [0, 2]], float); b = a + [5, 0]
    >>> join_parts([a, b]).tolist()
    [[2.0, 0.0], [2.0, 2.0], [0.0, 2.0], [0.0, 0.0], [2.0, 0.0],
     [5.0, 0.0], [7.0, 0.0], [7.0, 2.0], [5.0, 2.0], [5.0, 0.0]]
    """
    if len(parts) == 1:
        return np.asarray(parts[0], dtype=np.float64).reshape(-1, 2)
    parts = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in parts]
    last = len(parts) - 1
    bridges = [_closest(parts[i], parts[i + 1]) for i in range(last)]  # (vertex on part i, vertex on part i+1)
    forward = [_arc(parts[0], bridges[0][0], bridges[0][0], full=True)]
    for k in range(1, last):
        forward.append(_arc(parts[k], bridges[k - 1][1], bridges[k][0]))
    forward.append(_arc(parts[last], bridges[last - 1][1], bridges[last - 1][1], full=True))
    back = [_arc(parts[k], bridges[k][0], bridges[k - 1][1], full=bridges[k][0] == bridges[k - 1][1])
            for k in range(last - 1, 0, -1)]
    return np.concatenate(forward + back)


def _arc(points: np.ndarray, start: int, end: int, full: bool = False) -> np.ndarray:
    """Vertices from ``start`` to ``end`` inclusive, in ring order (all the way round when ``full``)."""
    n = len(points)
    steps = (end - start) % n
    if full and steps == 0:
        steps = n
    return points[(start + np.arange(steps + 1)) % n]


def _closest(a: np.ndarray, b: np.ndarray, chunk: int = 2048) -> tuple[int, int]:
    """Indices of the closest pair of vertices between two polygons (chunked: no n×m matrix for big ones); the
    first closest in row-major order, as ``argmin``. Small ones in plain floats: numpy's per-call cost dominates."""
    if len(a) * len(b) <= 256:
        best, pair = np.inf, (0, 0)
        bs = b.tolist()
        for i, (ax, ay) in enumerate(a.tolist()):
            for j, (bx, by) in enumerate(bs):
                dx, dy = ax - bx, ay - by
                d = dx * dx + dy * dy  # what numpy's (a - b) ** 2 summed over x, y gives, bit for bit
                if d < best:
                    best, pair = d, (i, j)
        return pair
    best, pair = np.inf, (0, 0)
    for start in range(0, len(a), chunk):
        d = ((a[start : start + chunk, None, :] - b[None, :, :]) ** 2).sum(-1)
        i, j = np.unravel_index(int(np.argmin(d)), d.shape)
        if d[i, j] < best:
            best, pair = float(d[i, j]), (start + int(i), int(j))
    return pair
