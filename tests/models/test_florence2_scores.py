"""Which tokens wrote which Florence-2 box, quad or polygon, and the confidence that follows (pure functions).

Texts are tokenized the way the tiny test checkpoint tokenizes: one token per character of plain text, one per
``<loc_K>``, ``<poly>``, ``</poly>``, ``<sep>``. So token positions below can be counted by eye.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from autolabel.models.florence2_scores import (
    Located,
    align,
    geometric_mean,
    instance_score,
    locate,
    locate_boxes,
    locate_polygons,
    locate_quads,
    locate_text,
    tokens_in,
    token_index,
)

_SPECIAL = re.compile(r"(<loc_\d+>|<poly>|</poly>|<sep>)")


def spans(text: str) -> list[tuple[int, int]]:
    """Character span of each token of ``text`` (tiny tokenizer: chars, and one token per tag)."""
    out, pos = [], 0
    for part in _SPECIAL.split(text):
        if not part:
            continue
        pieces = [part] if _SPECIAL.fullmatch(part) else list(part)
        for piece in pieces:
            out.append((pos, pos + len(piece)))
            pos += len(piece)
    return out


def loc(*bins: int) -> str:
    return "".join(f"<loc_{b}>" for b in bins)


def test_tokens_in_finds_overlapping_tokens_only():
    index = token_index([(0, 1), (1, 3), (3, 10), (10, 10)])
    assert tokens_in(index, 2, 4).tolist() == [1, 2]
    assert tokens_in(index, 3, 3).tolist() == []
    assert tokens_in(index, 0, 11).tolist() == [0, 1, 2]  # the empty-span token overlaps nothing


def test_boxes_share_their_label_and_an_incomplete_group_is_ignored():
    # tokens: c a r (0-2), 8 locations (3-10: two boxes), ' ' d o g (11-14), 5 locations (15-19: one box, one extra)
    text = "car" + loc(1, 2, 3, 4, 5, 6, 7, 8) + " dog" + loc(9, 10, 11, 12, 13)
    found = locate_boxes(text, spans(text))
    assert [f.bins for f in found] == [[[1, 2, 3, 4]], [[5, 6, 7, 8]], [[9, 10, 11, 12]]]
    assert [f.locs.tolist() for f in found] == [[3, 4, 5, 6], [7, 8, 9, 10], [15, 16, 17, 18]]
    assert [f.label.tolist() for f in found] == [[0, 1, 2], [0, 1, 2], [12, 13, 14]]  # " dog": the space is not label
    assert [f.phrase for f in found] == ["car", "car", "dog"]


def test_region_proposals_read_location_runs_without_labels():
    text = loc(1, 2, 3, 4) + loc(5, 6, 7, 8)
    found = locate(text=text, spans=spans(text), parse_type="bboxes")
    assert [f.bins for f in found] == [[[1, 2, 3, 4]], [[5, 6, 7, 8]]]
    assert [f.label.tolist() for f in found] == [[], []]
    # the labelled parser's regex reads the first tag's tail "loc_1>" as a label, as transformers' does
    (quirk,) = locate("description_with_bboxes", text, spans(text))
    assert (quirk.phrase, quirk.bins, quirk.label.tolist()) == ("loc_1>", [[2, 3, 4, 5]], [0])


def test_grounding_skips_banned_phrases_like_the_post_processor():
    text = "the image" + loc(1, 2, 3, 4) + "a car" + loc(5, 6, 7, 8)
    found = locate("phrase_grounding", text, spans(text), banned=("the image",))
    assert [f.phrase for f in found] == ["a car"]
    assert found[0].locs.tolist() == [18, 19, 20, 21]
    # od's parser bans nothing
    assert len(locate("description_with_bboxes", text, spans(text), banned=("the image",))) == 2


def test_ocr_quads_take_eight_locations_after_their_text():
    text = "HELLO" + loc(*range(10, 18)) + "WORLD" + loc(*range(20, 28))
    found = locate_quads(text, spans(text))
    assert [f.bins for f in found] == [[list(range(10, 18))], [list(range(20, 28))]]
    assert found[1].locs.tolist() == list(range(18, 26))
    assert found[1].label.tolist() == [13, 14, 15, 16, 17]
    assert [f.phrase for f in found] == ["HELLO", "WORLD"]


def test_polygons_split_on_sep_and_poly_tags_and_drop_an_odd_location():
    # no <poly> tags: one instance, <sep> splits it into two polygons; the odd trailing location is dropped
    text = loc(1, 2, 3, 4, 5, 6) + "<sep>" + loc(7, 8, 9, 10, 11, 12, 13)
    (one,) = locate_polygons(text, spans(text))
    assert one.bins == [[1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12]]
    assert one.locs.tolist() == [0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12]  # 6 is <sep>, 13 the odd one
    # <poly>...</poly> marks instances
    text = "<poly>" + loc(1, 2, 3, 4, 5, 6) + "</poly><poly>" + loc(7, 8, 9, 10, 11, 12) + "</poly>"
    found = locate_polygons(text, spans(text))
    assert [f.bins for f in found] == [[[1, 2, 3, 4, 5, 6]], [[7, 8, 9, 10, 11, 12]]]
    assert found[1].locs.tolist() == [9, 10, 11, 12, 13, 14]
    # labelled polygons (open-vocabulary detection answering with masks)
    text = "car<poly>" + loc(1, 2, 3, 4, 5, 6) + "</poly>"
    (car,) = locate("description_with_bboxes_or_polygons", text, spans(text))
    assert (car.phrase, car.label.tolist(), car.locs.tolist()) == ("car", [0, 1, 2], [4, 5, 6, 7, 8, 9])


def test_text_answers_score_their_text_tokens_not_their_locations():
    text = "car" + loc(1, 2, 3, 4)
    (whole,) = locate_text(text, spans(text))
    assert (whole.phrase, whole.label.tolist(), whole.locs.tolist()) == ("car", [0, 1, 2], [3, 4, 5, 6])


def test_align_pairs_results_in_order_and_skips_filtered_instances():
    located = [Located([[b]], np.array([k]), np.array([], dtype=np.int64)) for k, b in enumerate([10, 20, 30, 40])]
    double = lambda bins: [2 * bins[0][0]]  # noqa: E731 — a stand-in dequantizer
    assert align(located, [[20], [60], [80]], double) == [0, 2, 3]  # the post-processor dropped the second
    assert align(located, [[60], [20]], double) is None  # out of order: cannot come from these tokens
    assert align(located, [[21]], double) is None
    assert align(located, [], double) == []


def test_geometric_mean_and_score_methods():
    logprobs = np.log([0.5, 0.9, 0.8, 0.7, 0.6, 0.25])
    box = Located([[1, 2, 3, 4]], locs=np.array([1, 2, 3, 4]), label=np.array([0]))
    assert instance_score(box, logprobs, "locations") == pytest.approx((0.9 * 0.8 * 0.7 * 0.6) ** 0.25)
    assert instance_score(box, logprobs, "locations+label") == pytest.approx((0.5 * 0.9 * 0.8 * 0.7 * 0.6) ** 0.2)
    assert instance_score(box, logprobs, "label") == pytest.approx(0.5)
    unlabelled = Located([[1, 2, 3, 4]], locs=np.array([1, 2, 3, 4]), label=np.zeros(0, dtype=np.int64))
    assert instance_score(unlabelled, logprobs, "label") == instance_score(unlabelled, logprobs, "locations")
    assert math.isnan(geometric_mean(logprobs, np.zeros(0, dtype=np.int64)))
    with pytest.raises(ValueError, match="unknown score method"):
        instance_score(box, logprobs, "mean")  # type: ignore[arg-type]


def test_unknown_parse_type_is_an_error():
    with pytest.raises(ValueError, match="unknown Florence-2 parse type"):
        locate("boxes", "", [])
