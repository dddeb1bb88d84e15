"""COCO detection JSON, streamed from the run store: images, categories from the ontology, scored boxes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from pycocotools import mask as mask_utils

from ..errors import AutolabelError
from ..labels import DROPPED
from ..ontology import Ontology
from ..store import Store
from ..util import atomic_open


def categories(ontology: Ontology) -> list[dict[str, Any]]:
    """Stable category ids: 1-based positions in the ontology."""
    return [{"id": i + 1, "name": name, "supercategory": ""} for i, name in enumerate(ontology.classes)]


def annotations(store: Store, ontology: Ontology, min_score: float = 0.0) -> Iterator[dict[str, Any]]:
    """One COCO annotation per kept (or flagged) box of a known class, in image order."""
    ids = {name: i + 1 for i, name in enumerate(ontology.classes)}
    next_id = 1
    for row in store.images(labels=True):
        boxes = row["labels"]["boxes"]
        data = boxes["data"]
        masks = boxes.get("mask")
        for i, (x1, y1, x2, y2) in enumerate(boxes["xyxy"]):
            if data["status"][i] == DROPPED:
                continue
            score = boxes["confidence"][i]
            if score is not None and score < min_score:
                continue
            name = data["class_name"][i]
            if not name:
                continue  # a phrase kept without a class: no COCO category for it
            if name not in ids:
                raise AutolabelError(
                    f"{row['rel_path']}: class {name!r} is not in the pipeline's ontology "
                    f"(known: {', '.join(ids)}); the ontology changed since the run: re-run, or restore the class"
                )
            w, h = x2 - x1, y2 - y1
            rle = masks[i] if masks is not None else None
            ann: dict[str, Any] = {
                "id": next_id,
                "image_id": row["id"],
                "category_id": ids[name],
                "bbox": [round(x1, 2), round(y1, 2), round(w, 2), round(h, 2)],
                "area": round(float(w * h), 2) if rle is None else float(mask_utils.area(_bytes_rle(rle))),
                "iscrowd": 0,
                # a box-only annotation gets its box as a polygon, so readers that rasterise (annToMask) work
                "segmentation": [[x1, y1, x2, y1, x2, y2, x1, y2]] if rle is None else rle,
                "score": None if score is None else round(float(score), 5),
                "attributes": {k: data[k][i] for k in ("phrase", "stage", "status", "reason", "text") if k in data},
            }
            next_id += 1
            yield ann


def write_coco(store: Store, ontology: Ontology, path: str | Path, min_score: float = 0.0) -> None:
    """Write a COCO file without holding the dataset in memory (temp file + rename)."""
    if store.count("done") == 0:
        raise AutolabelError(f"{store.path}: no labeled images in the store; nothing to export (run a pipeline first)")
    with atomic_open(path) as f:
        f.write('{"info": {"description": "autolabel"},\n"categories": ')
        f.write(json.dumps(categories(ontology)))
        f.write(',\n"images": [')
        for n, row in enumerate(store.images(labels=False)):
            image = {"id": row["id"], "file_name": row["rel_path"], "width": row["width"], "height": row["height"]}
            f.write(("," if n else "") + "\n" + json.dumps(image))
        f.write('\n],\n"annotations": [')
        for n, ann in enumerate(annotations(store, ontology, min_score)):
            f.write(("," if n else "") + "\n" + json.dumps(ann, default=_json_default))
        f.write("\n]}\n")


def _bytes_rle(rle: dict[str, Any]) -> dict[str, Any]:
    return {"size": rle["size"], "counts": rle["counts"].encode("ascii")}


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
