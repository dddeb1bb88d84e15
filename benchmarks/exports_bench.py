"""Export speed and memory: ours (streamed from the store) beside supervision's DetectionDataset.as_coco / as_yolo.

    python benchmarks/exports_bench.py --sizes 10000 100000 [--work /tmp/exports_bench] [--no-supervision]

Data: N generated 64x64 PNGs with 10 boxes each, every box with a mask (a small rectangle; every 5th mask in two
parts), 5 classes. The store is filled directly through ``Store.commit`` with ``records.to_record`` records, the
way a run fills it (cached in --work between invocations).

Each variant runs in a fresh subprocess, so its peak RSS (``ru_maxrss``) is its own; the ``imports`` variant is the
floor every variant pays (Python + numpy + supervision + pycocotools + cv2). supervision's variants first build the
in-memory DetectionDataset from the same store (decoding every mask; timed as ``load``) and then export (timed as
``export``); it holds every mask in memory, by design. Ours: ``coco`` (polygons, and RLE), ``yolo`` (detect and
segment, images symlinked: every image header is opened for its EXIF orientation), ``labelstudio`` (brush masks,
every prediction validated by label-studio-sdk).
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
SIZE, BOXES = 64, 10

VARIANTS = ["imports", "ours-coco-polygon", "ours-coco-rle", "ours-yolo-detect", "ours-yolo-segment",
            "ours-labelstudio", "sv-coco", "sv-yolo-detect", "sv-yolo-segment"]


def prepare(root: Path, n: int) -> Path:
    """Images and a filled store for ``n`` images under ``root`` (reused when already there)."""
    import supervision as sv
    from PIL import Image

    from autolabel.labels import Labels
    from autolabel.records import to_record
    from autolabel.store import ImageResult, Store

    out = root / "out"
    done = root / "READY"
    if done.exists():
        return out
    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(0)
    palette = rng.integers(0, 255, (256, 3), dtype=np.uint8)
    started = time.perf_counter()
    with Store(out) as store:
        run_id = store.begin_run("bench", {"ontology": CLASSES})
        batch: list[ImageResult] = []
        for i in range(n):
            rel = f"{i // 1000:03d}/img{i:06d}.png"
            path = root / "in" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (SIZE, SIZE), tuple(int(v) for v in palette[i % 256])).save(path)
            x1 = rng.integers(0, SIZE - 16, BOXES)
            y1 = rng.integers(0, SIZE - 16, BOXES)
            w = rng.integers(6, 16, BOXES)
            h = rng.integers(6, 16, BOXES)
            masks = np.zeros((BOXES, SIZE, SIZE), dtype=bool)
            for k in range(BOXES):
                masks[k, y1[k] : y1[k] + h[k] - 2, x1[k] : x1[k] + w[k]] = True
                if k % 5 == 0:  # a second part, one empty row below the first
                    masks[k, y1[k] + h[k] - 1 : y1[k] + h[k], x1[k] : x1[k] + 3] = True
            names = np.array([CLASSES[c] for c in rng.integers(0, len(CLASSES), BOXES)], dtype=object)
            det = sv.Detections(
                xyxy=np.stack([x1, y1, x1 + w, y1 + h], axis=1).astype(np.float32), mask=masks,
                confidence=rng.uniform(0.2, 1.0, BOXES).astype(np.float32),
                data={"class_name": names, "phrase": names.copy()},
            )
            labels = Labels(SIZE, SIZE)
            labels.add(det, stage="bench", provenance={"model": "bench"})
            sha = hashlib.sha256(path.read_bytes()).hexdigest()
            batch.append(ImageResult(str(path), rel, sha, "done", SIZE, SIZE, labels=to_record(labels)))
            if len(batch) == 1000:
                store.commit(batch, run_id, "bench")
                batch.clear()
        if batch:
            store.commit(batch, run_id, "bench")
        store.end_run(run_id, "ok", {})
    done.write_text(f"{time.perf_counter() - started:.1f}\n")
    return out


def variant(name: str, out: Path) -> dict:
    """Run one variant in this process; return its timings."""
    import supervision as sv  # noqa: F401 — the floor every variant pays
    from pycocotools import mask as _  # noqa: F401

    from autolabel.exports.coco import write_coco
    from autolabel.exports.labelstudio import write_labelstudio
    from autolabel.exports.yolo import write_yolo
    from autolabel.ontology import Ontology
    from autolabel.store import Store

    ontology = Ontology.from_config(CLASSES)
    target = out.parent / "exports" / name
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    with Store(out) as store:
        if name == "ours-coco-polygon":
            write_coco(store, ontology, target / "coco.json", segmentation_mode="polygon")
        elif name == "ours-coco-rle":
            write_coco(store, ontology, target / "coco.json", segmentation_mode="rle")
        elif name.startswith("ours-yolo"):
            write_yolo(store, ontology, target / "yolo", task=name.rsplit("-", 1)[1], images="symlink")
        elif name == "ours-labelstudio":
            write_labelstudio(store, ontology, target / "tasks.json", masks="brush")
        elif name.startswith("sv-"):
            dataset = _supervision_dataset(store, ontology, masks=name != "sv-yolo-detect")
            timings["load"] = time.perf_counter() - t0
            t1 = time.perf_counter()
            if name == "sv-coco":
                dataset.as_coco(annotations_path=str(target / "coco.json"))
            else:
                dataset.as_yolo(annotations_directory_path=str(target / "labels"),
                                data_yaml_path=str(target / "data.yaml"))
            timings["export"] = time.perf_counter() - t1
    timings["total"] = time.perf_counter() - t0
    return timings


def _supervision_dataset(store, ontology, masks: bool = True):
    """The same store as a supervision DetectionDataset (every mask decoded and held, as supervision needs; without
    masks for YOLO detect, since ``as_yolo`` writes polygons whenever there are masks)."""
    import supervision as sv

    from autolabel.records import from_record

    ids = {name: i for i, name in enumerate(ontology.classes)}
    paths, annotations = [], {}
    for row in store.images(labels=True):
        record = row["labels"]
        if not masks:  # no mask decoded at all: the fairest detect baseline
            record = record | {"boxes": {k: v for k, v in record["boxes"].items() if k != "mask"}}
        det = from_record(record).kept()
        det = sv.Detections(xyxy=det.xyxy, mask=det.mask if masks else None, confidence=det.confidence,
                            class_id=np.array([ids[c] for c in det.data["class_name"]], dtype=int))
        paths.append(row["path"])
        annotations[row["path"]] = det
    return sv.DetectionDataset(classes=ontology.classes, images=paths, annotations=annotations)


def child_main(name: str, out: Path) -> None:
    timings = variant(name, out) if name != "imports" else (_imports_only() or {"total": 0.0})
    usage = resource.getrusage(resource.RUSAGE_SELF)
    peak_mb = usage.ru_maxrss / 1024  # Linux: KiB
    cpu = usage.ru_utime + usage.ru_stime  # the whole process, imports included: steadier than wall on a busy machine
    print(json.dumps({"variant": name, **{k: round(v, 2) for k, v in timings.items()}, "cpu": round(cpu, 2),
                      "peak_rss_mb": round(peak_mb)}))


def _imports_only() -> None:
    import supervision  # noqa: F401
    from pycocotools import mask  # noqa: F401

    from autolabel.exports import coco, yolo  # noqa: F401


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--work", default="/tmp/exports_bench")
    parser.add_argument("--variants", nargs="+", default=VARIANTS)
    parser.add_argument("--no-supervision", action="store_true")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per variant")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args.child, Path(args.out))
        return
    variants = [v for v in args.variants if not (args.no_supervision and v.startswith("sv-"))]
    print("| images | boxes | variant | seconds | load + export (sv) | CPU s | peak RSS MB |")
    print("|---|---|---|---|---|---|---|")
    for n in args.sizes:
        t0 = time.perf_counter()
        out = prepare(Path(args.work) / str(n), n)
        print(f"<!-- prepared {n} images in {time.perf_counter() - t0:.0f} s -->", flush=True)
        for name in variants:
            # the previous invocation's output removed here, not in the child: its CPU s measure the export alone
            shutil.rmtree(out.parent / "exports" / name, ignore_errors=True)
            cmd = [sys.executable, __file__, "--child", name, "--out", str(out)]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, check=True)
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                split = f"{r['load']} + {r['export']}" if "load" in r else ""
                print(f"| {n:,} | {n * BOXES:,} | {name} | {r['total']} | {split} | {r['cpu']} | {r['peak_rss_mb']} |",
                      flush=True)
            except subprocess.TimeoutExpired:
                print(f"| {n:,} | {n * BOXES:,} | {name} | > {args.timeout:.0f} (stopped) | | | |", flush=True)
            except subprocess.CalledProcessError as err:
                last = (err.stderr or "").strip().splitlines()[-1:] or ["?"]
                print(f"| {n:,} | {n * BOXES:,} | {name} | failed: {last[0]} | | | |", flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
