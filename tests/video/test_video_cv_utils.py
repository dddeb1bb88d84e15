"""The stand-in for the hub kernel Sam3VideoModel would skip NMS and hole filling without (kernels-community/cv-utils):
it does what transformers asks of the kernel, and transformers' own functions then filter as they should."""

from __future__ import annotations

import numpy as np
import torch

from autolabel.models.sam3_video import CvUtilsFallback, install_cv_utils_fallback


def test_greedy_mask_nms_on_an_iou_matrix() -> None:
    ious = torch.tensor([[1.0, 0.8, 0.1, 0.0], [0.8, 1.0, 0.6, 0.0], [0.1, 0.6, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    probs = torch.tensor([0.5, 0.9, 0.4, 0.2])
    # 1 (best) is kept and suppresses 0 (0.8) and 2 (0.6); 3 overlaps nothing
    assert CvUtilsFallback.generic_nms(ious, probs, 0.5).tolist() == [1, 3]
    assert CvUtilsFallback.generic_nms(ious, probs, 0.7).tolist() == [1, 2, 3]  # 2 overlaps 1 by only 0.6


def test_connected_components_give_each_pixel_its_component_area() -> None:
    mask = np.zeros((1, 1, 5, 6), np.uint8)
    mask[0, 0, 0:2, 0:2] = 1  # 4 px
    mask[0, 0, 2, 2] = 1  # touches the first diagonally: 8-connected, one component of 5
    mask[0, 0, 4, 5] = 1  # alone: 1 px
    labels, counts = CvUtilsFallback.cc_2d(torch.from_numpy(mask))
    assert labels.dtype == torch.int32 and labels.shape == mask.shape
    assert counts[0, 0, 0, 0] == counts[0, 0, 2, 2] == 5 and counts[0, 0, 4, 5] == 1 and counts[0, 0, 3, 3] == 0
    assert labels[0, 0, 0, 0] == labels[0, 0, 2, 2] != labels[0, 0, 4, 5]


def test_transformers_filters_with_it_where_its_kernel_is_missing() -> None:
    from transformers.models.sam3_video import modeling_sam3_video as video

    assert install_cv_utils_fallback()  # no kernels package or hub here: transformers would skip these steps
    masks = torch.zeros(3, 8, 8)
    masks[0, :4, :4] = masks[1, :4, :5] = masks[2, 5:, 5:] = 1.0  # 0 and 1 overlap (IoU 0.8)
    keep = video.nms_masks(torch.tensor([0.9, 0.7, 0.6]), masks, prob_threshold=0.5, iou_threshold=0.5)
    assert keep.tolist() == [True, False, True]
    scores = torch.full((1, 1, 8, 8), 2.0)
    scores[0, 0, 3, 3] = -2.0  # a one-pixel hole
    filled = video.fill_holes_in_mask_scores(scores, max_area=4)
    assert filled[0, 0, 3, 3] > 0 and (filled[0, 0] > 0).all()
