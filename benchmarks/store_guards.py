"""What the run store's guards cost (issue 20), each beside the same work without it, in one process and one run:

    python benchmarks/store_guards.py [--images 20000] [--work /tmp/store_guards]

* **commit**: a batch of 8 results, as a run commits them: with the write-ahead log's identity checked before and
  after (as shipped), without it, and with a passive checkpoint after every commit instead (the other way to keep
  a deleted log from losing much: measured, not used). Rounds interleave the variants, so load moves them alike.
* **is_done**: the decode threads' question for an image already labeled: as shipped (the row's labels parsed and
  checked, so a row that does not read back is labeled again) beside the old existence query.
* **images()**: the stream every export reads, with each record's shape checked (``records.problem``) and without.
* **open**: ``Store(folder, check=True)`` (``PRAGMA quick_check``, what a run does) beside ``Store(folder)``.

Records are realistic: 10 boxes per image, each with a mask (COCO RLE), 5 classes, as benchmarks/exports_bench.py
fills its store. The store is built once under --work and reused.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import time
import timeit
from pathlib import Path
from unittest import mock

import numpy as np

CLASSES = ["person", "car", "dog", "cat", "bicycle"]
SIZE, BOXES = 64, 10


def record(rng: np.random.Generator) -> dict:
    import supervision as sv

    from autolabel.labels import Labels
    from autolabel.records import to_record

    x1, y1 = rng.integers(0, SIZE - 16, BOXES), rng.integers(0, SIZE - 16, BOXES)
    w, h = rng.integers(6, 16, BOXES), rng.integers(6, 16, BOXES)
    masks = np.zeros((BOXES, SIZE, SIZE), dtype=bool)
    for k in range(BOXES):
        masks[k, y1[k] : y1[k] + h[k], x1[k] : x1[k] + w[k]] = True
    names = np.array([CLASSES[c] for c in rng.integers(0, len(CLASSES), BOXES)], dtype=object)
    det = sv.Detections(xyxy=np.stack([x1, y1, x1 + w, y1 + h], axis=1).astype(np.float32), mask=masks,
                        confidence=rng.uniform(0.2, 1.0, BOXES).astype(np.float32),
                        data={"class_name": names, "phrase": names.copy()})
    labels = Labels(SIZE, SIZE)
    labels.add(det, stage="bench", provenance={"model": "bench"})
    return to_record(labels)


def results(rng: np.random.Generator, start: int, n: int, pool: list[dict]) -> list:
    from autolabel.store import ImageResult

    return [ImageResult(f"/in/{i:07d}.png", f"{i:07d}.png", f"sha{i}", "done", SIZE, SIZE,
                        labels=pool[i % len(pool)]) for i in range(start, start + n)]


def prepare(root: Path, n: int) -> tuple[Path, list[dict]]:
    from autolabel.store import Store

    rng = np.random.default_rng(0)
    pool = [record(rng) for _ in range(200)]  # 200 distinct records, reused: the JSON is what costs
    out = root / "store"
    if not (root / f"READY-{n}").exists():
        shutil.rmtree(root, ignore_errors=True)
        with Store(out) as store:
            run = store.begin_run("bench", {})
            for start in range(0, n, 1000):
                store.commit(results(rng, start, min(1000, n - start), pool), run, "bench")
            store.end_run(run, "ok", {})
        (root / f"READY-{n}").write_text("")
    return out, pool


def bench_commit(root: Path, pool: list[dict], rounds: int, per_round: int) -> dict[str, float]:
    from autolabel.store import Store

    rng = np.random.default_rng(1)
    variants = {"guarded (shipped)": "guard", "no guard": "none", "guard + passive checkpoint": "checkpoint"}
    times: dict[str, list[float]] = {name: [] for name in variants}
    stores = {}
    for name, how in variants.items():
        folder = root / f"commit-{how}"
        shutil.rmtree(folder, ignore_errors=True)
        stores[name] = (Store(folder), how)
        stores[name] = (stores[name][0], how, stores[name][0].begin_run("bench", {}))
    next_id = 10_000_000
    order = list(stores)
    for r in range(rounds):
        for name in order[r % len(order):] + order[:r % len(order)]:  # each variant first in turn
            store, how, run = stores[name]
            batches = [results(rng, next_id + 8 * k, 8, pool) for k in range(per_round)]
            next_id += 8 * per_round
            patch = mock.patch.object(Store, "_check_wal", lambda self: None) if how == "none" else None
            if patch:
                patch.start()
            t0 = time.perf_counter()
            for batch in batches:
                store.commit(batch, run, "bench")
                if how == "checkpoint":
                    store._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            times[name].append((time.perf_counter() - t0) / per_round * 1e6)
            if patch:
                patch.stop()
    guard = stores["guarded (shipped)"][0]
    check = min(timeit.repeat(guard._check_wal, number=2000, repeat=5)) / 2000 * 1e6
    for store, _, _ in stores.values():
        store.close()
    return {name: statistics.median(values) for name, values in times.items()} | {"one WAL check alone": check}


def bench_is_done(out: Path, n: int, calls: int) -> dict[str, float]:
    from autolabel.store import Store

    rng = np.random.default_rng(2)
    picks = [f"/in/{i:07d}.png" for i in rng.integers(0, n, calls)]
    store = Store(out)
    conn = sqlite3.connect(out / "autolabel.db")
    shipped, plain = [], []
    for _ in range(5):  # interleaved rounds
        t0 = time.perf_counter()
        assert all(store.is_done(p, f"sha{int(p[4:11])}", "bench") for p in picks)
        shipped.append((time.perf_counter() - t0) / calls * 1e6)
        t0 = time.perf_counter()
        for p in picks:
            conn.execute("SELECT 1 FROM images WHERE path = ? AND sha256 = ? AND pipeline_hash = ? AND status = ?",
                         (p, f"sha{int(p[4:11])}", "bench", "done")).fetchone()
        plain.append((time.perf_counter() - t0) / calls * 1e6)
    store.close()
    conn.close()
    return {"checked (shipped)": statistics.median(shipped), "existence only (before)": statistics.median(plain)}


def bench_images(out: Path, rounds: int = 3) -> dict[str, float]:
    from autolabel import store as store_module
    from autolabel.store import Store

    checked, unchecked = [], []
    with Store(out) as store:
        for _ in range(rounds):
            t0 = time.perf_counter()
            n = sum(1 for _ in store.images())
            checked.append(time.perf_counter() - t0)
            with mock.patch.object(store_module, "problem", lambda record: None):
                t0 = time.perf_counter()
                assert sum(1 for _ in store.images()) == n
                unchecked.append(time.perf_counter() - t0)
    return {"shape checked (shipped)": min(checked), "not checked": min(unchecked), "rows": n}


def bench_open(out: Path, rounds: int = 3) -> dict[str, float]:
    from autolabel.store import Store

    checked, plain = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        Store(out, check=True).close()
        checked.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        Store(out).close()
        plain.append(time.perf_counter() - t0)
    return {"quick_check (run)": min(checked), "plain open": min(plain),
            "store MB": os.path.getsize(out / "autolabel.db") / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/store_guards"))
    args = parser.parse_args()
    out, pool = prepare(args.work, args.images)
    report = {
        "images": args.images,
        "commit µs per batch of 8": bench_commit(args.work, pool, rounds=12, per_round=100),
        "is_done µs per call": bench_is_done(out, args.images, calls=2000),
        "images() s per pass": bench_images(out),
        "open s": bench_open(out),
        "load": os.getloadavg(),
    }
    print(json.dumps(report, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
