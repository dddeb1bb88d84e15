"""Label Studio tasks with predictions, and the labeling config they match.

Pure functions build one task from one :class:`~autolabel.exports.rows.ImageRow` (:func:`task`), so a live push
to a server reuses them; :func:`write_labelstudio` streams them to a JSON file and writes the config beside it.

A task::

    {"data": {"image": <reference>, "autolabel_id": 7, "rel_path": "a/b.jpg"},
     "predictions": [{"model_version": ..., "score": <task score>, "result": [<regions>]}]}

* One region per object (values in percent of the displayed size, ``score`` = its confidence), of the kind the
  labeling config offers (:class:`Layout`, :func:`region_kind`; the rule is in docs/reference/labelstudio-regions.md):
  a mask is a ``brushlabels`` (Label Studio RLE, through ``label_studio_sdk.converter.brush.mask2rle``) or a
  ``polygonlabels`` (its outline; several parts joined into one polygon, as the YOLO export does), a polygon or quad
  a ``polygonlabels``, a box a ``rectanglelabels`` — each falling back to a kind the config has. Per-object text
  (OCR) is a per-region ``transcription`` text area with the region's ``id``; captions fill the image-level
  ``caption`` text area, other image-level text (a page of OCR) the ``ocr`` one.
* An object a quality check flagged carries a review marker: a per-region ``review`` text area on its region's
  ``id`` reading ``flagged: <reason code>`` (a text area, not a choice, so that Label Studio's own COCO/YOLO
  converters do not take "flagged" for a class). Dropped boxes are not exported.
* Task ``score`` = the lowest box confidence of the image (``task_score: min``, default) or their mean
  (``mean``); Label Studio sorts ascending, so the least certain images come first. An image without scored
  boxes gets no score.
* Every prediction is checked with ``LabelInterface(config).validate_prediction`` before it is written.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import quoteattr

import numpy as np

from ..errors import AutolabelError
from ..ontology import Ontology
from ..store import Store
from ..names import JSON_ERRORS, url_quote
from ..util import atomic_open
from ..geometry import box_polygon, decode_rle, join_parts, polygons_to_rle, rle_area, rle_polygons
from .rows import Annotation, ImageRow, image_rows, selection

if TYPE_CHECKING:
    from ..config import LabelStudioExport, PipelineSpec

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


#: region kinds, in the order a box falls back through them, and the control tag / result type of each
KINDS = ("rectangle", "polygon", "brush")
TAGS = {"rectangle": "RectangleLabels", "polygon": "PolygonLabels", "brush": "BrushLabels"}
#: the text areas, by what they hold → per region (True) or per image (False)
TEXT_AREAS = {"transcription": True, "review": True, "caption": False, "ocr": False}


@dataclass(frozen=True)
class Layout:
    """Where a labeling config takes each kind of result: the control names, None where it has no such control.

    The default is the generated config's (:func:`labeling_config`). :meth:`of` reads any project's config: the
    first ``RectangleLabels`` / ``PolygonLabels`` / ``BrushLabels`` on the ``$image`` object, and the text areas of
    our names (per region or not, as :data:`TEXT_AREAS` says).
    """

    image: str = IMAGE
    rectangle: str | None = "label"
    polygon: str | None = "polygon"
    brush: str | None = "mask"
    transcription: str | None = "transcription"
    review: str | None = "review"
    caption: str | None = "caption"
    ocr: str | None = "ocr"

    @classmethod
    def of(cls, config: str) -> Layout:
        """The layout of a labeling config (the SDK parses it; a config without an ``$image`` object is refused)."""
        from label_studio_sdk.label_interface import LabelInterface

        interface = LabelInterface(config)
        images = [o for o in interface.objects if o.tag == "Image" and o.value == f"${IMAGE}"]
        if not images:
            raise AutolabelError(f'the labeling config has no <Image value="${IMAGE}"> (the tasks\' image key)')
        image = images[0].name
        on_image = [c for c in interface.controls if image in list(c.to_name)]
        names: dict[str, str | None] = {}
        for kind, tag in TAGS.items():
            names[kind] = next((c.name for c in on_image if c.tag == tag), None)
        for name, per_region in TEXT_AREAS.items():
            names[name] = name if any(c.name == name and c.tag == "TextArea" and _per_region(c) == per_region
                                      for c in on_image) else None
        return cls(image=image, **names)

    def control(self, kind: str) -> str | None:
        """The control that takes regions of ``kind`` (``rectangle``, ``polygon``, ``brush``), if any."""
        return getattr(self, kind)


DEFAULT_LAYOUT = Layout()


def _per_region(control: Any) -> bool:
    return str(control.attr.get("perRegion", "")).lower() == "true"


def region_kind(ann: Annotation, masks: str = "brush", layout: Layout = DEFAULT_LAYOUT) -> str:
    """The one kind of region an object becomes: the first of its preferences the layout has.

    * a mask (``masks`` not ``none``, at least one pixel): ``masks``' kind (brush or polygon), then the other one,
      then rectangle;
    * a polygon or quad: polygon, rectangle, brush;
    * a box: rectangle, polygon, brush.
    """
    if _has_mask(ann, masks):
        order = ("brush", "polygon", "rectangle") if masks == "brush" else ("polygon", "brush", "rectangle")
    elif ann.polygon is not None:
        order = ("polygon", "rectangle", "brush")
    else:
        order = KINDS
    for kind in order:
        if layout.control(kind) is not None:
            return kind
    raise AutolabelError("the labeling config has no RectangleLabels, PolygonLabels or BrushLabels on the image: "
                         "add one with the ontology's classes as labels")


def task(
    row: ImageRow,
    image_root: str = LOCAL_FILES,
    model_version: str = "autolabel",
    score: str = "min",
    masks: str = "brush",
    layout: Layout = DEFAULT_LAYOUT,
) -> dict[str, Any]:
    """One Label Studio task (data + one prediction) for one image. Pure: no I/O."""
    result: list[dict[str, Any]] = []
    for ann in row.annotations:
        result.extend(regions(ann, row, masks, layout))
    captions = [t["text"] for t in row.captions()]
    other = [t["text"] for t in row.texts if "caption" not in t.get("kind", "")]
    for name, texts in (("caption", captions), ("ocr", other)):
        control = getattr(layout, name)
        if texts and control is not None:
            result.append({"id": f"{row.id}_{name}", "from_name": control, "to_name": layout.image,
                           "type": "textarea", "value": {"text": texts}})
    prediction: dict[str, Any] = {"model_version": model_version, "result": result}
    value = task_score(row.annotations, score)
    if value is not None:
        prediction["score"] = value
    return {
        "data": {IMAGE: image_reference(row.rel_path, image_root), "autolabel_id": row.id, "rel_path": row.rel_path},
        "predictions": [prediction],
    }


def regions(
    ann: Annotation, row: ImageRow, masks: str = "brush", layout: Layout = DEFAULT_LAYOUT
) -> list[dict[str, Any]]:
    """The regions of one object: its one labeled region (:func:`region_kind`), then its OCR text and review
    marker, text areas sharing its ``id`` (Label Studio attaches a per-region result to the region of that id)."""
    if ann.rle is not None and not _has_mask(ann, masks):
        ann = ann._replace(rle=None)  # masks: none, or an empty mask: the object is its polygon or box
    kind = region_kind(ann, masks, layout)
    rid = f"{row.id}_{ann.index}"
    common = {"to_name": layout.image, "original_width": row.width, "original_height": row.height,
              "image_rotation": 0}
    shape = _shape(kind, ann, row.width, row.height)
    labels = f"{kind}labels"
    scored = {} if ann.score is None else {"score": round(ann.score, 5)}
    out = [{"id": rid, "from_name": layout.control(kind), **common, "type": labels,
            "value": shape | {labels: [ann.class_name]}, **scored}]
    if ann.text and layout.transcription is not None:
        out.append({"id": rid, "from_name": layout.transcription, **common, "type": "textarea",
                    "value": shape | {"text": [ann.text]}})
    if ann.flagged and layout.review is not None:
        out.append({"id": rid, "from_name": layout.review, **common, "type": "textarea",
                    "value": shape | {"text": [f"flagged: {ann.reason}" if ann.reason else "flagged"]}})
    return out


def omitted(row: ImageRow, layout: Layout = DEFAULT_LAYOUT) -> Counter[str]:
    """What of an image a config of this layout has no text area for: ``transcription`` (per-object text),
    ``review`` (flag markers), ``caption``, ``ocr`` — counted, so that a push can say what it left out."""
    out: Counter[str] = Counter()
    if layout.transcription is None:
        out["transcription"] += sum(1 for a in row.annotations if a.text)
    if layout.review is None:
        out["review"] += sum(1 for a in row.annotations if a.flagged)
    if layout.caption is None:
        out["caption"] += len(row.captions())
    if layout.ocr is None:
        out["ocr"] += sum(1 for t in row.texts if "caption" not in t.get("kind", ""))
    return +out


def _has_mask(ann: Annotation, masks: str) -> bool:
    return masks != "none" and ann.rle is not None and rle_area(ann.rle) > 0


def _shape(kind: str, ann: Annotation, w: int, h: int) -> dict[str, Any]:
    """The geometry of an object's region (its ``value`` without labels), from its mask (``rle``: only one with
    pixels), else its polygon, else its box."""
    if kind == "rectangle":
        x1, y1, x2, y2 = ann.xyxy
        return {"x": _pct(x1, w), "y": _pct(y1, h), "width": _pct(x2 - x1, w), "height": _pct(y2 - y1, h),
                "rotation": 0}
    if kind == "polygon":
        return {"points": [[_pct(x, w), _pct(y, h)] for x, y in _outline(ann).tolist()], "closed": True}
    from label_studio_sdk.converter.brush import mask2rle

    return {"format": "rle", "rle": mask2rle(_mask(ann, w, h).astype(np.uint8) * 255)}


def _outline(ann: Annotation) -> np.ndarray:
    """One polygon of an object: its mask's parts (joined by zero-width bridges when several, the YOLO export's
    rule), else its polygon, else its box's corners."""
    if ann.rle is not None:
        return join_parts(rle_polygons(ann.rle))
    if ann.polygon is not None:
        return np.asarray(ann.polygon, dtype=np.float64)
    return box_polygon(ann.xyxy)


def _mask(ann: Annotation, w: int, h: int) -> np.ndarray:
    """An object's pixels: its mask, else its polygon or box filled (rasterised as COCO does)."""
    if ann.rle is not None:
        return decode_rle(ann.rle)
    outline = np.asarray(ann.polygon, dtype=np.float64) if ann.polygon is not None else box_polygon(ann.xyxy)
    return decode_rle(polygons_to_rle([outline], h, w))


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


def model_version_for(spec: PipelineSpec, given: str | None = None) -> str:
    """The predictions' model_version: as given, else the pipeline's name, else ``autolabel-<pipeline hash>`` (the
    same for a file export, a push and the ML backend)."""
    return given or spec.config.name or f"autolabel-{spec.hash}"


def export_labelstudio(store: Store, spec: PipelineSpec, export: LabelStudioExport, path: Path) -> list[str]:
    """``format: labelstudio`` (:class:`autolabel.config.LabelStudioExport`)."""
    return write_labelstudio(store, spec.ontology, path, image_root=export.image_root,
                             model_version=model_version_for(spec, export.model_version), score=export.task_score,
                             masks=export.masks, **selection(export))
