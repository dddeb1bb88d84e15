"""COCO AP evaluated per block of images (bounded memory) equals one COCOeval over all images, to the last bit."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from autolabel.quality.data import Paired, Side
from autolabel.quality.eval import coco_ap
from autolabel.quality.match import ClassMatch, ImageMatch

CLASSES = ["cat", "dog", "bird"]


def _side(rng: np.random.Generator, image: np.ndarray, score: np.ndarray, segm: bool) -> Side:
    n = len(image)
    xy = rng.uniform(0, 200, (n, 2))
    xyxy = np.hstack([xy, xy + rng.uniform(5, 60, (n, 2))])
    polys = [[[x1, y1, x2, y1, x2, y2, x1, y2]] for x1, y1, x2, y2 in xyxy.tolist()] if segm else [None] * n
    obj = np.empty(n, dtype=object)
    obj[:] = [CLASSES[c] for c in rng.integers(0, len(CLASSES), n)]
    const = np.empty(n, dtype=object)
    const[:] = ["kept"] * n
    return Side(image.astype(np.int32), xyxy, obj, score, const, const.copy(), const.copy(), polys)


def _random_paired(seed: int, segm: bool) -> Paired:
    """40 images in shuffled row order, some with no box, one with 150 predictions (over the 100-per-image cap),
    tied and unknown scores, predictions that jitter the truth (so AP is neither 0 nor 1)."""
    rng = np.random.default_rng(seed)
    n_images = 40
    gt_image = rng.permutation(np.repeat(np.arange(n_images), rng.integers(0, 6, n_images)))
    gt_image = gt_image[gt_image % 9 != 4]  # a few images with no ground truth
    gt = _side(rng, gt_image, np.ones(len(gt_image)), segm)
    pick = rng.integers(0, len(gt), 3 * len(gt))
    run_image = np.concatenate([gt.image[pick], np.full(150, 3)])
    score = rng.choice([0.2, 0.5, 0.5, 0.9], len(run_image)) + rng.integers(0, 2, len(run_image)) * rng.random(
        len(run_image)) * 0.05
    score[::17] = np.nan
    run = _side(rng, run_image, score, segm)
    run.xyxy[:len(pick)] = gt.xyxy[pick] + rng.normal(0, 4, (len(pick), 4))
    run.cls[:len(pick)] = np.where(rng.random(len(pick)) < 0.8, gt.cls[pick], run.cls[:len(pick)])
    if segm:
        run.segmentation[:len(pick)] = [gt.segmentation[i] for i in pick.tolist()]
    order = rng.permutation(len(run))
    run = Side(run.image[order], run.xyxy[order], run.cls[order], run.score[order], run.status[order],
               run.reason[order], run.stage[order], [run.segmentation[i] for i in order.tolist()])
    sizes = np.full((n_images, 2), 300)
    return Paired([f"{i}.jpg" for i in range(n_images)], sizes, run, gt, ImageMatch([], {}, [], []),
                  ClassMatch({c: c for c in CLASSES}, {c: c for c in CLASSES}), n_images, n_images)


def _plain(paired: Paired, iou_type: str) -> list[float]:
    """A user's COCOeval over the same boxes (all area ranges, maxDets 1/10/100): AP per class at area all, 100."""
    run, gt = paired.run, paired.gt
    images = [{"id": k + 1, "width": 300, "height": 300} for k in range(len(paired.names))]
    categories = [{"id": k + 1, "name": c} for k, c in enumerate(CLASSES)]

    def anns(side: Side, score: bool) -> list[dict]:
        out = []
        for i in np.argsort(side.image, kind="stable").tolist():
            x1, y1, x2, y2 = side.xyxy[i].tolist()
            a = {"id": len(out) + 1, "image_id": int(side.image[i]) + 1, "category_id": CLASSES.index(side.cls[i]) + 1,
                 "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0}
            if score:
                a["score"] = 0.0 if np.isnan(side.score[i]) else float(side.score[i])
            if iou_type == "segm":
                a["segmentation"] = side.segmentation[i]
            out.append(a)
        return out

    with contextlib.redirect_stdout(io.StringIO()):
        truth, dets = COCO(), COCO()
        truth.dataset = {"images": images, "categories": categories, "annotations": anns(gt, False)}
        dets.dataset = {"images": images, "categories": categories, "annotations": anns(run, True)}
        truth.createIndex()
        dets.createIndex()
        ev = COCOeval(truth, dets, iou_type)
        ev.evaluate()
        ev.accumulate()
    p = ev.eval["precision"]
    return [float(p[:, :, k, 0, -1][p[:, :, k, 0, -1] > -1].mean()) for k in range(len(CLASSES))]


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
@pytest.mark.parametrize("seed", [0, 1])
def test_ap_over_blocks_of_images_equals_one_block_and_plain_cocoeval(seed: int, iou_type: str) -> None:
    paired = _random_paired(seed, iou_type == "segm")
    op, gt_rows = np.arange(len(paired.run)), np.arange(len(paired.gt))
    whole = coco_ap(paired, op, gt_rows, iou_type, block=10**6)
    assert 0.05 < whole["overall"]["ap"] < 0.95
    for block in (1, 7, 16):
        assert coco_ap(paired, op, gt_rows, iou_type, block=block) == whole
    assert [whole["per_class"][c]["ap"] for c in CLASSES] == _plain(paired, iou_type)
