"""The ready pipelines of pipelines/ for detectors, segmenters and OCR validate without loading any model.

Each is also run end to end: ocr.yaml for real (tests/models/test_models_ocr.py), grounding-sam2.yaml with tiny
checkpoints swapped in by ``--set`` (tests/models/test_models_segment.py), owlv2.yaml here, sam3.yaml by hub id from a
cache holding a tiny facebook/sam3 (tests/models/test_sam3_pipeline.py).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from autolabel import Pipeline
from tiny_models import noise_image, tiny

PIPELINES = Path(__file__).parents[2] / "pipelines"


SUMMARIES = {
    "ocr.yaml": "ok (1 models, 1 stages: ocr; 1 classes; 1 exports)",
    "grounding-sam2.yaml": "ok (2 models, 2 stages: boxes, masks; 3 classes; 1 exports)",
    "owlv2.yaml": "ok (1 models, 1 stages: boxes; 3 classes; 1 exports)",
    "sam3.yaml": "ok (1 models, 6 stages: concepts, score, review, mask_area, mask_cleanup, mask_nms; 4 classes; "
                 "3 exports)",
}


def test_pipelines_validate_without_importing_torch_or_transformers(subprocess_env):
    script = (
        "import sys; from autolabel.cli import main\n"
        f"codes = [main(['validate', p]) for p in {[str(PIPELINES / n) for n in SUMMARIES]!r}]\n"
        "print(codes, sorted(m for m in ('torch', 'transformers', 'rapidocr_onnxruntime') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=subprocess_env,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[:-1] == [f"{PIPELINES / name}: {summary}" for name, summary in SUMMARIES.items()]
    assert lines[-1] == "[0, 0, 0, 0] []"


def test_shipped_owlv2_pipeline_runs_with_a_tiny_checkpoint(tmp_path):
    (tmp_path / "in").mkdir()
    noise_image(150, 60).save(tmp_path / "in" / "wide.png")
    pipeline = Pipeline.from_yaml(PIPELINES / "owlv2.yaml", [f"models.detector.id={tiny('owlv2')}",
                                                             "stages.0.box_threshold=0.0"])
    summary = pipeline.run(input=tmp_path / "in", output=tmp_path / "out")
    assert summary.status == "ok" and summary.counts["labeled"] == 1
    assert (tmp_path / "out" / "coco.json").is_file()
