"""Confidence for Florence-2's answers, from the generation's own token probabilities (pure functions, no torch).

Florence-2 writes every answer as text: a label, then quantized ``<loc_K>`` tokens (4 for a box, 8 for a quad, an
even number per polygon). Its post-processor turns that text into boxes with regular expressions and returns no
score. To score each box we must know *which tokens* made it. :func:`locate` runs the post-processor's own
regular expressions over the same text, keeping character offsets, and maps them to token positions through the
tokens' character spans (``Florence2PostProcessor.decode_with_spans``). :func:`align` then pairs each instance the
post-processor returned with one located here, by its coordinates, in order — so the coordinates users get are
exactly transformers', and a parse we could not align is noticed instead of mis-scored.

A box's confidence is the geometric mean of its tokens' probabilities: ``exp(mean(log p))``. By default its
location tokens (the box is what detection is about, and a confident label with a guessed position is a bad box);
``score: locations+label`` adds the label's tokens, ``label`` uses them alone. Text (captions, OCR) gets the
geometric mean over its text tokens: the per-token perplexity inverted, comparable across lengths.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Sequence

import numpy as np

ScoreMethod = Literal["locations", "locations+label", "label"]

#: what each method is called in provenance
SCORE_METHODS: dict[str, str] = {
    "locations": "geometric mean of location-token probabilities",
    "locations+label": "geometric mean of location- and label-token probabilities",
    "label": "geometric mean of label-token probabilities (location tokens where there is no label)",
    "text": "geometric mean of text-token probabilities",
}

#: the post-processor's default OCR pattern (a checkpoint's post_processor_config may set its own)
OCR_PATTERN = r"(.+?)<loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)>"

_LOC = re.compile(r"<loc_(\d+)>")
_BOX = re.compile(r"<loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)>")
_BOXES = re.compile(r"([^<]+(?:<loc_\d+>){4,})")
_BOXES_NO_LABEL = re.compile(r"(?:(?:<loc_\d+>){4,})")
_LABEL = re.compile(r"^\s*(.*?)(?=<od>|</od>|<box>|</box>|<bbox>|</bbox>|<loc_)")
_POLY_TAGS = r"<loc_\d+>|<sep>|<poly>|</poly>"
_POLYS = re.compile(rf"([^<]+(?:{_POLY_TAGS}){{4,}})")
_POLYS_NO_LABEL = re.compile(rf"(?:(?:{_POLY_TAGS}){{4,}})")
_POLY_LABEL = re.compile(r"^\s*(.*?)(?=<od>|</od>|<box>|</box>|<bbox>|</bbox>|<loc_|<poly>)")
_POLY_PART = re.compile(r"<poly>(.*?)</poly>")
_POLY_POINTS = re.compile(r"((?:<loc_\d+>)+)(?:<sep>|$)")
_LEADING_LOC = re.compile(r"^<loc_\d+>")


@dataclass
class Located:
    """One instance of an answer (a box, quad or polygon set) and the tokens that wrote it.

    ``bins``: its location bins, one list per shape (a box: ``[[x1, y1, x2, y2]]``; a quad: one list of 8; a
    segmentation: one list per polygon). ``locs`` / ``label``: token positions of its location tokens and of its
    label text (``label`` may be empty). ``phrase``: the label as written (the post-processor's cleaned label is
    what users see).
    """

    bins: list[list[int]]
    locs: np.ndarray
    label: np.ndarray
    phrase: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def token_index(spans: Sequence[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Start and end character offsets of each token, as arrays (what :func:`tokens_in` searches)."""
    arr = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
    return arr[:, 0], arr[:, 1]


def tokens_in(index: tuple[np.ndarray, np.ndarray], start: int, end: int) -> np.ndarray:
    """Positions of the tokens whose characters overlap ``[start, end)`` (none for an empty range).

    >>> tokens_in(token_index([(0, 1), (1, 3), (3, 10)]), 2, 4).tolist()
    [1, 2]
    """
    starts, ends = index
    if end <= start:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero((starts < end) & (ends > start) & (ends > starts))


def _stripped(text: str, start: int, end: int) -> tuple[int, int]:
    """``[start, end)`` narrowed to exclude leading and trailing whitespace of ``text[start:end]``."""
    part = text[start:end]
    lead = len(part) - len(part.lstrip())
    trail = len(part) - len(part.rstrip())
    return start + lead, max(start + lead, end - trail)


def _locs(
    index: tuple[np.ndarray, np.ndarray], matches: Sequence[re.Match], offset: int
) -> tuple[list[int], np.ndarray]:
    bins = [int(m.group(1)) for m in matches]
    pos = [tokens_in(index, offset + m.start(), offset + m.end()) for m in matches]
    return bins, (np.concatenate(pos) if pos else np.zeros(0, dtype=np.int64))


def locate_boxes(
    text: str, spans: Sequence[tuple[int, int]], *, labelled: bool = True, banned: Sequence[str] = ()
) -> list[Located]:
    """Boxes as the post-processor finds them (``description_with_bboxes``, ``bboxes``, ``phrase_grounding``).

    A label followed by N >= 4 location tokens gives N // 4 boxes sharing the label; ``labelled=False`` reads
    location runs alone (region proposals); labels in ``banned`` are skipped (grounding's banned phrases).

    >>> text = "car<loc_1><loc_2><loc_3><loc_4>"
    >>> [(b.bins, b.locs.tolist(), b.label.tolist()) for b in locate_boxes(text, [(i, i + 1) for i in range(3)]
    ...  + [(3 + 7 * k, 10 + 7 * k) for k in range(4)])]
    [([[1, 2, 3, 4]], [3, 4, 5, 6], [0, 1, 2])]
    """
    index = token_index(spans)
    out: list[Located] = []
    for m in (_BOXES if labelled else _BOXES_NO_LABEL).finditer(text):
        chunk, offset = m.group(0), m.start()
        label = _LABEL.search(chunk)
        if label is None:
            continue
        phrase = label.group().strip()
        if phrase in banned:
            continue
        lstart, lend = _stripped(chunk, label.start(), label.end())
        label_pos = tokens_in(index, offset + lstart, offset + lend)
        for box in _BOX.finditer(chunk):
            bins = [int(box.group(j)) for j in range(1, 5)]
            locs = np.concatenate([tokens_in(index, offset + box.start(j), offset + box.end(j)) for j in range(1, 5)])
            out.append(Located([bins], locs, label_pos, phrase))
    return out


def locate_quads(text: str, spans: Sequence[tuple[int, int]], pattern: str | None = None) -> list[Located]:
    """OCR lines as the post-processor finds them: text, then 8 location tokens (``ocr``), before any area check."""
    index = token_index(spans)
    out: list[Located] = []
    for m in re.finditer(pattern or OCR_PATTERN, text):
        if m.lastindex is None or m.lastindex < 9:
            continue
        bins = [int(m.group(j)) for j in range(2, 10)]
        locs = np.concatenate([tokens_in(index, m.start(j), m.end(j)) for j in range(2, 10)])
        lstart, lend = _stripped(text, m.start(1), m.end(1))
        out.append(Located([bins], locs, tokens_in(index, lstart, lend), m.group(1).strip()))
    return out


def locate_polygons(text: str, spans: Sequence[tuple[int, int]], *, labelled: bool = False) -> list[Located]:
    """Segmentations as the post-processor finds them (``polygons``, ``description_with_polygons``).

    Each ``<poly>...</poly>`` (or, without those tags, the whole run) is one instance; ``<sep>`` splits it into
    polygons; an odd trailing location is dropped, as the post-processor drops it.
    """
    index = token_index(spans)
    out: list[Located] = []
    for m in (_POLYS if labelled else _POLYS_NO_LABEL).finditer(text):
        chunk, offset = m.group(0), m.start()
        lead = _LEADING_LOC.match(chunk)
        cut = lead.end() if lead else 0
        rest = chunk[cut:]
        if not rest and labelled:
            continue
        label = _POLY_LABEL.search(rest)
        if label is None:
            continue
        lstart, lend = _stripped(rest, label.start(), label.end())
        label_pos = tokens_in(index, offset + cut + lstart, offset + cut + lend)
        if "<poly>" in chunk and "</poly>" in chunk:
            parts = [(p.group(1), p.start(1)) for p in _POLY_PART.finditer(chunk)]
        else:
            parts = [(chunk, 0)]
        for part, part_offset in parts:
            polygons = list(_POLY_POINTS.finditer(part))
            if not polygons:
                continue
            all_bins: list[list[int]] = []
            all_locs = []
            for poly in polygons:
                points = list(_LOC.finditer(poly.group(1)))
                if len(points) % 2:
                    points = points[:-1]
                bins, locs = _locs(index, points, offset + part_offset + poly.start(1))
                all_bins.append(bins)
                all_locs.append(locs)
            out.append(Located(all_bins, np.concatenate(all_locs), label_pos, label.group().strip()))
    return out


def locate_text(text: str, spans: Sequence[tuple[int, int]]) -> list[Located]:
    """The whole answer as one instance: its text tokens as ``label``, any location tokens as ``locs``."""
    index = token_index(spans)
    loc_matches = list(_LOC.finditer(text))
    bins, locs = _locs(index, loc_matches, 0)
    words = np.setdiff1d(np.flatnonzero(index[1] > index[0]), locs)
    return [Located([bins] if bins else [], locs, words, _LOC.sub("", text).strip())]


def locate(
    parse_type: str,
    text: str,
    spans: Sequence[tuple[int, int]],
    *,
    banned: Sequence[str] = (),
    ocr_pattern: str | None = None,
) -> list[Located]:
    """Every instance the post-processor's ``parse_type`` can return for ``text``, with its token positions.

    ``parse_type`` is the post-processor's name for a task's parser (``Florence2Processor.
    tasks_answer_post_processing_type``). The post-processor may return fewer (OCR lines below its area
    threshold): pair them with :func:`align`.
    """
    if parse_type in ("description_with_bboxes", "phrase_grounding"):
        return locate_boxes(text, spans, banned=banned if parse_type == "phrase_grounding" else ())
    if parse_type == "bboxes":
        return locate_boxes(text, spans, labelled=False)
    if parse_type == "ocr":
        return locate_quads(text, spans, ocr_pattern)
    if parse_type == "polygons":
        return locate_polygons(text, spans, labelled=False)
    if parse_type == "description_with_polygons":
        return locate_polygons(text, spans, labelled=True)
    if parse_type == "description_with_bboxes_or_polygons":
        if "<poly>" in text:
            return locate_polygons(text, spans, labelled=True)
        return locate_boxes(text, spans)
    if parse_type == "pure_text":
        return locate_text(text, spans)
    raise ValueError(f"unknown Florence-2 parse type {parse_type!r}")


def align(
    located: Sequence[Located],
    coordinates: Sequence[Any],
    dequantize: Callable[[list[list[int]]], Any],
) -> list[int] | None:
    """For each instance the post-processor returned (``coordinates``, in its order), the index of the located
    instance it came from; ``None`` when some cannot be paired (then no score can be trusted).

    Instances pair when ``dequantize(located.bins)`` equals the returned coordinates; the post-processor keeps
    order and may only skip instances, so a greedy in-order scan is exact.
    """
    out: list[int] = []
    j = 0
    for coords in coordinates:
        want = _nested(coords)
        while j < len(located) and _nested(dequantize(located[j].bins)) != want:
            j += 1
        if j == len(located):
            return None
        out.append(j)
        j += 1
    return out


def _nested(value: Any) -> Any:
    """Nested lists of numbers as tuples of floats (so ints and floats of equal value compare equal)."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return tuple(_nested(v) for v in value)
    return float(value)


def geometric_mean(logprobs: np.ndarray, positions: np.ndarray | None = None) -> float:
    """``exp(mean(log p))`` over ``positions`` of ``logprobs`` (all when None); NaN when there are none.

    >>> round(geometric_mean(np.log([0.9, 0.8, 0.7, 0.6])), 6)
    0.741559
    """
    values = np.asarray(logprobs, dtype=np.float64)
    if positions is not None:
        values = values[np.asarray(positions, dtype=np.int64)]
    if values.size == 0:
        return math.nan
    return float(np.exp(values.mean()))


def instance_score(instance: Located, logprobs: np.ndarray, method: ScoreMethod = "locations") -> float:
    """A box's / quad's / polygon's confidence by ``method`` (see :data:`SCORE_METHODS`)."""
    if method == "locations" or (method == "label" and not len(instance.label)):
        positions = instance.locs
    elif method == "label":
        positions = instance.label
    elif method == "locations+label":
        positions = np.concatenate([instance.locs, instance.label])
    else:
        raise ValueError(f"unknown score method {method!r} (known: {', '.join(SCORE_METHODS)})")
    return geometric_mean(logprobs, positions)
