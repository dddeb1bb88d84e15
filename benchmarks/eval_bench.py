"""``autolabel eval`` and ``autolabel calibrate`` beside a plain pycocotools COCOeval of the same boxes.

    python benchmarks/eval_bench.py --images 100000 --boxes 10 [--work /tmp/eval_bench]

Data: N images (640x480, no pixels needed: the store and the ground truth only name them), ``--boxes`` ground-truth
boxes per image of 3 classes, and as many predictions: each ground-truth box jittered (5-40 % of its size), 10 %
missed, 10 % extra boxes, scores that follow the jitter; a score_threshold stage at 0.3 has dropped what scored
below (so the filter accounting has work). The store is filled through ``Store.commit`` with ``to_record``-shaped
records, as a run fills it; the ground truth is one COCO JSON file. Cached in --work between invocations.

Variants, each in a fresh subprocess (its own peak RSS, ``ru_maxrss``):

* ``pycocotools``: what a user writes with pycocotools alone — ``COCO(gt.json)``, ``loadRes(results)`` of the kept
  boxes, ``COCOeval(...).evaluate(); accumulate(); summarize()``.
* ``eval``: ``autolabel eval OUT --gt gt.json`` (reads the store, matches images and classes, COCOeval for AP,
  operating point, curves, confusion, filter costs, reliability, eval.json).
* ``calibrate``: ``autolabel calibrate OUT --gt gt.json --target-precision 0.9 --unreached drop``.

``--phases``: instead, where ``eval``'s memory goes — RSS and peak RSS after each of its phases (ground truth
loaded, both sides paired, COCO AP, the rest of eval.json), in this process, on the data of each ``--images``.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CLASSES = ["person", "car", "dog"]
W, H = 640, 480


def prepare(root: Path, n: int, per_image: int) -> tuple[Path, Path, Path]:
    """(store folder, ground-truth JSON, results JSON) for ``n`` images, reused when already there."""
    from autolabel.store import ImageResult, Store

    out, gt_path, res_path, done = root / "out", root / "gt.json", root / "results.json", root / "READY"
    if done.exists():
        return out, gt_path, res_path
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    pipeline = {"name": "bench", "ontology": CLASSES,
                "stages": [{"type": "plugins:Model", "name": "model"}, {"type": "score_threshold", "threshold": 0.3}]}
    images, gts, results = [], [], []
    with Store(out) as store:
        run_id = store.begin_run("bench", pipeline)
        batch: list[ImageResult] = []
        for i in range(n):
            rel = f"{i // 1000:03d}/img{i:06d}.jpg"
            images.append({"id": i + 1, "file_name": rel, "width": W, "height": H})
            wh = rng.uniform(20, 120, (per_image, 2))
            xy = rng.uniform(0, 1, (per_image, 2)) * ([W, H] - wh)
            truth = np.hstack([xy, xy + wh])
            cls = rng.integers(0, len(CLASSES), per_image)
            for box, c in zip(truth, cls):
                gts.append({"id": len(gts) + 1, "image_id": i + 1, "category_id": int(c) + 1, "iscrowd": 0,
                            "bbox": [*box[:2].round(2).tolist(), *(box[2:] - box[:2]).round(2).tolist()],
                            "area": float(np.prod(box[2:] - box[:2]))})
            keep = rng.random(per_image) >= 0.1
            spread = rng.choice([0.05, 0.15, 0.4], per_image)
            pred = truth + rng.normal(0, 1, (per_image, 4)) * spread[:, None] * np.hstack([wh, wh])
            score = np.clip(0.95 - spread - np.abs(rng.normal(0, 0.08, per_image)), 0.01, 0.99)
            n_extra = per_image // 10
            exy = rng.uniform(0, 1, (n_extra, 2)) * [W - 40, H - 40]
            pred = np.vstack([pred[keep], np.hstack([exy, exy + 40])])
            pcls = np.concatenate([cls[keep], rng.integers(0, len(CLASSES), n_extra)])
            score = np.concatenate([score[keep], rng.uniform(0.05, 0.6, n_extra)]).astype(np.float32)
            pred[:, 2:] = np.maximum(pred[:, 2:], pred[:, :2] + 1)
            status = np.where(score < 0.3, "dropped", "kept")
            m = len(pred)
            record = {"width": W, "height": H, "texts": [], "provenance": {},
                      "boxes": {"xyxy": pred.round(3).tolist(), "confidence": score.astype(np.float64).tolist(),
                                "data": {"class_name": [CLASSES[c] for c in pcls], "phrase": [CLASSES[c] for c in pcls],
                                         "stage": ["model"] * m, "status": status.tolist(),
                                         "reason": np.where(status == "dropped", "low_score", "").tolist(),
                                         "text": [""] * m, "has_mask": [False] * m}}}
            for box, c, s, st in zip(pred, pcls, score, status):
                if st == "kept":
                    results.append({"image_id": i + 1, "category_id": int(c) + 1, "score": float(s),
                                    "bbox": [*box[:2].round(3).tolist(), *(box[2:] - box[:2]).round(3).tolist()]})
            batch.append(ImageResult(path=f"/bench/{rel}", rel_path=rel, sha256=f"{i:064x}", status="done", width=W,
                                     height=H, labels=record))
            if len(batch) == 1000:
                store.commit(batch, run_id, "bench")
                batch = []
        store.commit(batch, run_id, "bench")
        store.end_run(run_id, "ok", {})
    categories = [{"id": k + 1, "name": c} for k, c in enumerate(CLASSES)]
    gt_path.write_text(json.dumps({"images": images, "annotations": gts, "categories": categories}))
    res_path.write_text(json.dumps(results))
    done.write_text("ok")
    return out, gt_path, res_path


def plain(gt_path: Path, res_path: Path) -> None:
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        ev = COCOeval(gt, gt.loadRes(str(res_path)), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    print(f"AP {ev.stats[0]:.4f}", file=sys.stderr)


def child(variant: str, out: Path, gt_path: Path, res_path: Path) -> None:
    t0 = time.perf_counter()
    if variant == "pycocotools":
        plain(gt_path, res_path)
    else:
        from autolabel.cli import main

        args = ["eval", str(out), "--gt", str(gt_path)] if variant == "eval" else [
            "calibrate", str(out), "--gt", str(gt_path), "--target-precision", "0.9", "--unreached", "drop"]
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):
            code = main(args)
        assert code == 0, code
    wall = time.perf_counter() - t0
    print(json.dumps({"variant": variant, "wall_s": round(wall, 2),
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))


def phases(out: Path, gt_path: Path) -> None:
    """Print RSS (now and peak) after each phase of ``autolabel eval``, the garbage collected before each reading."""
    import gc

    from autolabel.ontology import Ontology
    from autolabel.quality.data import operating_point, pair
    from autolabel.quality.eval import coco_ap, evaluate, stages_of
    from autolabel.quality.gt import load_ground_truth
    from autolabel.store import Store

    t0 = time.perf_counter()

    def mark(name: str) -> None:
        gc.collect()
        with open("/proc/self/statm") as f:
            rss = int(f.read().split()[1]) * resource.getpagesize() / 2**20
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"| {name} | {time.perf_counter() - t0:.1f} | {rss:.0f} | {peak:.0f} |", flush=True)

    print("| phase | s | RSS MB | peak RSS MB |\n|---|---:|---:|---:|")
    mark("start")
    truth = load_ground_truth(gt_path)
    mark("ground truth loaded")
    with Store(out) as store:
        spec = store.last_pipeline()
        paired = pair(store, Ontology.from_config(spec["ontology"]), truth)
    mark("both sides paired")
    run, gt = paired.run, paired.gt
    op = np.flatnonzero(operating_point(run) & np.isin(run.cls, paired.evaluated))
    ap = coco_ap(paired, op, np.flatnonzero(gt.status != "crowd"), "bbox")
    mark(f"COCO AP ({ap['overall']['ap']:.4f})")
    evaluate(paired, stages=stages_of(spec))
    mark("all of eval.json (COCO AP again included)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, nargs="+", default=[100_000])
    ap.add_argument("--boxes", type=int, default=10, help="ground-truth boxes per image")
    ap.add_argument("--work", default="/tmp/eval_bench")
    ap.add_argument("--variants", nargs="+", default=["pycocotools", "eval", "calibrate"])
    ap.add_argument("--phases", action="store_true", help="RSS after each phase of eval, in this process")
    ap.add_argument("--child", nargs=4, metavar=("VARIANT", "OUT", "GT", "RES"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], *(Path(p) for p in args.child[1:]))
        return
    if args.phases:
        for n in args.images:
            out, gt_path, _ = prepare(Path(args.work) / f"n{n}", n, args.boxes)
            phases(out, gt_path)
        return
    print("| images | GT boxes | predictions (kept) | variant | wall s | × pycocotools | peak RSS MB |")
    print("|---:|---:|---:|---|---:|---:|---:|")
    for n in args.images:
        out, gt_path, res_path = prepare(Path(args.work) / f"n{n}", n, args.boxes)
        n_gt = len(json.loads(gt_path.read_text())["annotations"])
        n_res = len(json.loads(res_path.read_text()))
        base = None
        for variant in args.variants:
            got = subprocess.run([sys.executable, __file__, "--child", variant, str(out), str(gt_path), str(res_path)],
                                 capture_output=True, text=True, check=True)
            row = json.loads(got.stdout.strip().splitlines()[-1])
            base = base or (row["wall_s"] if variant == "pycocotools" else None)
            ratio = f"{row['wall_s'] / base:.2f}" if base else "-"
            print(f"| {n} | {n_gt} | {n_res} | {variant} | {row['wall_s']} | {ratio} | {row['peak_rss_mb']} |",
                  flush=True)


if __name__ == "__main__":
    main()
