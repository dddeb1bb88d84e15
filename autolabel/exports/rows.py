"""Store rows → what every export writes: one :class:`ImageRow` per labeled image, holding its exportable boxes.

Every format makes the same choices here, once: dropped boxes are left out (flagged ones stay, unless the export
excludes them), boxes scored below ``min_score`` are left out (an unknown score passes), boxes without an ontology
class are left out (no category to give them), boxes are clipped to the image and empty ones skipped. A class the
store holds but the ontology lacks is an error: the ontology changed since the run, and any file written would be
silently wrong.

Works on the store's JSON records directly (masks stay COCO RLE until a format needs pixels), so that streaming
100k images costs a JSON parse per image, not a mask decode per box.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from ..errors import AutolabelError
from ..labels import DROPPED, FLAGGED
from ..ontology import Ontology
from ..store import Store

#: Per-box columns an export handles itself; any other scalar column becomes an attribute (e.g. predicted_iou).
_OWN_COLUMNS = frozenset({"class_name", "phrase", "stage", "status", "reason", "text", "has_mask", "polygon", "quad"})


class Annotation(NamedTuple):
    """One exportable box of an image, with whatever geometry it carries (pixels, displayed frame).

    Immutable; a NamedTuple rather than a frozen dataclass because one is built per box of every export (1M boxes:
    a frozen dataclass's ``__init__`` alone costs seconds). ``extra``'s default is shared: never mutate it.
    """

    index: int  # its row in the image's record: stable within the image, used for region ids
    category: int  # 0-based position of its class in the ontology
    class_name: str
    xyxy: tuple[float, float, float, float]  # clipped to the image
    score: float | None
    status: str  # kept | flagged
    reason: str
    text: str  # per-box text (OCR line, region description), "" when none
    phrase: str
    stage: str
    rle: dict[str, Any] | None = None  # COCO compressed RLE of its mask ("counts" a str), None when box-only
    polygon: list[list[float]] | None = None  # [[x, y], ...] (>= 3 points) from a polygon or quad column
    extra: dict[str, Any] = {}  # other scalar columns (scores of quality checks, ...); read only

    @property
    def flagged(self) -> bool:
        return self.status == FLAGGED


@dataclass(frozen=True)
class ImageRow:
    """One labeled image of the store and its exportable annotations and texts."""

    id: int  # the store's id: stable across runs and exports
    path: str  # absolute path of the source when it was labeled
    rel_path: str  # name relative to its input root: what exports call it
    sha256: str | None
    width: int  # displayed size (EXIF orientation applied)
    height: int
    annotations: list[Annotation]
    texts: list[dict[str, Any]]  # image-level texts kept (flagged ones as boxes): {kind, text, score, stage, ...}
    provenance: dict[str, dict[str, Any]]

    def captions(self) -> list[dict[str, Any]]:
        """Texts of a caption kind (``caption``, ``detailed_caption``, ...)."""
        return [t for t in self.texts if "caption" in t.get("kind", "")]


class Shape(NamedTuple):
    """The geometry of one exportable box, all a YOLO label needs: :class:`Annotation`'s fields of that name, the
    others never built (the filters are the same: :func:`image_shapes` and :func:`image_row` share them)."""

    index: int
    category: int
    xyxy: tuple[float, float, float, float]
    rle: dict[str, Any] | None
    polygon: list[list[float]] | None


class ShapeRow(NamedTuple):
    """:class:`ImageRow`'s fields that name and place an image, and its boxes as :class:`Shape`."""

    id: int
    path: str
    rel_path: str
    sha256: str | None
    width: int
    height: int
    annotations: list[Shape]


def require_labeled(store: Store) -> None:
    """Fail with one line when the store holds no labeled image (nothing to export)."""
    if store.count("done") == 0:
        from ..video.store import ClipStatus, ClipStore

        failed, clips = store.count("failed"), ClipStore(store).count(ClipStatus.DONE)
        why = (f"all {failed} images failed (see run.json)" if failed
               else f"it holds {clips} labeled clips: export them with --format mot, cvat-video, labelstudio-video or "
                    "ytvis" if clips else "run a pipeline into this folder first")
        raise AutolabelError(f"{store.path}: no labeled images in the store; nothing to export ({why})")


def class_ids(ontology: Ontology) -> dict[str, int]:
    """Class name → 0-based position, the id every format derives its own from."""
    return {name: i for i, name in enumerate(ontology.classes)}


def image_rows(
    store: Store, ontology: Ontology, min_score: float = 0.0, flagged: bool = True
) -> Iterator[ImageRow]:
    """Stream the store's labeled images as :class:`ImageRow` in id order (memory flat in the number of images)."""
    require_labeled(store)
    ids = class_ids(ontology)
    for row in store.images(labels=True):
        yield image_row(row, ids, min_score=min_score, flagged=flagged)


def _unpack(row: Mapping[str, Any]) -> tuple[dict[str, Any], int, int, dict[str, Any], dict[str, list[Any]], Any, int]:
    """A store row's record, size, boxes, box columns, masks (or None) and box count: every row reader's start."""
    record = row["labels"] or {}
    boxes = record.get("boxes") or _NO_BOXES
    return (record, int(row["width"]), int(row["height"]), boxes, boxes.get("data", {}), boxes.get("mask"),
            len(boxes["xyxy"]))


def image_row(
    row: Mapping[str, Any], ids: Mapping[str, int], min_score: float = 0.0, flagged: bool = True
) -> ImageRow:
    """One store row (``Store.images()`` item) as an :class:`ImageRow`; pure, so a live push can reuse it."""
    record, width, height, boxes, data, masks, n = _unpack(row)

    def column(key: str, default: Any) -> list[Any]:
        return data.get(key) or [default] * n

    names, statuses, reasons = column("class_name", ""), column("status", "kept"), column("reason", "")
    texts, phrases, stages = column("text", ""), column("phrase", ""), column("stage", "")
    has_mask = column("has_mask", False) if masks is not None else [False] * n
    extras = [k for k in data if k not in _OWN_COLUMNS]
    shaped = "polygon" in data or "quad" in data
    confidences = boxes["confidence"]
    annotations = []
    for i, xyxy in _kept(row["rel_path"], boxes["xyxy"], names, statuses, confidences, ids, min_score, flagged,
                         width, height):
        name, score = names[i], confidences[i]
        annotations.append(
            Annotation(
                index=i, category=ids[name], class_name=name, xyxy=xyxy,
                score=None if score is None else float(score), status=statuses[i], reason=reasons[i] or "",
                text=texts[i] or "", phrase=phrases[i] or "", stage=stages[i] or "",
                rle=masks[i] if has_mask[i] else None,
                polygon=_polygon(data, i, width, height) if shaped else None,
                extra={k: _scalar(data[k][i]) for k in extras if isinstance(data[k][i], (int, float, str, bool))}
                if extras else {},
            )
        )
    kept_texts = [
        t for t in record.get("texts", [])
        if t.get("text") and t.get("status") != DROPPED and (flagged or t.get("status") != FLAGGED)
    ]
    return ImageRow(
        id=int(row["id"]), path=row["path"], rel_path=row["rel_path"], sha256=row.get("sha256"),
        width=width, height=height, annotations=annotations, texts=kept_texts,
        provenance=record.get("provenance", {}),
    )


def shape_rows(
    store: Store, ontology: Ontology, min_score: float = 0.0, flagged: bool = True
) -> Iterator[ShapeRow]:
    """:func:`image_rows` for formats that need only each box's class and geometry (YOLO): the same images and
    boxes, without building the per-box fields they never read (most of a detect export's Python time)."""
    require_labeled(store)
    ids = class_ids(ontology)
    for row in store.images(labels=True):
        yield image_shapes(row, ids, min_score=min_score, flagged=flagged)


def image_shapes(
    row: Mapping[str, Any], ids: Mapping[str, int], min_score: float = 0.0, flagged: bool = True
) -> ShapeRow:
    """One store row as a :class:`ShapeRow`: :func:`image_row`'s boxes, only their geometry."""
    record, width, height, boxes, data, masks, n = _unpack(row)
    names = data.get("class_name") or [""] * n
    statuses = data.get("status") or ["kept"] * n
    has_mask = (data.get("has_mask") or [False] * n) if masks is not None else None
    shaped = "polygon" in data or "quad" in data
    kept = _kept(row["rel_path"], boxes["xyxy"], names, statuses, boxes["confidence"], ids, min_score, flagged,
                 width, height)
    if has_mask is None and not shaped:
        shapes = [Shape(i, ids[names[i]], xyxy, None, None) for i, xyxy in kept]
    else:
        shapes = [Shape(i, ids[names[i]], xyxy, masks[i] if has_mask and has_mask[i] else None,
                        _polygon(data, i, width, height) if shaped else None) for i, xyxy in kept]
    return ShapeRow(int(row["id"]), row["path"], row["rel_path"], row.get("sha256"), width, height, shapes)


_NO_BOXES: dict[str, Any] = {"xyxy": [], "confidence": [], "data": {}}


def _kept(
    rel_path: str, xyxys: list[list[float]], names: list[str], statuses: list[str], confidences: list[Any],
    ids: Mapping[str, int], min_score: float, flagged: bool, width: int, height: int,
) -> list[tuple[int, tuple[float, float, float, float]]]:
    """``(row index, clipped box)`` of each box every export keeps: the filters of the module docstring, in one
    place (the per-box hot path of every export: kept inline)."""
    fw, fh = float(width), float(height)
    out = []
    for i, (x1, y1, x2, y2) in enumerate(xyxys):
        name, status, score = names[i], statuses[i], confidences[i]
        if name and name not in ids:  # checked before any filter: the same answer whatever the options
            raise AutolabelError(
                f"{rel_path}: class {name!r} is not in the pipeline's ontology (known: {', '.join(ids)}); "
                "the ontology changed since the run: restore the class, or run the pipeline again"
            )
        if not name:
            continue  # a phrase kept without a class: no category to give it
        if status == DROPPED or (status == FLAGGED and not flagged):
            continue
        if score is not None and score < min_score:
            continue
        # clipped to the image; conditionals, not min(max()) (half the cost; the same for NaN and -0.0)
        x1, y1, x2, y2 = float(x1), float(y1), float(x2), float(y2)
        x1 = 0.0 if x1 < 0.0 else fw if x1 > fw else x1
        x2 = 0.0 if x2 < 0.0 else fw if x2 > fw else x2
        y1 = 0.0 if y1 < 0.0 else fh if y1 > fh else y1
        y2 = 0.0 if y2 < 0.0 else fh if y2 > fh else y2
        if x2 <= x1 or y2 <= y1:
            continue  # nothing of it inside the image
        out.append((i, (x1, y1, x2, y2)))
    return out


def _scalar(value: Any) -> Any:
    """Per-box extras as written: floats (float32 in the store) to 5 decimals."""
    return round(value, 5) if isinstance(value, float) else value


def _clip(value: float, limit: int) -> float:
    return min(max(float(value), 0.0), float(limit))


def _polygon(data: Mapping[str, list[Any]], i: int, width: int, height: int) -> list[list[float]] | None:
    """The box's polygon (``polygon`` column) or quad (``quad`` column, 8 numbers), clipped; None if neither."""
    points = None
    polygon = data.get("polygon")
    if polygon is not None and polygon[i] is not None and len(polygon[i]) >= 3:
        points = polygon[i]
    else:
        quad = data.get("quad")
        if quad is not None and quad[i] is not None and len(quad[i]) == 8 and all(v is not None for v in quad[i]):
            points = [quad[i][k : k + 2] for k in range(0, 8, 2)]
    if points is None:
        return None
    return [[_clip(x, width), _clip(y, height)] for x, y in points]
