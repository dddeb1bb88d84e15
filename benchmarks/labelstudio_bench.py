"""Pushing predictions to a real Label Studio: batched ``autolabel push`` vs. one request per task.

    python benchmarks/labelstudio_bench.py [--images 10000] [--per-task 500] [--json out.json]

Labels ``--images`` small PNGs with the export tests' stages (CenterBox + RichLabels: per image four boxes, one
with a brush mask, one with a polygon, an OCR text, a flagged marker, a caption — "box and mask predictions"), then
on one server started here (tests/support/lsserver.py; installed on first use):

1. ``push`` into a new project (batches of 500): tasks created with their predictions;
2. ``push`` again with nothing changed (the reconcile cost: listing the project);
3. ``push`` with another model_version (every prediction replaced: delete + import, batched);
4. the ML-backend pattern — one import request per task, each with its prediction — over ``--per-task`` of the
   same tasks into another project, extrapolated linearly to ``--images`` (said so in the output).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "support"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def make_images(folder: Path, n: int) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        # distinct content per image (distinct task keys): the index in the pixels
        Image.new("RGB", (64, 48), (i % 256, (i // 256) % 256, 77)).save(folder / f"img{i:05d}.png")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--per-task", type=int, default=500, help="tasks pushed one request each (then extrapolated)")
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--json", help="write the figures here too")
    args = ap.parse_args()

    from lsserver import TOKEN, LabelStudioServer, ensure_installed
    from plugins import export_pipeline

    from autolabel.config import PushSpec
    from autolabel.exports.labelstudio import PredictionChecker, labeling_config, task
    from autolabel.exports.rows import image_rows
    from autolabel.labelstudio.client import Connection
    from autolabel.labelstudio.push import push
    from autolabel import Pipeline
    from autolabel.store import Store

    figures: dict[str, object] = {"images": args.images, "batch_size": args.batch_size}
    with tempfile.TemporaryDirectory(prefix="ls-bench-") as tmp:
        base = Path(tmp)
        t0 = time.monotonic()
        server = LabelStudioServer(ensure_installed(), base / "ls")
        server.start()
        figures["server_start_s"] = round(time.monotonic() - t0, 1)
        folder = server.document_root / "bench"
        t0 = time.monotonic()
        make_images(folder, args.images)
        pipeline = Pipeline.from_dict(export_pipeline(name="bench", batch_size=64))
        pipeline.run(input=str(folder), output=str(base / "out"))
        figures["label_run_s"] = round(time.monotonic() - t0, 1)
        store = Store(base / "out")
        spec = Pipeline.from_dict(store.last_pipeline()).spec
        try:
            runs = []
            for what, extra in (("create", {}), ("no change", {}), ("replace all", {"model_version": "bench-v2"})):
                options = PushSpec(url=server.url, project="bench batched", batch_size=args.batch_size, **extra)
                t0 = time.monotonic()
                s = push(store, spec, options, api_key=TOKEN)
                runs.append({"push": what, "seconds": round(time.monotonic() - t0, 2), "created": s.created,
                             "replaced": s.updated, "unchanged": s.unchanged, "rounds": s.rounds,
                             "timings": s.timings})
                print(f"push ({what}): {runs[-1]}", flush=True)
                assert not s.failed, s.failed
            figures["batched"] = runs

            # the ML-backend pattern: one import request per task (same tasks, same server)
            conn = Connection(server.url, TOKEN)
            project = conn.sdk.projects.create(title="bench per task", label_config=labeling_config(spec.ontology))
            checker = PredictionChecker(labeling_config(spec.ontology))
            items = []
            for row in image_rows(store, spec.ontology):
                items.append(task(row, model_version="bench"))
                if len(items) == args.per_task:
                    break
            t_build = time.monotonic()
            for item in items:
                checker.check(item)
            t0 = time.monotonic()
            for item in items:
                conn.call("import one task", conn.sdk.projects.import_tasks, project.id, request=[item], safe=False)
            per_task = time.monotonic() - t0
            figures["per_task"] = {
                "tasks": len(items), "seconds": round(per_task, 2), "validate_s": round(t0 - t_build, 2),
                "tasks_per_second": round(len(items) / per_task, 1),
                "extrapolated_seconds_for_images": round(per_task / len(items) * args.images, 1),
            }
            created = figures["batched"][0]  # type: ignore[index]
            figures["speedup_vs_per_task"] = round(
                figures["per_task"]["extrapolated_seconds_for_images"] / created["timings"]["rounds"], 1)  # type: ignore[index]
            print(f"one request per task: {figures['per_task']}", flush=True)
        finally:
            store.close()
            server.stop()
    print(json.dumps(figures, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
