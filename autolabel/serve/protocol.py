"""Label Studio's ML-backend protocol: request shapes in, prediction shapes out. Pure functions, no I/O.

Label Studio (``ml/api_connector.py``) sends::

    POST /setup    {"project": "7.1712345678", "schema": <labeling config>, "hostname": "http://host:8080",
                    "access_token": <token>, "extra_params": ...}            → {"model_version": ...}
    POST /predict  {"tasks": [{"id": 12, "data": {"image": "/data/upload/7/a.jpg"}, ...}, ...],
                    "project": "7.1712345678", "label_config": <config>,
                    "params": {"login": ..., "password": ..., "context": null | {"result": [<smart regions>]}}}
                                                                            → {"results": [<prediction>, ...]}

one prediction per task, in order: ``{"model_version", "score", "result": [<regions>]}``. Regions are built by the
Label Studio export (:func:`autolabel.exports.labelstudio.task`) against autolabel's own control names, then
renamed here to the project's controls (:func:`adapt_regions`): a project labels with *its* config.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

#: the export's control names → the control tag they stand for in any project's config
OUR_CONTROLS = {"label": "RectangleLabels", "polygon": "PolygonLabels", "mask": "BrushLabels"}
#: how far past 100 % a smart-tool coordinate may be (Label Studio's float rounding); it is clipped to 100
_ROUNDING = 0.01
#: per-region and image-level text areas of the export, matched by name (they carry no labels)
OUR_TEXTS = ("transcription", "review", "caption", "ocr")


class RequestError(Exception):
    """A request the backend cannot answer: HTTP ``status`` and a one-line ``message`` saying what to fix."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = " ".join(message.split())


@dataclass(frozen=True)
class Task:
    """One task of a predict request: its id and the image reference its data names."""

    id: int | None
    image: str


@dataclass(frozen=True)
class Prompt:
    """What an annotator clicked with a smart tool, in pixels of the displayed image."""

    points: list[tuple[float, float]] = field(default_factory=list)
    point_labels: list[int] = field(default_factory=list)  # 1 = positive (include), 0 = negative (exclude)
    box: tuple[float, float, float, float] | None = None  # xyxy
    label: str | None = None  # the label chosen on the smart tool, if any


class Config:
    """A project's labeling config, read with label-studio-sdk's ``LabelInterface``: where images come from, which
    controls take our regions, and validation of whole predictions."""

    def __init__(self, xml: str):
        from label_studio_sdk.label_interface import LabelInterface

        if not isinstance(xml, str) or not xml.strip():
            raise RequestError(400, "no labeling config in the request (label_config / schema): connect the model "
                                    "from a project's Settings → Model, which sends it")
        try:
            self.interface = LabelInterface(xml)
        except Exception as err:  # noqa: BLE001 — the SDK raises its own XML error types
            raise RequestError(400, f"the labeling config cannot be parsed ({err})") from None
        images = [o for o in self.interface.objects if o.tag == "Image"]
        if not images:
            raise RequestError(400, "the labeling config has no <Image> tag: this backend labels images; add "
                                    '<Image name="image" value="$image"/>')
        self.image = images[0].name
        self.data_key = str(images[0].value or "").lstrip("$")
        self.controls = {c.name: c for c in self.interface.controls}

    def control_for(self, tag: str) -> Any | None:
        """The first control of this tag (e.g. ``BrushLabels``) that labels our image, or None."""
        for control in self.controls.values():
            if control.tag == tag and self.image in list(control.to_name):
                return control
        return None

    def validate(self, prediction: dict[str, Any]) -> None:
        """A 500 naming the first problem when Label Studio would reject the prediction (it stores it silently)."""
        errors = self.interface.validate_prediction(prediction, return_errors=True)
        if errors:
            raise RequestError(500, f"the prediction does not match the labeling config: {errors[0]} "
                                    f"({len(errors)} problem(s)); please report this")


@dataclass(frozen=True)
class PredictRequest:
    """A predict body, checked for shape: raw tasks, the project's uid and config (if sent), the smart context."""

    tasks: list[dict[str, Any]]
    project: str | None
    label_config: str | None
    context: dict[str, Any] | None


def parse_predict(body: Any) -> PredictRequest:
    """Check a predict body's shape (a 400 saying what is wrong otherwise)."""
    if not isinstance(body, dict):
        raise RequestError(400, "the request body must be a JSON object with a 'tasks' list")
    tasks = body.get("tasks")
    if not isinstance(tasks, list) or not tasks:
        raise RequestError(400, "'tasks' must be a non-empty list of tasks ({\"id\": ..., \"data\": {...}})")
    params = body.get("params") if isinstance(body.get("params"), dict) else {}
    context = params.get("context") if isinstance(params.get("context"), dict) else None
    config = body.get("label_config") if isinstance(body.get("label_config"), str) else None
    project = body.get("project")
    return PredictRequest(tasks, str(project) if project is not None else None, config or None, context)


def task_refs(raw_tasks: list[Any], config: Config) -> list[Task]:
    """Each task's id and image reference (the data key the config's <Image> names)."""
    return [_task(t, i, config) for i, t in enumerate(raw_tasks)]


def _task(raw: Any, index: int, config: Config) -> Task:
    if not isinstance(raw, dict) or not isinstance(raw.get("data"), dict):
        raise RequestError(400, f"tasks[{index}]: a task must be an object with a 'data' object")
    data = raw["data"]
    key = config.data_key
    ref = data.get(key)
    if not isinstance(ref, str) or not ref.strip():
        known = ", ".join(sorted(data)) or "none"
        raise RequestError(400, f"task {raw.get('id', index)}: no image reference under data.{key} (the labeling "
                                f"config's <Image value=\"${key}\">; the task's data keys: {known})")
    task_id = raw.get("id")
    return Task(id=task_id if isinstance(task_id, int) else None, image=ref.strip())


def parse_prompt(context: dict[str, Any], config: Config, width: int, height: int) -> Prompt:
    """Keypoints and a rectangle from Label Studio's smart tools (``context.result``) → pixels of the image.

    Values are percent of the image, as Label Studio writes them; a keypoint is positive unless ``is_positive`` is
    false. Regions of other types are ignored; an unknown control name is a 400.
    """
    results = context.get("result")
    if not isinstance(results, list) or not results:
        raise RequestError(400, "context.result must be a non-empty list of smart-tool regions")
    points: list[tuple[float, float]] = []
    labels: list[int] = []
    box = label = None
    for i, region in enumerate(results):
        if not isinstance(region, dict) or not isinstance(region.get("value"), dict):
            raise RequestError(400, f"context.result[{i}]: a region must be an object with a 'value' object")
        name, kind, value = region.get("from_name"), region.get("type"), region["value"]
        if name not in config.controls:
            raise RequestError(400, f"context.result[{i}]: unknown control name {name!r} (the labeling config has: "
                                    f"{', '.join(config.controls) or 'none'})")
        try:
            if kind in ("keypointlabels", "keypoint"):
                points.append((_percent(value, "x") * width / 100.0, _percent(value, "y") * height / 100.0))
                labels.append(0 if region.get("is_positive") is False else 1)
            elif kind in ("rectanglelabels", "rectangle"):
                x0, y0 = _percent(value, "x"), _percent(value, "y")
                x1, y1 = _percent(value, "width", x0), _percent(value, "height", y0)
                box = (x0 * width / 100.0, y0 * height / 100.0, x1 * width / 100.0, y1 * height / 100.0)
            else:
                continue
        except (KeyError, TypeError, ValueError):
            raise RequestError(400, f"context.result[{i}]: a {kind} needs value.x, value.y"
                                    + (", value.width, value.height" if "rect" in str(kind) else "")
                                    + " as numbers in 0..100 (percent of the image)") from None
        chosen = value.get(kind) if isinstance(value.get(kind), list) else None
        label = chosen[0] if chosen else label
    if not points and box is None:
        raise RequestError(400, "context.result holds no keypoint or rectangle: use a smart KeyPointLabels or "
                                "RectangleLabels tool (smart=\"true\")")
    return Prompt(points=points, point_labels=labels, box=box, label=label)


def _percent(value: dict[str, Any], key: str, start: float = 0.0) -> float:
    """``start + value[key]`` (a position, or a position plus a size), a percentage of the image: the value is
    finite and not negative, the sum at most 100 (a hair over — Label Studio's rounding — is clipped); else
    ValueError."""
    number = float(value[key])
    if not (math.isfinite(number) and number >= 0.0 and start + number <= 100.0 + _ROUNDING):
        raise ValueError(key)
    return min(start + number, 100.0)


def adapt_regions(result: list[dict[str, Any]], config: Config) -> list[dict[str, Any]]:
    """The export's regions renamed to the project's controls; regions the config cannot hold are left out.

    A rectangle / polygon / brush region goes to the config's first control of that tag on the image, if its label
    is one of that control's; text areas go to a text area of the same name. Per-region texts whose region was
    left out are left out too.
    """
    targets = {ours: config.control_for(tag) for ours, tag in OUR_CONTROLS.items()}
    out: list[dict[str, Any]] = []
    kept_ids: set[str] = set()
    for region in result:
        ours = region.get("from_name")
        control = targets.get(ours)
        if control is not None:
            kind = region["type"]
            names = region["value"].get(kind) or []
            if any(n not in (getattr(control, "labels", None) or []) for n in names):
                continue
        elif ours in OUR_TEXTS:
            control = config.controls.get(ours)
            if control is None or control.tag != "TextArea" or config.image not in list(control.to_name):
                continue
            per_region = str(control.attr.get("perRegion", "")).lower() == "true"
            if per_region and region.get("id") not in kept_ids:
                continue
        else:
            continue
        out.append(region | {"from_name": control.name, "to_name": config.image})
        kept_ids.add(region.get("id"))
    return out


def brush_region(mask: Any, label: str, score: float, config: Config, region_id: str) -> dict[str, Any]:
    """A SAM mask ((H, W) bool) as a ``brushlabels`` region of the config's BrushLabels control, Label Studio RLE.

    The score is SAM's predicted IoU, clipped to 0..1 (Label Studio's range): the IoU head is a regression that
    can overshoot either end.
    """
    import numpy as np
    from label_studio_sdk.converter.brush import mask2rle

    control = config.control_for("BrushLabels")
    if control is None:
        raise RequestError(400, f"the labeling config has no <BrushLabels toName=\"{config.image}\"> for the mask: "
                                f"add one (with the same labels as the smart tool)")
    height, width = mask.shape
    return {
        "id": region_id, "from_name": control.name, "to_name": config.image, "type": "brushlabels",
        "original_width": int(width), "original_height": int(height), "image_rotation": 0,
        "value": {"format": "rle", "rle": mask2rle(mask.astype(np.uint8) * 255), "brushlabels": [label]},
        "score": round(min(max(float(score), 0.0), 1.0), 5) if math.isfinite(float(score)) else 0.0,
    }


def brush_label(prompt: Prompt, config: Config) -> str:
    """The mask's label: the smart tool's, which must be one of the BrushLabels control's; else its only label."""
    control = config.control_for("BrushLabels")
    labels = list(getattr(control, "labels", None) or []) if control is not None else []
    if prompt.label is not None and prompt.label in labels:
        return prompt.label
    if prompt.label is None and len(labels) == 1:
        return labels[0]
    name = control.name if control is not None else "BrushLabels"
    raise RequestError(400, f"label {prompt.label!r} of the smart tool is not a label of <BrushLabels name=\"{name}\"> "
                            f"(its labels: {', '.join(labels) or 'none'}): give both controls the same labels")
