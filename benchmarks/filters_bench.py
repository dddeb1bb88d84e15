"""Filter speed: the preset's filters over 1M boxes in 100k images, through the stages as a pipeline calls them.

    python benchmarks/filters_bench.py [--images 100000] [--boxes 10] [--batch-size 8] [--extra]

Like the runner, it streams: each batch of ``--batch-size`` images (the pipeline's default is 8) is built as
:class:`~autolabel.labels.Labels` with their own ``supervision.Detections`` (every required column; building is
not timed), then every filter stage is called on it in the preset's order, then the batch is let go. Per-image
and per-call overheads are therefore in the numbers. Times are CPU seconds of this process (``process_time``: a
shared machine's other load does not count) and wall seconds. ``--extra`` also times filters the preset does not
use (the OWL-ST rule, soft-NMS, WBF, text checks), after the preset's.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import supervision as sv
import yaml

from autolabel.labels import Labels, Text, with_columns
from autolabel.ontology import Ontology
from autolabel.registry import STAGE_GROUP, resolve
from autolabel.stage import Item, Stage, StageContext

ROOT = Path(__file__).resolve().parent.parent
CLASSES = ["person", "car", "dog", "cat", "bicycle", "chair", "bottle", "cup", "truck", "bird"]
EXTRA = [
    {"type": "confident_image"},
    {"type": "soft_nms"},
    {"type": "wbf"},
    {"type": "repetition", "fields": ["captions", "phrase"]},
    {"type": "text_length"},
]


class Boxes:
    """Random boxes for ``n`` 640x480 images, kept as flat arrays; :meth:`batch` makes the Labels of a batch."""

    def __init__(self, n: int, boxes: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        xy = rng.uniform(-10, 600, (n, boxes, 2))
        wh = rng.uniform(1, 300, (n, boxes, 2))
        self.xyxy = np.concatenate([xy, xy + wh], axis=2).astype(np.float32)
        self.score = rng.uniform(0, 1, (n, boxes)).astype(np.float32)
        self.cls = rng.choice(np.array(CLASSES + [""], dtype=object), (n, boxes))
        self.stage = np.array(["a", "b"] * (boxes // 2) + ["a"] * (boxes % 2), dtype=object)  # two sources, for WBF

    def batch(self, start: int, stop: int) -> list[Item]:
        items = []
        for i in range(start, stop):
            det = sv.Detections(xyxy=self.xyxy[i].copy(), confidence=self.score[i].copy(),
                                data={"class_name": self.cls[i].copy(), "phrase": self.cls[i].copy(),
                                      "stage": self.stage.copy()})
            labels = Labels(width=640, height=480, detections=with_columns(det),
                            texts=[Text(kind="caption", text="a dog on a red sofa", score=None, stage="a")],
                            provenance={"a": {"task": "od"}, "b": {"task": "od"}})
            items.append(Item(image=None, labels=labels))  # type: ignore[arg-type]  # filters never look
        return items


def build(raw: dict, ontology: Ontology) -> Stage:
    cls = resolve(STAGE_GROUP, raw["type"])
    params = cls.Params.model_validate(raw)
    return cls(params.name or raw["type"], params, StageContext(ontology=ontology))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=100_000)
    ap.add_argument("--boxes", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--preset", type=Path, default=ROOT / "pipelines" / "quality-fld5b.yaml")
    ap.add_argument("--extra", action="store_true", help="also time the filters the preset does not use")
    args = ap.parse_args(argv)

    ontology = Ontology.from_config(CLASSES)
    preset = [s for s in yaml.safe_load(args.preset.read_text())["stages"] if "model" not in s]
    steps = [(f"`{raw['type']}`", build(raw, ontology)) for raw in preset]
    extra = [(f"`{raw['type']}`", build(raw, ontology)) for raw in EXTRA] if args.extra else []
    data = Boxes(args.images, args.boxes)

    cpu: dict[str, float] = defaultdict(float)
    wall: dict[str, float] = defaultdict(float)
    kept = 0
    for start in range(0, args.images, args.batch_size):
        items = data.batch(start, min(start + args.batch_size, args.images))
        for name, stage in steps + extra:
            t0, c0 = time.perf_counter(), time.process_time()
            items = stage(items)
            wall[name] += time.perf_counter() - t0
            cpu[name] += time.process_time() - c0
            if stage is steps[-1][1]:
                kept += sum(int((it.labels.detections.data["status"] != "dropped").sum()) for it in items)

    n = args.images
    print(f"{n} images x {args.boxes} boxes = {n * args.boxes} boxes, batch size {args.batch_size}\n")
    print("| stage | CPU s | wall s | CPU µs per image |\n|---|---:|---:|---:|")
    for name, _ in steps:
        print(f"| {name} | {cpu[name]:.2f} | {wall[name]:.2f} | {1e6 * cpu[name] / n:.1f} |")
    total_cpu, total_wall = sum(cpu[k] for k, _ in steps), sum(wall[k] for k, _ in steps)
    print(f"| **the preset's {len(steps)} filters** | **{total_cpu:.2f}** | **{total_wall:.2f}** | "
          f"{1e6 * total_cpu / n:.1f} |")
    print(f"\n{kept} of {n * args.boxes} boxes not dropped after the preset")
    if extra:
        print("\n| other stage (after the preset) | CPU s | wall s | CPU µs per image |\n|---|---:|---:|---:|")
        for name, _ in extra:
            print(f"| {name} | {cpu[name]:.2f} | {wall[name]:.2f} | {1e6 * cpu[name] / n:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
