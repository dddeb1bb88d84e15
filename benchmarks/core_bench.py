"""Runner overhead and memory: a trivial model over generated images, 1k vs 10k (or any sizes).

    python benchmarks/core_bench.py --sizes 1000 10000

Each size runs in a fresh subprocess (so peak RSS is that run's own). Reported per size: images/s, the share of
wall time spent outside the model (decode wait, commit, bookkeeping), and peak RSS. Memory must stay flat as the
image count grows: the runner streams, it never holds the dataset.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import supervision as sv
from PIL import Image

from autolabel.stage import Item, Stage, StageParams


class TrivialModel(Stage):
    """Stands in for a model: one box per image scored by mean brightness (touches every pixel once)."""

    Params = StageParams

    def __call__(self, items: list[Item]) -> list[Item]:
        for item in items:
            w, h = item.image.size
            score = float(np.asarray(item.image).mean() / 255.0)
            det = sv.Detections(xyxy=np.array([[0, 0, w / 2, h / 2]], dtype=np.float32),
                                confidence=np.array([score], dtype=np.float32),
                                data={"class_name": np.array(["thing"], dtype=object)})
            item.labels.add(det, stage=self.name)
        return items


def make_images(folder: Path, n: int, size: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    for i in range(n):
        path = folder / f"{i // 1000:03d}" / f"img{i:06d}.jpg"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(np.roll(base, i, axis=1)).save(path, quality=85)


def child(images: Path, output: Path, batch_size: int) -> dict:
    from autolabel import Pipeline

    pipeline = Pipeline.from_dict({
        "ontology": {"thing": "thing"},
        "batch_size": batch_size,
        "stages": [{"type": "__main__:TrivialModel", "name": "model"}],
        "exports": [{"format": "coco"}],
    })
    start = time.perf_counter()
    summary = pipeline.run(input=images, output=output)
    wall = time.perf_counter() - start
    model = summary.data["stage_seconds"]["model"]
    return {
        "images": summary.counts["labeled"],
        "wall_s": round(wall, 2),
        "images_per_s": round(summary.counts["labeled"] / wall, 1),
        "model_s": round(model, 2),
        "outside_model_share": round(1 - model / wall, 3),
        "loop_s": summary.data["loop_seconds"],
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--child", nargs=2, metavar=("IMAGES", "OUTPUT"))
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(Path(args.child[0]), Path(args.child[1]), args.batch_size)))
        return

    rows = []
    with tempfile.TemporaryDirectory(prefix="autolabel-bench-") as tmp:
        for n in args.sizes:
            images = Path(tmp) / f"images{n}"
            make_images(images, n, args.image_size)
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(images), str(Path(tmp) / f"out{n}"),
                 "--batch-size", str(args.batch_size)],
                check=True, capture_output=True, text=True, env=dict(os.environ),
            )
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    print("\n| images | images/s | wall s | model s | outside model | peak RSS MB |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['images']} | {r['images_per_s']} | {r['wall_s']} | {r['model_s']} | "
              f"{r['outside_model_share']:.1%} | {r['peak_rss_mb']} |")


if __name__ == "__main__":
    main()
