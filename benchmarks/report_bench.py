"""Report speed and memory: ``autolabel report`` beside the floor any report pays (one streamed read of the store).

    python benchmarks/report_bench.py --sizes 10000 100000 [--work /tmp/report_bench] [--samples 12]

Data: N images (64x64 PNGs: 256 distinct files, the rest hard links to them, so 100k images cost inodes, not
disk), 10 boxes each over 5 classes with scores uniform in [0.05, 1], every 4th box with a mask; a third of the
boxes dropped by one of two reasons, a tenth flagged; 1 % of the images failed. The store is filled through
``Store.commit`` with ``records.to_record`` records, the way a run fills it (cached in --work between invocations).

Each variant runs in a fresh subprocess, so its peak RSS (``ru_maxrss``) is its own: ``read-store`` streams every
row and parses its labels (the floor: every report must read every row once); ``report`` is the whole command
(one pass, thumbnails of the samples, the page), with its parts timed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CLASSES = ["person", "car", "dog", "cat", "bike"]
SIZE, BOXES, DISTINCT = 64, 10, 256
VARIANTS = ["read-store", "report"]


def prepare(root: Path, n: int) -> Path:
    """Images and a filled store for ``n`` images under ``root`` (reused when already there)."""
    import supervision as sv
    from PIL import Image

    from autolabel.labels import Labels
    from autolabel.records import to_record
    from autolabel.store import ImageResult, Store

    out = root / "out"
    if (root / "READY").exists():
        return out
    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(0)
    palette = rng.integers(0, 255, (DISTINCT, 3), dtype=np.uint8)
    (root / "base").mkdir(parents=True)
    for k in range(DISTINCT):
        Image.new("RGB", (SIZE, SIZE), tuple(int(v) for v in palette[k])).save(root / "base" / f"{k}.png")
    digests = [hashlib.sha256((root / "base" / f"{k}.png").read_bytes()).hexdigest() for k in range(DISTINCT)]
    started = time.perf_counter()
    with Store(out) as store:
        run_id = store.begin_run("bench", {"ontology": CLASSES})
        batch: list[ImageResult] = []
        for i in range(n):
            rel = f"{i // 1000:03d}/img{i:07d}.png"
            path = root / "in" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            os.link(root / "base" / f"{i % DISTINCT}.png", path)
            if i % 100 == 99:
                batch.append(ImageResult(str(path), rel, digests[i % DISTINCT], "failed",
                                         reason="truncated or corrupt image data (unexpected end of file)"))
                continue
            x1, y1 = rng.integers(0, SIZE - 16, BOXES), rng.integers(0, SIZE - 16, BOXES)
            w, h = rng.integers(6, 16, BOXES), rng.integers(6, 16, BOXES)
            masks = np.zeros((BOXES, SIZE, SIZE), dtype=bool)
            for k in range(0, BOXES, 4):
                masks[k, y1[k]:y1[k] + h[k], x1[k]:x1[k] + w[k]] = True
            names = np.array([CLASSES[c] for c in rng.integers(0, len(CLASSES), BOXES)], dtype=object)
            scores = rng.uniform(0.05, 1.0, BOXES)
            roll = rng.uniform(size=BOXES)
            status = np.where(roll < 0.2, "dropped", np.where(roll < 0.33, "dropped", np.where(roll < 0.43,
                                                                                              "flagged", "kept")))
            reason = np.where(roll < 0.2, "low_score", np.where(roll < 0.33, "nms", np.where(roll < 0.43,
                                                                                           "edge_box", "")))
            det = sv.Detections(
                xyxy=np.stack([x1, y1, x1 + w, y1 + h], axis=1).astype(np.float32), mask=masks,
                confidence=scores.astype(np.float32),
                data={"class_name": names, "phrase": names.copy(), "status": status.astype(object),
                      "reason": reason.astype(object), "has_mask": np.arange(BOXES) % 4 == 0},
            )
            labels = Labels(SIZE, SIZE)
            labels.add(det, stage="bench", provenance={"model": "bench"})
            batch.append(ImageResult(str(path), rel, digests[i % DISTINCT], "done", SIZE, SIZE,
                                     labels=to_record(labels)))
            if len(batch) >= 1000:
                store.commit(batch, run_id, "bench")
                batch.clear()
        store.commit(batch, run_id, "bench")
        store.end_run(run_id, "partial", {"counts": {"seen": n, "labeled": n - n // 100, "skipped": 0,
                                                     "failed": n // 100},
                                          "stage_seconds": {"bench": 1.0}, "stage_images": {"bench": n}})
    (root / "READY").write_text(f"{time.perf_counter() - started:.1f}\n")
    return out


def variant(name: str, out: Path, samples: int) -> dict[str, float]:
    from autolabel.store import Store

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if name == "read-store":
        with Store(out) as store:
            rows = sum(1 for _ in store.images(status="done"))
        timings["rows"] = rows
    else:
        from autolabel.quality import report as report_module
        from autolabel.quality import report_data

        collect, write_previews = report_data.collect, report_module.write_previews

        def timed(fn, key):
            def wrapper(*args, **kwargs):
                t = time.perf_counter()
                result = fn(*args, **kwargs)
                timings[key] = time.perf_counter() - t
                return result
            return wrapper

        report_data.collect = timed(collect, "pass")
        report_module.write_previews = timed(write_previews, "thumbnails")
        index = report_module.build_report(out, out.parent / "report", samples=samples)
        timings["page_kb"] = index.stat().st_size / 1024
        timings["thumbnails_n"] = len(list((index.parent / "img").iterdir()))
    timings["total"] = time.perf_counter() - t0
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--work", default="/tmp/report_bench")
    parser.add_argument("--samples", type=int, default=12)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        timings = variant(args.child, Path(args.out), args.samples)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps({k: round(v, 2) for k, v in timings.items()} | {"peak_rss_mb": round(peak)}))
        return
    print("| images | boxes | variant | seconds | ratio to read-store | parts | peak RSS MB |")
    print("|---|---|---|---|---|---|---|")
    for n in args.sizes:
        t0 = time.perf_counter()
        out = prepare(Path(args.work) / str(n), n)
        print(f"<!-- prepared {n} images in {time.perf_counter() - t0:.0f} s -->", flush=True)
        floor = None
        for name in VARIANTS:
            cmd = [sys.executable, __file__, "--child", name, "--out", str(out), "--samples", str(args.samples)]
            r = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()[-1])
            floor = floor or r["total"]
            parts = "" if name == "read-store" else (
                f"pass {r['pass']} s, {r['thumbnails_n']:.0f} thumbnails {r['thumbnails']} s, "
                f"page {r['page_kb']:.0f} kB")
            print(f"| {n:,} | {n * BOXES:,} | {name} | {r['total']} | {r['total'] / floor:.2f} | {parts} | "
                  f"{r['peak_rss_mb']} |", flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
