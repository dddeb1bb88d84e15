"""Exports read the run store and stream to disk (temp file + rename); they never run a model."""

from __future__ import annotations

from pathlib import Path

from ..config import ExportSpec, PipelineSpec
from ..store import Store
from .coco import write_coco

DEFAULT_PATHS = {"coco": "coco.json"}


def write_export(store: Store, spec: PipelineSpec, export: ExportSpec, output: Path) -> str:
    """Write one export; return its path."""
    path = output / (export.path or DEFAULT_PATHS[export.format])
    if export.format == "coco":
        write_coco(store, spec.ontology, path, min_score=export.min_score)
    return str(path)


def write_exports(store: Store, spec: PipelineSpec, output: Path) -> list[str]:
    """Every export the pipeline file lists."""
    return [write_export(store, spec, export, output) for export in spec.config.exports]
