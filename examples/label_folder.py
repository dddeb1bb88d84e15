"""Label the example images with the offline OCR pipeline through the Python API.

    python examples/label_folder.py [OUTPUT_DIR]

Runs with no network (the OCR model ships inside rapidocr-onnxruntime). Re-running skips what is done.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from autolabel import Pipeline

HERE = Path(__file__).resolve().parent


def main() -> int:
    output = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("runs/example-ocr")
    pipeline = Pipeline.from_yaml(HERE.parent / "pipelines" / "ocr.yaml")
    summary = pipeline.run(input=HERE / "images", output=output)
    print(summary.status, summary.counts)
    coco = json.loads((output / "coco.json").read_text())
    names = {image["id"]: image["file_name"] for image in coco["images"]}
    for ann in coco["annotations"]:
        print(f"{names[ann['image_id']]}: {ann['attributes']['text']!r} at {ann['bbox']} (score {ann['score']:.2f})")
    return int(summary.exit_code)


if __name__ == "__main__":
    raise SystemExit(main())
