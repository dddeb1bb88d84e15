"""Exports read the run store and stream to disk (temp file + rename); they never run a model.

Formats: ``coco`` (+ ``captions.json``), ``coco-results`` (for ``COCO.loadRes``), ``yolo`` (a dataset folder),
``labelstudio`` (tasks JSON + labeling-config XML). Options: see :class:`autolabel.config.ExportSpec`.
Clips' tracks (:mod:`autolabel.video`): ``mot`` (MOT 1.1 sequences), ``cvat-video`` (CVAT for video 1.1 XML),
``labelstudio-video`` (video tasks + config), ``ytvis`` (YouTube-VIS JSON with RLE masks).
"""

from __future__ import annotations

from pathlib import Path

from ..config import ExportSpec, PipelineSpec
from ..store import Store

DEFAULT_PATHS = {
    "coco": "coco.json",
    "coco-results": "coco_results.json",
    "yolo": "yolo",
    "labelstudio": "labelstudio_tasks.json",
    "mot": "mot",
    "cvat-video": "cvat_video",
    "labelstudio-video": "labelstudio_video_tasks.json",
    "ytvis": "ytvis.json",
}


def write_export(store: Store, spec: PipelineSpec, export: ExportSpec, output: Path) -> list[str]:
    """Write one export (``export.path`` is relative to ``output``); return the paths written."""
    path = Path(output) / (export.path or DEFAULT_PATHS[export.format])
    common = {"min_score": export.min_score, "flagged": export.flagged == "include"}
    ontology = spec.ontology
    if export.format == "coco":
        from .coco import captions_path_for, write_coco

        captions = captions_path_for(path) if export.option("captions") else None
        return write_coco(store, ontology, path, segmentation_mode=export.option("segmentation"),
                          captions_path=captions, **common)
    if export.format == "coco-results":
        from .coco import write_coco_results

        return write_coco_results(store, ontology, path, segmentation_mode=export.option("segmentation"), **common)
    if export.format == "yolo":
        from .yolo import write_yolo

        return write_yolo(store, ontology, path, task=export.option("task"), split=export.option("split"),
                          seed=export.option("seed"), images=export.option("images"), **common)
    if export.format == "labelstudio":
        from .labelstudio import write_labelstudio

        version = export.option("model_version") or spec.config.name or f"autolabel-{spec.hash}"
        return write_labelstudio(store, ontology, path, image_root=export.option("image_root"),
                                 model_version=version, score=export.option("task_score"),
                                 masks=export.option("masks"), **common)
    if export.format in ("mot", "cvat-video", "ytvis"):
        from .cvat_video import write_cvat_video
        from .mot import write_mot
        from .ytvis import write_ytvis

        writer = {"mot": write_mot, "cvat-video": write_cvat_video, "ytvis": write_ytvis}[export.format]
        return writer(store, ontology, path, **common)
    if export.format == "labelstudio-video":
        from .labelstudio_video import write_labelstudio_video

        version = export.option("model_version") or spec.config.name or f"autolabel-{spec.hash}"
        return write_labelstudio_video(store, ontology, path, video_root=export.option("video_root"),
                                       model_version=version, score=export.option("task_score"),
                                       tolerance=export.option("keyframe_tolerance"), **common)
    raise ValueError(f"unknown export format {export.format!r}")  # unreachable: ExportSpec validates it

