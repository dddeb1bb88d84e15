"""What every filter stage shares: recording a decision, per-class values, and a batch seen as flat rows.

A filter never deletes: it sets ``status`` to ``"dropped"`` or ``"flagged"`` and writes a reason code. Dropped is
final (a later filter leaves the row alone); a flagged row may still be dropped by a later filter (the drop's
reason replaces the flag's); a second flag keeps the first reason.
"""

from __future__ import annotations

import logging
from functools import cached_property
from typing import Any, ClassVar, Iterable, Literal

import numpy as np
from pydantic import Field, ValidationError

from ..errors import ConfigError
from ..labels import DROPPED, FLAGGED, KEPT, Labels, Text
from ..stage import Item, Stage, StageContext, StageParams, check_classes
from ..validation import format_errors

log = logging.getLogger("autolabel.filters")

Action = Literal["drop", "flag"]
#: where a text filter looks: image-level captions (``Labels.texts``), region text (``text``: OCR), region
#: descriptions (``description``), grounded phrases
TextField = Literal["captions", "text", "description", "phrase"]


class FilterParams(StageParams):
    """Keys of a filter that decides: what to do with a box that fails (each filter sets its own default)."""

    action: Action = "drop"


class PerClassParams(FilterParams):
    """A filter whose thresholds can differ per class.

    ``per_class: {person: 0.5}`` sets the filter's main threshold for ``person``; ``per_class: {person: {min_area:
    0.01}}`` sets any of its per-class keys. Values are validated like the keys themselves.
    """

    per_class: dict[str, Any] = Field(default_factory=dict)  # class → number, or mapping of key → number


#: the status a decision gives the labels it applies to
DECIDED: dict[str, str] = {"drop": DROPPED, "flag": FLAGGED}


def applies(status: Any, action: Action) -> Any:
    """Which labels of ``status`` (a string or an array) a decision changes: ``drop`` every one not dropped yet,
    ``flag`` only those still kept (a flag never hides a drop, and the first flag's reason stays). The one rule.

    >>> applies(np.array(["kept", "flagged", "dropped"], dtype=object), "drop").tolist(), applies("flagged", "flag")
    ([True, True, False], False)
    """
    return status == KEPT if action == "flag" else status != DROPPED


def mark(status: np.ndarray, reason: np.ndarray, hit: np.ndarray, code: str, action: Action) -> int:
    """Record one decision in place on the rows ``hit`` it :func:`applies` to; return how many rows changed."""
    hit = np.asarray(hit, dtype=bool) & applies(status, action)
    status[hit] = DECIDED[action]
    reason[hit] = code
    return int(hit.sum())


def mark_row(status: np.ndarray, reason: np.ndarray, i: int, code: str, action: Action) -> None:
    """:func:`mark` for one row (text checks decide row by row)."""
    if applies(status[i], action):
        status[i], reason[i] = DECIDED[action], code


def mark_text(text: Text, code: str, action: Action) -> None:
    """:func:`mark` for one image-level text."""
    if applies(text.status, action):
        text.status, text.reason = DECIDED[action], code


class Rows:
    """The boxes of a batch of images as flat per-row arrays, so that a decision is one numpy expression.

    ``status`` and ``reason`` are written back to each image by :meth:`write_back` (``xyxy`` too, when changed);
    the other arrays are gathered when first used.
    """

    def __init__(self, labels: list[Labels]):
        self.labels = labels
        self.dets = [lab.detections for lab in labels]
        self.counts = np.fromiter((len(d) for d in self.dets), dtype=np.int64, count=len(labels))
        self.offsets = np.zeros(len(labels) + 1, dtype=np.int64)  # row ranges of each image
        np.cumsum(self.counts, out=self.offsets[1:])
        self.status = _cat([_data(d, "status") for d in self.dets])
        self.reason = _cat([_data(d, "reason") for d in self.dets])

    @classmethod
    def of(cls, labels: list[Labels]) -> "Rows":
        return cls(labels)

    @cached_property
    def xyxy(self) -> np.ndarray:
        """(N, 4) float32 boxes."""
        return _cat([d.xyxy for d in self.dets]).reshape(-1, 4)

    @cached_property
    def confidence(self) -> np.ndarray:
        """(N,) float32, nan = unknown."""
        return _cat([d.confidence for d in self.dets])

    @cached_property
    def class_name(self) -> np.ndarray:
        return _cat([_data(d, "class_name") for d in self.dets])

    @cached_property
    def image(self) -> np.ndarray:
        """(N,) index of each row's image in ``labels``."""
        return np.repeat(np.arange(len(self.labels)), self.counts)

    @cached_property
    def width(self) -> np.ndarray:
        """(N,) float64: the width of each row's image."""
        return np.repeat(np.array([lab.width for lab in self.labels], dtype=np.float64), self.counts)

    @cached_property
    def height(self) -> np.ndarray:
        return np.repeat(np.array([lab.height for lab in self.labels], dtype=np.float64), self.counts)

    def __len__(self) -> int:
        return len(self.status)

    @property
    def active(self) -> np.ndarray:
        """Rows no filter dropped yet."""
        return self.status != DROPPED

    def column(self, key: str, fill: Any = np.nan) -> np.ndarray:
        """A data column over the batch; images without it give ``fill``."""
        parts = []
        for lab in self.labels:
            det = lab.detections
            parts.append(det.data[key] if key in det.data and len(det) else np.full(len(det), fill))
        return _cat(parts)

    def write_back(self, xyxy: bool = False) -> None:
        """Give each image its slice of ``status`` and ``reason`` (and of ``xyxy`` when ``xyxy`` is true)."""
        for i, lab in enumerate(self.labels):
            s, e = self.offsets[i], self.offsets[i + 1]
            if s == e:
                continue
            det = lab.detections
            det.data["status"] = self.status[s:e]
            det.data["reason"] = self.reason[s:e]
            if xyxy:
                det.xyxy = self.xyxy[s:e]


def _data(det: Any, key: str) -> np.ndarray:
    """A required column; an image with no boxes may lack them (supervision's merge of empties drops columns)."""
    return det.data[key] if len(det) else np.zeros(0, dtype=object)


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    if len(parts) == 1:
        return parts[0]  # a single image: decide on its own arrays, no copy
    return np.concatenate(parts) if parts else np.zeros(0)


class FilterStage(Stage):
    """Base of filters: validates ``per_class`` against the ontology and the filter's per-class keys.

    ``class_keys`` names the keys that may differ per class; the first is the one a bare number sets.
    """

    #: every reason code this filter gives (the docs' table, eval's stage naming and the tests read it)
    reasons: ClassVar[tuple[str, ...]] = ()

    class_keys: ClassVar[tuple[str, ...]] = ()

    def __init__(self, name: str, params: StageParams, context: StageContext):
        super().__init__(name, params, context)
        self.class_params: dict[str, StageParams] = _class_params(params, self.class_keys, context)
        self._warned: set[str] = set()

    def values(self, key: str, class_name: np.ndarray) -> np.ndarray:
        """``key``'s value for each row: the filter's own, or its class's override."""
        out = np.full(len(class_name), getattr(self.params, key), dtype=np.float64)
        for name, params in self.class_params.items():
            out[class_name == name] = getattr(params, key)
        return out

    def warn_once(self, message: str) -> None:
        """Say something once per stage (e.g. that a column is missing and the check passes every row)."""
        if message not in self._warned:
            self._warned.add(message)
            log.warning("stage %r: %s", self.name, message)


def _class_params(params: StageParams, keys: tuple[str, ...], context: StageContext) -> dict[str, StageParams]:
    """One validated copy of ``params`` per class named in ``per_class``, with that class's values set."""
    per_class: dict[str, Any] = getattr(params, "per_class", {}) or {}
    check_classes(per_class, context.ontology, "per_class")
    out: dict[str, StageParams] = {}
    for name, value in per_class.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = {keys[0]: value}
        elif not isinstance(value, dict):
            raise ConfigError(
                f"per_class.{name}: expected a number (its {keys[0]}) or a mapping of {', '.join(keys)} (got {value!r})"
            )
        for key in value:
            if key not in keys:
                raise ConfigError(f"per_class.{name}.{key}: not settable per class (per-class keys: {', '.join(keys)})")
        base = params.model_dump(exclude={"per_class"})
        try:
            out[name] = type(params).model_validate({**base, **value})
        except ValidationError as err:
            raise ConfigError(format_errors(err, type(params), prefix=f"per_class.{name}")) from None
    return out


class BoxFilter(FilterStage):
    """A filter that decides each box from the batch's flat rows; subclasses implement :meth:`decide`."""

    Params: ClassVar[type[StageParams]] = FilterParams
    params: FilterParams
    moves_boxes: ClassVar[bool] = False  # True when decide() changes rows.xyxy (clipping)

    def __call__(self, items: list[Item]) -> list[Item]:
        rows = Rows.of([item.labels for item in items])
        if len(rows):
            for hit, code in self.decide(rows):
                mark(rows.status, rows.reason, hit, code, self.params.action)
            rows.write_back(xyxy=self.moves_boxes)
        return items

    def decide(self, rows: Rows) -> Iterable[tuple[np.ndarray, str]]:
        """Yield ``(rows that fail, reason code)`` pairs, in the order they should be recorded."""
        raise NotImplementedError


def is_ocr(labels: Labels) -> np.ndarray:
    """Rows that come from an OCR stage: they carry a quad, or their stage's provenance task mentions OCR."""
    det = labels.detections
    out = np.zeros(len(det), dtype=bool)
    if not len(det):
        return out
    if "quad" in det.data:
        out |= has_values(det.data["quad"])
    ocr_stages = [s for s, p in labels.provenance.items() if "ocr" in str(p.get("task", "")).lower()]
    if ocr_stages:
        out |= np.isin(det.data["stage"], ocr_stages)
    return out


def has_values(column: np.ndarray) -> np.ndarray:
    """Per row: does this (possibly ragged, possibly nan-filled) column hold a value?"""
    column = np.asarray(column)
    if column.dtype != object:
        finite = np.isfinite(column)
        return finite.reshape(len(column), -1).all(axis=1) if column.ndim > 1 else finite
    return np.array([_present(v) for v in column], dtype=bool)


def _present(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, float):
        return not np.isnan(value)
    try:
        return bool(np.isfinite(np.asarray(value, dtype=np.float64)).all()) and np.size(value) > 0
    except (TypeError, ValueError):
        return True
