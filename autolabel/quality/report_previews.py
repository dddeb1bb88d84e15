"""Annotated thumbnails drawn with supervision's annotators: kept boxes in their class colour (masks filled),
flagged boxes as orange corners, dropped boxes as thin red outlines, labels with class, score and reason.

The image is shrunk first and each mask is decoded and shrunk one at a time, so a preview of a 50-megapixel image
with a hundred masks costs one mask's memory, not a hundred.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import supervision as sv
from PIL import Image, ImageDraw

from ..intake import Source, decode, read
from ..labels import DROPPED, FLAGGED, KEPT
from ..records import Stored, decode_masks
from .report_svg import DROPPED_COLOR, FLAGGED_COLOR

#: Longer side of a thumbnail, in pixels.
THUMB_SIDE = 360


def load_thumbnail(row: dict[str, Any], side: int = THUMB_SIDE) -> tuple[Image.Image, float, str | None]:
    """The image scaled so that its longer side is ``side`` (small images grow: labels stay legible; a grey canvas
    of its recorded shape when unreadable), the scale, and any problem with the image."""
    record = row.get("labels") or {}
    width = int(record.get("width") or row.get("width") or side)
    height = int(record.get("height") or row.get("height") or side)
    scale = side / max(width, height)
    size = (max(round(width * scale), 1), max(round(height * scale), 1))
    data, problem = read(Source(row["path"], row["rel_path"]))
    if data is not None:
        try:
            image = decode(data, max_pixels=10**10)  # the run already accepted this image
            if image.size != (width, height):
                problem = f"changed since labeling ({image.size[0]}x{image.size[1]}, labeled at {width}x{height})"
            return image.resize(size, Image.Resampling.BILINEAR), scale, problem
        except ValueError as err:
            problem = str(err)
    canvas = Image.new("RGB", size, (90, 90, 90))
    ImageDraw.Draw(canvas).text((6, 6), f"image unavailable: {problem}"[:60], fill=(240, 240, 240))
    return canvas, scale, problem


def detections(record: dict[str, Any], scale: float, size: tuple[int, int], classes: Sequence[str]) -> sv.Detections:
    """A record's boxes (and masks, shrunk) at thumbnail scale, ``class_id`` = the class's index in ``classes``."""
    stored = Stored.of(record)
    xyxy = np.asarray(stored.xyxy, dtype=np.float32).reshape(-1, 4) * scale  # no boxes: [] reshaped to (0, 4)
    n = len(xyxy)
    index = {name: i for i, name in enumerate(classes)}
    names = np.asarray(stored.column("class_name"), dtype=object)
    mask = None
    rles = stored.masks
    if rles and any(r is not None for r in rles):
        mask = np.zeros((n, size[1], size[0]), dtype=bool)
        for i, rle in enumerate(rles):
            if rle is not None:
                full = decode_masks([rle])[0].astype(np.uint8)
                mask[i] = cv2.resize(full, size, interpolation=cv2.INTER_NEAREST).astype(bool)
    return sv.Detections(
        xyxy=xyxy,
        mask=mask,
        confidence=stored.scores().astype(np.float32),
        class_id=np.asarray([index.get(name or "<no class>", len(classes)) for name in names], dtype=int),
        data={
            "class_name": names,
            "status": np.asarray(stored.column("status"), dtype=object),
            "reason": np.asarray(stored.column("reason"), dtype=object),
            "has_mask": np.asarray([r is not None for r in rles] if rles else [False] * n, dtype=bool),
        },
    )


def _label(name: str, score: float, status: str, reason: str) -> str:
    text = f"{name or '?'} {'' if np.isnan(score) else f'{score:.2f}'}".strip()
    return text if status == KEPT else f"{text} {status[0]}:{reason}"


def annotate(image: Image.Image, det: sv.Detections, focus: str | None = None) -> Image.Image:
    """Draw ``det`` on ``image``; dropped boxes get a label only when their ``status/reason`` is ``focus``."""
    status, reason = det.data["status"], det.data["reason"]
    kept, flagged, dropped = det[status == KEPT], det[status == FLAGGED], det[status == DROPPED]
    thin = max(1, round(min(image.size) / 240))
    if det.mask is not None:
        shown = det[(status != DROPPED) & det.data["has_mask"]]
        image = sv.MaskAnnotator(opacity=0.35).annotate(image, shown)
    image = sv.BoxAnnotator(color=sv.Color.from_hex(DROPPED_COLOR), thickness=thin).annotate(image, dropped)
    image = sv.BoxAnnotator(thickness=thin + 1).annotate(image, kept)
    image = sv.BoxCornerAnnotator(color=sv.Color.from_hex(FLAGGED_COLOR), thickness=thin + 2,
                                  corner_length=max(6, thin * 6)).annotate(image, flagged)
    focused = np.array([f"{s}/{r}" == focus for s, r in zip(status, reason)], dtype=bool)
    for shown, color in ((det[status != DROPPED], None), (det[(status == DROPPED) & focused], DROPPED_COLOR)):
        if len(shown):
            labels = [_label(*row) for row in zip(shown.data["class_name"], shown.confidence,
                                                   shown.data["status"], shown.data["reason"])]
            annotator = sv.LabelAnnotator(text_scale=0.35, text_padding=2, smart_position=True,
                                          **({"color": sv.Color.from_hex(color)} if color else {}))
            image = annotator.annotate(image, shown, labels=labels)
    return image


def write_preview(row: dict[str, Any], path: Path, classes: Sequence[str], focus: str | None = None,
                  side: int = THUMB_SIDE) -> tuple[int, int, str | None]:
    """Write the annotated thumbnail of one store row as a JPEG; return its size and any problem with the image."""
    image, scale, problem = load_thumbnail(row, side)
    det = detections(row.get("labels") or {}, scale, image.size, classes)
    image = annotate(image, det, focus)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, "JPEG", quality=85)
    return image.size[0], image.size[1], problem
