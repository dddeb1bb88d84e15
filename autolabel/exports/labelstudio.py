"""Label Studio tasks with predictions, and the labeling config they match.

Pure functions build one task from one :class:`~autolabel.exports.rows.ImageRow` (:func:`task`), so a live push
to a server reuses them; :func:`write_labelstudio` streams them to a JSON file and writes the config beside it.

A task::

    {"data": {"image": <reference>, "autolabel_id": 7, "rel_path": "a/b.jpg"},
     "predictions": [{"model_version": ..., "score": <task score>, "result": [<regions>]}]}

* Regions, values in percent of the displayed size: a ``rectanglelabels`` per box (``score`` = its confidence),
  plus a ``brushlabels`` (mask as Label Studio RLE, through ``label_studio_sdk.converter.brush.mask2rle``) or
  ``polygonlabels`` (one per mask part) where the box has a mask, and a ``polygonlabels`` where it has a polygon
  or quad. Per-box text (OCR) is a per-region ``textarea`` with the rectangle's ``id``; captions fill the
  image-level ``caption`` text area, other image-level text (a page of OCR) the ``ocr`` one.
* A box a quality check flagged carries a review marker: a per-region ``review`` text area on its rectangle's
  ``id`` reading ``flagged: <reason code>`` (a text area, not a choice, so that Label Studio's own COCO/YOLO
  converters do not take "flagged" for a class). Dropped boxes are not exported.
* Task ``score`` = the lowest box confidence of the image (``task_score: min``, default) or their mean
  (``mean``); Label Studio sorts ascending, so the least certain images come first. An image without scored
  boxes gets no score.
* Every prediction is checked with ``LabelInterface(config).validate_prediction`` before it is written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

import numpy as np

from ..errors import AutolabelError
from ..ontology import Ontology
from ..store import Store
from ..names import JSON_ERRORS, url_quote
from ..util import atomic_open
from .geometry import decode_rle, rle_area, rle_polygons
from .rows import Annotation, ImageRow, image_rows

IMAGE = "image"  # the Image object tag's name and the task data key
LOCAL_FILES = "/data/local-files/?d="
_CLOUD = ("s3://", "gs://", "azure-blob://")


def labeling_config(ontology: Ontology) -> str:
    """The labeling-config XML every task of this ontology validates against."""
    labels = "".join(f"\n    <Label value={quoteattr(name)}/>" for name in ontology.classes)
    return f"""<View>
  <Image name="{IMAGE}" value="${IMAGE}" zoom="true"/>
  <RectangleLabels name="label" toName="{IMAGE}">{labels}
  </RectangleLabels>
  <PolygonLabels name="polygon" toName="{IMAGE}">{labels}
  </PolygonLabels>
  <BrushLabels name="mask" toName="{IMAGE}">{labels}
  </BrushLabels>
  <TextArea name="transcription" toName="{IMAGE}" perRegion="true" editable="true" displayMode="region-list"/>
  <TextArea name="review" toName="{IMAGE}" perRegion="true" editable="true" displayMode="region-list"/>
  <Header value="Caption"/>
  <TextArea name="caption" toName="{IMAGE}" editable="true"/>
  <Header value="Text in the image"/>
  <TextArea name="ocr" toName="{IMAGE}" editable="true"/>
</View>
"""


def config_path_for(tasks_path: Path) -> Path:
    """``labelstudio_tasks.json`` → ``labelstudio_config.xml``; ``NAME.json`` → ``NAME_config.xml`` (beside it)."""
    return tasks_path.with_name(f"{tasks_path.stem.removesuffix('_tasks')}_config.xml")


def image_reference(rel_path: str, image_root: str) -> str:
    """Where Label Studio loads the image from: ``image_root`` + the path relative to the input root.

    Local-files (``/data/local-files/?d=``, with the input root as ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT``) and
    URL prefixes get the path percent-encoded; cloud URIs (``s3://bucket/prefix``) keep it as the object key.

    >>> image_reference("a b/c.jpg", "https://host/data")
    'https://host/data/a%20b/c.jpg'
    >>> image_reference("a b/c.jpg", "s3://bucket/pre/")
    's3://bucket/pre/a b/c.jpg'
    """
    root = image_root if image_root.endswith(("/", "=")) else image_root + "/"
    return root + (rel_path if root.startswith(_CLOUD) else url_quote(rel_path))


def task_score(annotations: list[Annotation], how: str = "min") -> float | None:
    """The task's uncertainty key: lowest (``min``) or mean box confidence; None without scored boxes."""
    scores = [a.score for a in annotations if a.score is not None]
    if not scores:
        return None
    return round(float(min(scores) if how == "min" else np.mean(scores)), 5)


def task(
    row: ImageRow,
    image_root: str = LOCAL_FILES,
    model_version: str = "autolabel",
    score: str = "min",
    masks: str = "brush",
) -> dict[str, Any]:
    """One Label Studio task (data + one prediction) for one image. Pure: no I/O."""
    result: list[dict[str, Any]] = []
    for ann in row.annotations:
        result.extend(regions(ann, row, masks))
    captions = [t["text"] for t in row.captions()]
    other = [t["text"] for t in row.texts if "caption" not in t.get("kind", "")]
    for name, texts in (("caption", captions), ("ocr", other)):
        if texts:
            result.append({"id": f"{row.id}_{name}", "from_name": name, "to_name": IMAGE, "type": "textarea",
                           "value": {"text": texts}})
    prediction: dict[str, Any] = {"model_version": model_version, "result": result}
    value = task_score(row.annotations, score)
    if value is not None:
        prediction["score"] = value
    return {
        "data": {IMAGE: image_reference(row.rel_path, image_root), "autolabel_id": row.id, "rel_path": row.rel_path},
        "predictions": [prediction],
    }


def regions(ann: Annotation, row: ImageRow, masks: str = "brush") -> list[dict[str, Any]]:
    """The regions of one box: its rectangle, then mask/polygon, OCR text and review marker (sharing its id)."""
    w, h = row.width, row.height
    x1, y1, x2, y2 = ann.xyxy
    rid = f"{row.id}_{ann.index}"
    geometry = {"x": _pct(x1, w), "y": _pct(y1, h), "width": _pct(x2 - x1, w), "height": _pct(y2 - y1, h),
                "rotation": 0}
    common = {"to_name": IMAGE, "original_width": w, "original_height": h, "image_rotation": 0}
    scored = {} if ann.score is None else {"score": round(ann.score, 5)}
    rect: dict[str, Any] = {"id": rid, "from_name": "label", **common, "type": "rectanglelabels",
                            "value": geometry | {"rectanglelabels": [ann.class_name]}, **scored}
    out = [rect]
    if ann.rle is not None and masks != "none" and rle_area(ann.rle) > 0:
        if masks == "brush":
            from label_studio_sdk.converter.brush import mask2rle

            rle = mask2rle(decode_rle(ann.rle).astype(np.uint8) * 255)
            out.append({"id": f"{rid}_mask", "from_name": "mask", **common, "type": "brushlabels",
                        "value": {"format": "rle", "rle": rle, "brushlabels": [ann.class_name]}, **scored})
        else:
            for k, part in enumerate(rle_polygons(ann.rle)):
                out.append(_polygon(f"{rid}_mask{k}", part, ann, common, scored, w, h))
    if ann.polygon is not None:
        out.append(_polygon(f"{rid}_poly", np.asarray(ann.polygon), ann, common, scored, w, h))
    if ann.text:
        out.append({"id": rid, "from_name": "transcription", **common, "type": "textarea",
                    "value": geometry | {"text": [ann.text]}})
    if ann.flagged:
        out.append({"id": rid, "from_name": "review", **common, "type": "textarea",
                    "value": geometry | {"text": [f"flagged: {ann.reason}" if ann.reason else "flagged"]}})
    return out


def _polygon(rid: str, points: np.ndarray, ann: Annotation, common: dict, scored: dict, w: int, h: int) -> dict:
    pct = [[_pct(x, w), _pct(y, h)] for x, y in points]
    return {"id": rid, "from_name": "polygon", **common, "type": "polygonlabels",
            "value": {"points": pct, "closed": True, "polygonlabels": [ann.class_name]}, **scored}


def _pct(value: float, size: int) -> float:
    return round(min(max(float(value) / size * 100.0, 0.0), 100.0), 4)


class PredictionChecker:
    """Validates predictions against a labeling config with label-studio-sdk (the server itself does not)."""

    def __init__(self, config: str):
        from label_studio_sdk.label_interface import LabelInterface

        self.interface = LabelInterface(config)

    def check(self, task_: dict[str, Any]) -> None:
        """Raise a one-line AutolabelError naming the image and the first problem of an invalid prediction."""
        for prediction in task_["predictions"]:
            errors = self.interface.validate_prediction(prediction, return_errors=True)
            if errors:
                raise AutolabelError(
                    f"{task_['data'].get('rel_path')}: Label Studio would reject the prediction: {errors[0]} "
                    f"({len(errors)} problem(s)); please report this"
                )


def write_labelstudio(
    store: Store,
    ontology: Ontology,
    path: str | Path,
    image_root: str = LOCAL_FILES,
    model_version: str = "autolabel",
    score: str = "min",
    masks: str = "brush",
    min_score: float = 0.0,
    flagged: bool = True,
) -> list[str]:
    """Write the tasks JSON (a list, one task per line) and the labeling config beside it; return both paths."""
    path = Path(path)
    config = labeling_config(ontology)
    checker = PredictionChecker(config)
    config_path = config_path_for(path)
    with atomic_open(path, errors=JSON_ERRORS) as out:
        out.write("[")
        for n, row in enumerate(image_rows(store, ontology, min_score=min_score, flagged=flagged)):
            item = task(row, image_root=image_root, model_version=model_version, score=score, masks=masks)
            checker.check(item)
            out.write(("," if n else "") + "\n" + json.dumps(item, separators=(",", ":"), ensure_ascii=False))
        out.write("\n]\n")
        with atomic_open(config_path) as xml:  # inside: a failed export leaves neither file half-new
            xml.write(config)
    return [str(path), str(config_path)]
