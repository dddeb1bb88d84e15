"""Exports read the run store and stream to disk (temp file + rename); they never run a model.

Formats: ``coco`` (+ ``captions.json``), ``coco-results`` (for ``COCO.loadRes``), ``yolo`` (a dataset folder),
``labelstudio`` (tasks JSON + labeling-config XML). Each format's model in :mod:`autolabel.config` (its options,
default path and writer: :class:`autolabel.config.ExportSpec`) is all there is to know of it.
Clips' tracks (:mod:`autolabel.video`): ``mot`` (MOT 1.1 sequences), ``cvat-video`` (CVAT for video 1.1 XML),
``labelstudio-video`` (video tasks + config), ``ytvis`` (YouTube-VIS JSON with RLE masks).
"""

from __future__ import annotations

from pathlib import Path

from ..config import EXPORT_FORMATS, ExportSpec, PipelineSpec
from ..registry import import_object
from ..store import Store

#: format → where it writes by default (each format's model says: ``ExportSpec.default_path``)
DEFAULT_PATHS: dict[str, str] = {name: model.default_path for name, model in EXPORT_FORMATS.items()}


def write_export(store: Store, spec: PipelineSpec, export: ExportSpec, output: Path) -> list[str]:
    """Write one export (``export.path`` is relative to ``output``) with the writer its format's model names;
    return the paths written."""
    path = Path(output) / (export.path or DEFAULT_PATHS[export.format])
    writer = import_object(EXPORT_FORMATS[export.format].writer)
    return writer(store, spec, export, path)
