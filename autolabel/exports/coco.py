"""COCO files, streamed from the run store in one pass: detections/segmentation, captions, and results.

* ``coco.json`` — ``images`` (``id`` = the store's id, ``file_name`` = the path relative to the input root,
  displayed ``width``/``height``), ``categories`` (``id`` = 1 + position in the ontology), ``annotations`` with
  ``bbox`` (xywh), ``area``, ``iscrowd: 0``, ``score`` (``null`` when unknown), a ``segmentation`` that is never
  empty (polygons or compressed RLE; a box-only annotation gets its box) and ``attributes`` (phrase, stage,
  status, quality-check reason, per-box text such as OCR, the stage's provenance, other per-box scores).
* ``captions.json`` beside it — COCO-captions (``images`` + ``annotations`` of ``{id, image_id, caption}``).
* ``coco_results.json`` — the detections-only list ``COCO.loadRes`` reads (``image_id``, ``category_id``,
  ``bbox``, ``score``; ``segmentation`` where there is a mask or polygon, in the same encoding as ``coco.json``
  so that evaluating one against the other compares like with like). Unknown scores are written as 1.0.

Annotation ids count from 1 in export order (image id, then box order), so the same store gives the same file.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any

import numpy as np

from ..ontology import Ontology
from ..store import Store
from ..names import JSON_ERRORS
from ..util import atomic_open
from .geometry import box_polygon, polygons_to_rle, rle_area, rle_polygons, rles_areas, rles_polygons
from .rows import Annotation, ImageRow, image_rows

_COMPACT = (",", ":")


def categories(ontology: Ontology) -> list[dict[str, Any]]:
    """Stable category ids: 1-based positions in the ontology."""
    return [{"id": i + 1, "name": name, "supercategory": ""} for i, name in enumerate(ontology.classes)]


def image_entry(row: ImageRow) -> dict[str, Any]:
    return {"id": row.id, "file_name": row.rel_path, "width": row.width, "height": row.height}


#: A mask already measured and traced: its area in pixels and, in polygon mode, its parts as flat [x, y, ...] lists.
Traced = tuple[int, "list[list[float]] | None"]


def segmentation(
    ann: Annotation, height: int, width: int, mode: str, traced: Traced | None = None
) -> tuple[Any, float]:
    """The annotation's segmentation in ``mode`` (``polygon`` or ``rle``) and its area in pixels; never empty.

    ``traced``: its mask's area and polygons when already computed (:func:`trace_masks` does a whole image at once).
    """
    if ann.rle is not None:
        area, flat = traced if traced is not None and (traced[1] is not None or mode == "rle") else _trace(ann, mode)
    else:
        area, flat = 0, None
    if area > 0:
        if mode == "rle":
            return ann.rle, float(area)
        return flat, float(area)
    if ann.polygon is None:
        x1, y1, x2, y2 = ann.xyxy
        polygon, area = box_polygon(ann.xyxy), round((x2 - x1) * (y2 - y1), 2)
    else:
        polygon = np.asarray(ann.polygon, dtype=np.float64)
        area = float(rle_area(polygons_to_rle([polygon], height, width)))
    return (polygons_to_rle([polygon], height, width) if mode == "rle" else [_flat(polygon)]), area


def _trace(ann: Annotation, mode: str) -> Traced:
    area = rle_area(ann.rle)
    return area, ([_flat(p) for p in rle_polygons(ann.rle)] if mode == "polygon" and area > 0 else None)


def trace_masks(row: ImageRow, mode: str) -> dict[int, Traced]:
    """Every mask of an image measured (and in polygon mode traced and rounded) in a few batched calls, by
    annotation index: per-call overheads, not pixels, are most of the cost of small masks."""
    with_mask = [a for a in row.annotations if a.rle is not None]
    if not with_mask:
        return {}
    rles = [a.rle for a in with_mask]
    areas = rles_areas(rles)
    if mode != "polygon":
        return {a.index: (area, None) for a, area in zip(with_mask, areas)}
    traced = rles_polygons(rles)
    parts = [p for ps in traced for p in ps]
    flat = np.round(np.concatenate(parts), 2).ravel().tolist() if parts else []
    out, at = {}, 0
    for ann, area, ps in zip(with_mask, areas, traced):
        lists = []
        for p in ps:
            lists.append(flat[at : at + 2 * len(p)])
            at += 2 * len(p)
        out[ann.index] = (area, lists)
    return out


def annotation_entry(
    ann: Annotation, row: ImageRow, ann_id: int, mode: str, traced: Traced | None = None
) -> dict[str, Any]:
    """One COCO annotation of a box of ``row``."""
    x1, y1, x2, y2 = ann.xyxy
    seg, area = segmentation(ann, row.height, row.width, mode, traced)
    attributes = {
        "phrase": ann.phrase, "stage": ann.stage, "status": ann.status, "reason": ann.reason, "text": ann.text,
        "provenance": row.provenance.get(ann.stage, {}),
    } | ann.extra
    return {
        "id": ann_id, "image_id": row.id, "category_id": ann.category + 1,
        "bbox": [_r(x1), _r(y1), _r(x2 - x1), _r(y2 - y1)], "area": area, "iscrowd": 0,
        "segmentation": seg, "score": None if ann.score is None else round(ann.score, 5),
        "attributes": attributes,
    }


def result_entry(
    ann: Annotation, row: ImageRow, mode: str = "polygon", traced: Traced | None = None
) -> dict[str, Any]:
    """One detection in the results format ``COCO.loadRes`` reads (a score is required: unknown → 1.0)."""
    x1, y1, x2, y2 = ann.xyxy
    entry: dict[str, Any] = {
        "image_id": row.id, "category_id": ann.category + 1,
        "bbox": [_r(x1), _r(y1), _r(x2 - x1), _r(y2 - y1)],
        "score": 1.0 if ann.score is None else round(ann.score, 5),
    }
    mask_area = (traced[0] if traced is not None else rle_area(ann.rle)) if ann.rle is not None else 0
    if mask_area > 0 or ann.polygon is not None:
        entry["segmentation"] = segmentation(ann, row.height, row.width, mode, traced)[0]
    return entry


def caption_entries(row: ImageRow, first_id: int) -> list[dict[str, Any]]:
    return [
        {"id": first_id + k, "image_id": row.id, "caption": t["text"], "kind": t.get("kind", ""),
         "score": t.get("score"), "stage": t.get("stage", "")}
        for k, t in enumerate(row.captions())
    ]


def write_coco(
    store: Store,
    ontology: Ontology,
    path: str | Path,
    min_score: float = 0.0,
    flagged: bool = True,
    segmentation_mode: str = "polygon",
    captions_path: str | Path | None = None,
) -> list[str]:
    """Write ``coco.json`` (and the captions file when ``captions_path`` is given) in one pass over the store.

    Images go straight to the file; annotations and captions are spooled to anonymous temp files and appended
    after, so memory stays flat and the image list and annotations come from the same snapshot.
    Returns the paths written.
    """
    rows = image_rows(store, ontology, min_score=min_score, flagged=flagged)
    header = '{"info":{"description":"autolabel"},"licenses":[],\n"categories":' + json.dumps(
        categories(ontology), separators=_COMPACT
    )
    written = [str(path)]
    # captions outermost: renamed into place only once coco.json was (a full disk leaves neither new file)
    with _maybe_atomic(captions_path) as cap_out, atomic_open(path, errors=JSON_ERRORS) as out, \
            tempfile.TemporaryFile("w+", encoding="utf-8") as anns, \
            tempfile.TemporaryFile("w+", encoding="utf-8") as caps:
        out.write(header + ',\n"images":[')
        if cap_out is not None:
            cap_out.write('{"info":{"description":"autolabel captions"},"licenses":[],\n"images":[')
        ann_id = cap_id = 1
        for n, row in enumerate(rows):
            image = ("," if n else "") + "\n" + _dumps(image_entry(row))
            out.write(image)
            traced = trace_masks(row, segmentation_mode)
            for ann in row.annotations:
                entry = annotation_entry(ann, row, ann_id, segmentation_mode, traced.get(ann.index))
                anns.write(("," if ann_id > 1 else "") + "\n" + _dumps(entry))
                ann_id += 1
            if cap_out is not None:
                cap_out.write(image)
                for cap in caption_entries(row, cap_id):
                    caps.write(("," if cap_id > 1 else "") + "\n" + _dumps(cap))
                    cap_id += 1
        _append_list(out, "annotations", anns)
        if cap_out is not None:
            _append_list(cap_out, "annotations", caps)
            written.append(str(captions_path))
    return written


def write_coco_results(
    store: Store,
    ontology: Ontology,
    path: str | Path,
    min_score: float = 0.0,
    flagged: bool = True,
    segmentation_mode: str = "polygon",
) -> list[str]:
    """Write the detections-only results list (``COCO.loadRes``) in one pass."""
    with atomic_open(path, errors=JSON_ERRORS) as out:
        out.write("[")
        first = True
        for row in image_rows(store, ontology, min_score=min_score, flagged=flagged):
            traced = trace_masks(row, segmentation_mode)
            for ann in row.annotations:
                entry = result_entry(ann, row, segmentation_mode, traced.get(ann.index))
                out.write(("" if first else ",") + "\n" + _dumps(entry))
                first = False
        out.write("\n]\n")
    return [str(path)]


def captions_path_for(path: Path) -> Path:
    """``coco.json`` → ``captions.json``; ``NAME.json`` → ``NAME_captions.json`` (beside it)."""
    return path.with_name("captions.json" if path.stem == "coco" else f"{path.stem}_captions.json")


def _append_list(out: IO[str], key: str, spool: IO[str]) -> None:
    out.write(f'\n],\n"{key}":[')
    spool.seek(0)
    shutil.copyfileobj(spool, out, 1 << 16)
    out.write("\n]}\n")


class _Nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _maybe_atomic(path: str | Path | None) -> Any:
    return atomic_open(path, errors=JSON_ERRORS) if path is not None else _Nothing()


def _flat(points: np.ndarray) -> list[float]:
    return np.round(np.asarray(points, dtype=np.float64), 2).ravel().tolist()


def _r(value: float) -> float:
    return round(float(value), 2)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


#: One encoder for every entry (``json.dumps`` with options builds a new one per call: a cost per annotation).
_ENCODER = json.JSONEncoder(separators=_COMPACT, ensure_ascii=False, default=_json_default)


def _dumps(entry: Any) -> str:
    return _ENCODER.encode(entry)
