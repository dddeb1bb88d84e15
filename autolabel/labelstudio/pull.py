"""``autolabel pull``: the human-reviewed annotations of a Label Studio project as COCO or YOLO, plus what
reviewers did with the auto-labels (``review_summary.json``, see :mod:`.review`).

Needs no run store: everything comes from the project. A task counts as reviewed when it has an annotation that
was not skipped (a ground-truth one first, else the latest). Each labeled region of the annotation is an object —
a ``rectanglelabels`` its box, a ``polygonlabels`` or ``brushlabels`` its polygon or mask (and their bounding box)
— and a per-region transcription gives it its text. (Pushes before one region per object attached a brush or
polygon to its box, region id ``<box id>_mask``, ``_mask<k>``, ``_poly``: such a shape joins its box.) The files
are written with the exports' own entry builders (:mod:`autolabel.exports.coco`, :mod:`autolabel.exports.yolo`),
so they read like ``autolabel export``'s, with each annotation's review outcome in its ``attributes``.

* ``coco`` → ``OUTPUT/coco.json`` (image ids are task ids; ``file_name`` the image's path relative to its input
  root, ``data.rel_path``).
* ``yolo`` → ``OUTPUT/yolo/`` (Ultralytics layout; images linked from ``--image-root`` when given, else
  downloaded through Label Studio).
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import unquote, urlparse

import numpy as np

from ..errors import AutolabelError, ExitCode
from ..exports.coco import annotation_entry, categories, image_entry
from ..geometry import polygons_to_rle
from ..exports.rows import Annotation, ImageRow
from ..ontology import Ontology
from ..records import encode_mask
from ..util import atomic_write_text
from .client import Connection, api_key_from_env
from .project import classes_of, find_project
from .review import KINDS, Box, ReviewTally, attached_to, box_ids, format_summary, rect_xyxy

FORMATS = ("coco", "yolo")
_REVIEWED = {"filters": {"conjunction": "and", "items": [
    {"filter": "filter:tasks:total_annotations", "operator": "greater", "type": "Number", "value": 0}]}}


@dataclass
class PullSummary:
    project_url: str
    tasks: int
    boxes: int
    paths: list[str]
    review: dict[str, Any]
    exit_code: ExitCode = ExitCode.OK


def pull(
    url: str, project: str, output: str | Path, fmt: str = "coco", task_kind: str = "detect",
    image_root: str | None = None, api_key: str | None = None, connection: Connection | None = None,
    timeout: float = 60.0, retry_for: float = 120.0,
) -> PullSummary:
    """Write the project's reviewed annotations to ``output`` in ``fmt``, and ``review_summary.json``."""
    if fmt not in FORMATS:
        raise AutolabelError(f"--format: unknown format {fmt!r} (known: {', '.join(FORMATS)})")
    conn = connection or Connection(url, api_key or api_key_from_env(), timeout=timeout, retry_for=retry_for)
    found = find_project(conn, str(project))
    if found is None:
        raise AutolabelError(f"{conn.url}: no project titled {project!r} (pass its id or exact title)")
    classes = classes_of(found.label_config or "")
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    tally = ReviewTally(classes)
    rows = reviewed_rows(conn, found, classes, tally)
    if fmt == "coco":
        paths = write_coco(list(rows), classes, output / "coco.json", f"{conn.url}/projects/{found.id}")
    else:
        paths = write_yolo(rows, classes, output / "yolo", task_kind, conn, image_root)
    review = tally.summary() | {"project": f"{conn.url}/projects/{found.id}",
                                "model_version": found.model_version or None}
    summary_path = output / "review_summary.json"
    atomic_write_text(summary_path, json.dumps(review, indent=2) + "\n")
    overall = review["overall"]
    return PullSummary(review["project"], tally.tasks, overall["accepted"] + overall["moved"] + overall["relabeled"]
                       + overall["added"], paths + [str(summary_path)], review)


def reviewed_rows(conn: Connection, project: Any, classes: list[str], tally: ReviewTally) -> Iterator[ImageRow]:
    """Each reviewed task as an :class:`ImageRow` of its annotation's boxes, tallying the review as it goes."""
    for t in conn.pages("list reviewed tasks", "api/tasks", "tasks", page_size=100, project=project.id,
                        fields="all", query=json.dumps(_REVIEWED)):
        annotation = chosen_annotation(t.get("annotations") or [])
        if annotation is None:
            continue
        prediction = chosen_prediction(t.get("predictions") or [], annotation, project.model_version)
        fates = tally.add(_boxes(prediction["result"] if prediction else []), _boxes(annotation.get("result") or []))
        outcome = {ann_id: o for o, _, _, ann_id in fates if ann_id is not None}
        yield task_row(t, annotation.get("result") or [], classes, outcome)


def chosen_annotation(annotations: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The annotation that stands for the task: not skipped; ground truth first, then the latest."""
    done = [a for a in annotations if not a.get("was_cancelled")]
    if not done:
        return None
    return max(done, key=lambda a: (bool(a.get("ground_truth")), a.get("updated_at") or "", a.get("id") or 0))


def chosen_prediction(predictions: list[dict[str, Any]], annotation: dict[str, Any],
                      model_version: str | None) -> dict[str, Any] | None:
    """What the reviewer started from: the annotation's parent prediction, else the project's model version's."""
    parent = annotation.get("parent_prediction")
    by_id = {p.get("id"): p for p in predictions}
    if parent in by_id:
        return by_id[parent]
    current = [p for p in predictions if model_version and p.get("model_version") == model_version]
    pool = current or predictions
    return max(pool, key=lambda p: p.get("id") or 0) if pool else None


def _boxes(result: list[dict[str, Any]]) -> list[Box]:
    from .review import boxes

    return boxes(result)


def task_row(task: dict[str, Any], result: list[dict[str, Any]], classes: list[str],
             outcome: dict[str, str] | None = None) -> ImageRow:
    """One task's annotation result as an :class:`ImageRow` (pixels; unknown labels join ``classes``)."""
    data = task.get("data") or {}
    width, height = _size(data, result)
    texts = {r.get("id"): r["value"]["text"][0] for r in result
             if r.get("from_name") == "transcription" and (r.get("value") or {}).get("text")}
    shapes: dict[str, list[dict[str, Any]]] = {}
    objects = []
    rects = box_ids(result)
    for r in result:
        if r.get("type") not in KINDS or not _labels(r):
            continue
        box = attached_to(r, rects)
        if box is not None:
            shapes.setdefault(box, []).append(r)
        else:
            objects.append(r)
    annotations = []
    for k, r in enumerate(objects):
        label = str(_labels(r)[0])
        if label not in classes:
            classes.append(label)
        rle, polygon, xyxy = _geometry(r, shapes.get(r.get("id"), []), width, height)
        if xyxy is None:
            continue
        review = {"review": outcome[r.get("id")]} if outcome and r.get("id") in outcome else {}
        extra = {"region_id": str(r.get("id"))} | review
        annotations.append(Annotation(
            index=k, category=classes.index(label), class_name=label, xyxy=xyxy, score=None, status="kept",
            reason="", text=texts.get(r.get("id"), ""), phrase="", stage="review", rle=rle, polygon=polygon,
            extra=extra,
        ))
    ref = str(data.get("image") or "")
    rel = str(data.get("rel_path") or _name_of(ref) or f"task-{task['id']}")
    key = data.get("autolabel_key")
    sha = key if isinstance(key, str) and re.fullmatch(r"[0-9a-f]{64}", key) else None
    return ImageRow(id=int(task["id"]), path=ref, rel_path=rel, sha256=sha, width=width, height=height,
                    annotations=annotations, texts=[], provenance={})


def _labels(region: dict[str, Any]) -> list[str]:
    value = region.get("value") or {}
    return value.get(region.get("type", ""), []) or []


def _size(data: dict[str, Any], result: list[dict[str, Any]]) -> tuple[int, int]:
    if data.get("width") and data.get("height"):
        return int(data["width"]), int(data["height"])
    for r in result:
        if r.get("original_width") and r.get("original_height"):
            return int(r["original_width"]), int(r["original_height"])
    return 0, 0  # no region says: the image entry carries no size (nothing to place either)


def _geometry(region: dict[str, Any], attached: list[dict[str, Any]], width: int, height: int):  # noqa: ANN202
    """(COCO RLE or None, polygon or None, clipped xyxy or None when empty) of a box and its attached shapes."""
    masks, polygons = [], []
    for shape in ([region] if region.get("type") != "rectanglelabels" else []) + attached:
        value = shape.get("value") or {}
        if shape.get("type") == "brushlabels" and value.get("rle"):
            from label_studio_sdk.converter.brush import decode_rle

            masks.append(np.asarray(decode_rle(value["rle"])).reshape(height, width, 4)[:, :, 3] > 0)
        elif shape.get("type") == "polygonlabels" and len(value.get("points") or []) >= 3:
            polygons.append(np.asarray(value["points"]) * (width / 100.0, height / 100.0))
    rle = polygon = None
    if masks or len(polygons) > 1:
        mask = np.zeros((height, width), dtype=bool)
        for m in masks:
            mask |= m
        if polygons:
            from ..geometry import decode_rle as decode_coco

            mask |= decode_coco(polygons_to_rle(polygons, height, width))
        rle = encode_mask(mask)
    elif polygons:
        polygon = np.clip(polygons[0], 0, (width, height)).tolist()
    if region.get("type") == "rectanglelabels":
        x1, y1, x2, y2 = rect_xyxy(region["value"], width, height)
    elif rle is not None:
        from pycocotools import mask as mask_utils

        x, y, w, h = mask_utils.toBbox({"size": rle["size"], "counts": rle["counts"].encode()}).tolist()
        x1, y1, x2, y2 = x, y, x + w, y + h
    elif polygon is not None:
        pts = np.asarray(polygon)
        (x1, y1), (x2, y2) = pts.min(axis=0), pts.max(axis=0)
    else:
        return None, None, None
    x1, x2 = (float(min(max(v, 0.0), width)) for v in (x1, x2))
    y1, y2 = (float(min(max(v, 0.0), height)) for v in (y1, y2))
    if x2 <= x1 or y2 <= y1:
        return None, None, None
    return rle, polygon, (x1, y1, x2, y2)


def _name_of(reference: str) -> str:
    """A file name for an image reference: the ``?d=`` path of local files, else the URL's path."""
    if "?d=" in reference:
        return unquote(reference.split("?d=", 1)[1])
    return unquote(urlparse(reference).path).lstrip("/")


def write_coco(rows: list[ImageRow], classes: list[str], path: Path, source: str) -> list[str]:
    """One COCO file of the reviewed rows (``classes`` final: rows may have added to it)."""
    from ..exports.coco import _dumps

    ontology = Ontology.from_config(list(classes))
    images, annotations = [], []
    for row in rows:
        images.append(image_entry(row))
        for ann in row.annotations:
            annotations.append(annotation_entry(ann, row, len(annotations) + 1, "polygon"))
    doc = {"info": {"description": f"autolabel pull of {source}"}, "licenses": [],
           "categories": categories(ontology), "images": images, "annotations": annotations}
    atomic_write_text(path, _dumps(doc) + "\n")
    return [str(path)]


def write_yolo(rows: Iterator[ImageRow], classes: list[str], path: Path, task_kind: str, conn: Connection,
               image_root: str | None) -> list[str]:
    """An Ultralytics dataset folder of the reviewed rows (80/20 split by content hash, as the export's)."""
    from ..exports.yolo import write_dataset

    return write_dataset(rows, Ontology.from_config(list(classes)), path, task_kind, {"train": 0.8, "val": 0.2}, 0,
                         place=lambda row, target: _place(row, Path(target), conn, image_root))


def _place(row: ImageRow, target: Path, conn: Connection, image_root: str | None) -> None:
    """Link the image from ``image_root`` (path relative to the input root), else download it via Label Studio."""
    if image_root:
        source = Path(image_root) / row.rel_path
        if not source.is_file():
            raise AutolabelError(f"task {row.id}: {source} does not exist (is --image-root the folder the images "
                                 "were labeled from?)")
        os.symlink(source.resolve(), target)
        return
    ref = row.path
    if ref.startswith(("s3://", "gs://", "azure-blob://")) or not ref:
        raise AutolabelError(f"task {row.id}: cannot download {ref or 'its image'}; pass --image-root DIR")
    if ref.startswith(("http://", "https://")) and not ref.startswith(conn.url):
        import httpx

        response = conn.call(f"download {ref}", httpx.get, ref, timeout=60.0, follow_redirects=True)
        if response.status_code >= 400:  # a one-line error, not httpx's traceback
            raise AutolabelError(f"task {row.id}: cannot download {ref} (HTTP {response.status_code}); pass "
                                 "--image-root DIR (the folder the images were labeled from)")
        target.write_bytes(response.content)
        return
    path = ref[len(conn.url):] if ref.startswith(conn.url) else ref
    target.write_bytes(conn.request(f"download image of task {row.id}", "GET", path, safe=True).content)


def print_pull(summary: PullSummary) -> None:
    print(format_summary(summary.review))
    for path in summary.paths:
        print(f"autolabel: wrote {path}", file=sys.stderr)
