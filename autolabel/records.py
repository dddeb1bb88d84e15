"""Labels ⇄ the stored record: the one JSON shape the run store keeps and everything downstream reads.

:func:`to_record` is the one writer and :func:`from_record` the one reader (exports, push, eval and workers of
a distributed executor go through them, or read the plain JSON below). The shape is versioned by
:data:`SCHEMA_VERSION`, kept in the store's ``meta`` table (``record_version``): a change that older readers
cannot read bumps it, and a store written with a newer version is refused rather than misread.

Shape (version 1), one object per image; every list under ``boxes`` has one entry per box, in the same order::

    {
      "width": 640, "height": 480,            # displayed frame (EXIF orientation applied), pixels
      "boxes": {
        "xyxy": [[x1, y1, x2, y2], ...],      # absolute pixels, float, rounded to 3 decimals
        "confidence": [0.87, null, ...],      # null: the model gave no score (NaN in memory)
        "data": {                             # the columns of Labels (see autolabel.labels.COLUMNS), always:
          "class_name": ["person", ...],      #   ontology class, "" for a phrase kept without one
          "phrase": [...], "stage": [...],    #   the model's text for the box; the stage that made it
          "status": ["kept" | "dropped" | "flagged", ...], "reason": ["" | "low_score" | ..., ...],
          "text": [...], "has_mask": [true, ...],
          "...": [...]                        #   optional columns stages add: polygon ([[x, y], ...] per box),
        },                                    #   quad (8 numbers), predicted_iou, stability_score, ...
        "mask": [{"size": [h, w], "counts": "..."} | null, ...]   # only when some box has a mask:
      },                                                          # COCO compressed RLE (pycocotools)
      "texts": [{"kind": "caption", "text": "...", "score": 0.9, "stage": "caption",
                 "status": "kept", "reason": ""}, ...],           # image-level texts (captions, OCR pages)
      "provenance": {"<stage>": {"model": "...", "revision": "...", "task": "...", ...}}
    }

>>> from autolabel.labels import Labels
>>> record = to_record(Labels(width=4, height=3))
>>> sorted(record), record["boxes"]["xyxy"], record["boxes"]["data"]["status"]
(['boxes', 'height', 'provenance', 'texts', 'width'], [], [])
>>> from_record(record).width
4
"""

from __future__ import annotations

import math
from itertools import chain
from typing import Any

import numpy as np
import supervision as sv
from pycocotools import mask as mask_utils

from .labels import Labels, Text, with_columns

#: Version of the record's JSON shape (above). Bump it when a reader of the previous version could misread.
SCHEMA_VERSION = 1


def encode_mask(mask: np.ndarray) -> dict[str, Any]:
    """A boolean (H, W) mask as COCO compressed RLE with a JSON-safe ``counts`` string."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode_masks(rles: list[dict[str, Any]]) -> np.ndarray:
    """COCO RLEs (all of one image) as a boolean (N, H, W) array."""
    coded = [{"size": r["size"], "counts": r["counts"].encode("ascii")} for r in rles]
    return np.moveaxis(mask_utils.decode(coded), -1, 0).astype(bool)


def to_record(labels: Labels) -> dict[str, Any]:
    """Everything in ``labels`` as plain JSON types (NaN → None)."""
    det = with_columns(labels.detections)
    boxes: dict[str, Any] = {
        "xyxy": np.round(det.xyxy.astype(np.float64), 3).tolist(),
        "confidence": _jsonable(det.confidence),
        "data": {key: _jsonable(value) for key, value in det.data.items()},
    }
    if det.mask is not None:
        has = det.data["has_mask"]
        boxes["mask"] = [encode_mask(m) if h else None for m, h in zip(det.mask, has)]
    return {
        "width": labels.width,
        "height": labels.height,
        "boxes": boxes,
        "texts": [vars(t) | {"score": _num(t.score)} for t in labels.texts],
        "provenance": labels.provenance,
    }


def from_record(record: dict[str, Any]) -> Labels:
    """The inverse of :func:`to_record`."""
    width, height = int(record["width"]), int(record["height"])
    boxes = record["boxes"]
    n = len(boxes["xyxy"])
    mask = None
    if boxes.get("mask") is not None:
        mask = np.zeros((n, height, width), dtype=bool)
        present = [i for i, m in enumerate(boxes["mask"]) if m is not None]
        if present:
            mask[present] = decode_masks([boxes["mask"][i] for i in present])
    detections = sv.Detections(
        xyxy=np.asarray(boxes["xyxy"], dtype=np.float32).reshape(-1, 4),
        mask=mask,
        confidence=np.asarray([np.nan if c is None else c for c in boxes["confidence"]], dtype=np.float32),
        data={key: _column(values, n) for key, values in boxes["data"].items()},
    )
    return Labels(
        width=width,
        height=height,
        detections=with_columns(detections),
        texts=[Text(**t) for t in record.get("texts", [])],
        provenance=record.get("provenance", {}),
    )


def problem(record: Any) -> str | None:
    """Why a stored record cannot be read back as the shape above (one line), or None when it can.

    What every reader relies on, checked before it reads: a row failing this is skipped by exports with a count
    and is not "done" for the next run, which labels its image again. Columns written before they existed may be
    missing (readers give them defaults), except ``class_name`` where there are boxes: without it every box would
    be dropped silently.

    >>> problem(to_record(Labels(width=4, height=3))) is None
    True
    >>> problem({"width": 4, "height": 3, "boxes": {"xyxy": [[0, 0, 1, 1]], "confidence": [], "data": {}}})
    'boxes.confidence has 0 entries for 1 boxes'
    >>> problem({"width": 4, "height": 3, "boxes": {"xyxy": [[0, 0, 1, True]], "confidence": [None],
    ...                                             "data": {"class_name": ["cat"]}}})
    'boxes.xyxy holds something other than lists of 4 numbers'
    """
    if not isinstance(record, dict):
        return f"a JSON {type(record).__name__}, not an object"
    for key in ("width", "height"):
        value = record.get(key)
        if type(value) is not int or value <= 0:
            return f"{key} is {value!r}, not a positive integer"
    boxes = record.get("boxes")
    if not isinstance(boxes, dict):
        return "no boxes object"
    xyxy, confidence, data = boxes.get("xyxy"), boxes.get("confidence"), boxes.get("data")
    if not isinstance(xyxy, list):
        return "boxes.xyxy is not a list"
    n = len(xyxy)
    if not isinstance(data, dict):
        return "boxes.data is not an object"
    mask = boxes.get("mask")
    for key, value in (("confidence", confidence), ("mask", mask), *data.items()):
        if type(value) is not list or len(value) != n:
            if key == "mask" and value is None:
                continue
            got = f"{len(value)} entries" if isinstance(value, list) else f"a {type(value).__name__}"
            return f"boxes.{key if key in ('confidence', 'mask') else 'data.' + key} has {got} for {n} boxes"
    if n and "class_name" not in data:
        return "boxes.data.class_name is missing"
    # set(map(type, ...)) runs in C: this check costs a fraction of the json.loads before it
    if not set(map(type, xyxy)) <= _LIST or not set(map(len, xyxy)) <= _FOUR or not set(
            map(type, chain.from_iterable(xyxy))) <= _NUMBER:
        return "boxes.xyxy holds something other than lists of 4 numbers"
    if not set(map(type, confidence)) <= _NUMBER_OR_NONE:  # type: ignore[arg-type]
        return "boxes.confidence holds something other than numbers and nulls"
    if n and not set(map(type, data["class_name"])) <= _STR_OR_NONE:
        return "boxes.data.class_name holds something other than strings"
    for m in mask or ():
        if m is not None and not (type(m) is dict and type(m.get("size")) is list and type(m.get("counts")) is str):
            return "boxes.mask holds something other than COCO RLEs and nulls"
    texts = record.get("texts", [])
    if not isinstance(texts, list) or not all(isinstance(t, dict) and _TEXT_NEEDS <= set(t) <= _TEXT_KEYS
                                              for t in texts):
        return f"texts is not a list of objects with keys {', '.join(sorted(_TEXT_NEEDS))} (and no others)"
    if not isinstance(record.get("provenance", {}), dict):
        return "provenance is not an object"
    return None


_LIST, _FOUR, _STR_OR_NONE = frozenset({list}), frozenset({4}), frozenset({str, type(None)})
_NUMBER = frozenset({int, float})  # type() of a JSON number: bool is neither
_NUMBER_OR_NONE = _NUMBER | {type(None)}
_TEXT_KEYS = frozenset({"kind", "text", "score", "stage", "status", "reason"})  #: the fields of labels.Text
_TEXT_NEEDS = frozenset({"kind", "text", "score", "stage"})  #: those without a default


def _num(value: Any) -> Any:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _jsonable(array: np.ndarray) -> list[Any]:
    if array.dtype == bool:
        return array.tolist()
    if np.issubdtype(array.dtype, np.number):
        out = array.astype(np.float64).tolist()
        return _nan_to_none(out)
    return [_plain(v) for v in array]


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return None if isinstance(value, float) and math.isnan(value) else value


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return _nan_to_none(value.tolist())
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return _nan_to_none(value.item())
    return value


def _column(values: list[Any], n: int) -> np.ndarray:
    """Rebuild a column: bools and numbers (or equal-length number rows) as arrays, anything else as objects."""
    if values and all(isinstance(v, bool) for v in values):
        return np.asarray(values, dtype=bool)
    if all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in values) and any(
        v is not None for v in values
    ):
        return np.asarray([np.nan if v is None else v for v in values], dtype=np.float32)
    if values and all(isinstance(v, list) and all(isinstance(x, (int, float)) for x in v) for v in values):
        lengths = {len(v) for v in values}
        if len(lengths) == 1:
            return np.asarray(values, dtype=np.float32)
    column = np.empty(n, dtype=object)
    for i, v in enumerate(values):
        column[i] = v
    return column
