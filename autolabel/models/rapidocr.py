"""Offline OCR with RapidOCR (``rapidocr-onnxruntime``): PP-OCRv4 detection + recognition, weights in the wheel.

The one model that works on a machine that has never seen a model hub: ``pip install "autolabel[ocr]"`` is all.
It runs on the CPU through onnxruntime, one image at a time (it batches the text lines of an image itself).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..errors import ModelLoadError, one_line
from .outputs import TextLines

if TYPE_CHECKING:
    from PIL import Image

    from .spec import ModelSpec


class RapidOcr:
    """Model type ``rapidocr``.

    ``id``: any name for the bundled models (``rapidocr-onnxruntime``), or a RapidOCR ``config.yaml`` of your own.
    ``options``: passed to ``RapidOCR(...)`` (e.g. ``rec_model_path``, ``rec_keys_path``, ``det_limit_side_len``).
    """

    task = "ocr_with_region"

    def __init__(self, engine: Any, spec: "ModelSpec", version: str | None):
        self.engine = engine
        self.spec = spec
        self.id = spec.id
        self.revision = version  # the wheel's version pins the bundled weights

    @classmethod
    def load(cls, spec: "ModelSpec") -> "RapidOcr":
        try:
            from rapidocr_onnxruntime import RapidOCR
        except ImportError:
            raise ModelLoadError(
                f"model {spec.id!r} (rapidocr): rapidocr-onnxruntime is not installed (pip install 'autolabel[ocr]')"
            ) from None
        from importlib.metadata import PackageNotFoundError, version

        config_path = None
        if spec.id.lower().endswith((".yaml", ".yml")):
            if not Path(spec.id).expanduser().is_file():
                raise ModelLoadError(f"model {spec.id!r} (rapidocr): no such RapidOCR config file")
            config_path = str(Path(spec.id).expanduser())
        try:
            engine = RapidOCR(config_path=config_path, **spec.options)
        except Exception as err:  # noqa: BLE001 — RapidOCR raises bare exceptions for bad options and model paths
            why = f"{type(err).__name__}: {one_line(str(err))}"
            raise ModelLoadError(f"model {spec.id!r} (rapidocr): {why}") from None
        try:
            wheel = version("rapidocr-onnxruntime")
        except PackageNotFoundError:  # pragma: no cover — importable but not installed as a distribution
            wheel = None
        return cls(engine, spec, wheel)

    def read(
        self,
        images: Sequence["Image.Image"],
        min_score: float = 0.5,
        box_threshold: float = 0.5,
        unclip_ratio: float = 1.6,
    ) -> list[TextLines]:
        """Text lines per image: quads in pixels, text, recognizer score (lines scored below ``min_score`` left out).

        ``box_threshold`` is the text detector's region score floor; ``unclip_ratio`` how far a region is grown
        around its text (RapidOCR's defaults).
        """
        results = []
        for image in images:
            found, _ = self.engine(
                image.convert("RGB"), box_thresh=box_threshold, unclip_ratio=unclip_ratio, text_score=min_score
            )
            if not found:
                results.append(TextLines())
                continue
            quads = np.asarray([line[0] for line in found], dtype=np.float32).reshape(-1, 4, 2)
            results.append(
                TextLines(quads=quads, texts=[str(line[1]) for line in found],
                          scores=np.asarray([float(line[2]) for line in found], dtype=np.float32))
            )
        return results
