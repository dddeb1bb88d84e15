"""The Ray executor against the local one: overhead, scaling from 1 to 2 workers, driver memory 1k → 10k images.

    python benchmarks/ray_bench.py                       # 3000 images for speed, 1000 / 10000 for memory
    python benchmarks/ray_bench.py --images 600 --memory 200 2000   # a quick look

Speed: a CPU-bound model stage (``BusyModel``: pure-Python arithmetic per image, holding the GIL, so one stage
call uses one core — what a model pinned to one core per worker does) over generated 64×64 PNGs; the local
executor, then Ray with 1 worker, then 2 workers, each run into a fresh output folder, on one local Ray started
once (its start-up is reported apart; each Ray run's wall time includes starting its actors). Beside wall time:
CPU time per image, the driver's plus every worker's (``cpu_seconds`` in run.json), which a loaded machine
disturbs far less than wall time (it leaves out Ray's own daemons). Memory: each size
runs ``autolabel run --executor ray`` in a fresh subprocess with a trivial stage and reports the driver's own
peak RSS (VmHWM; the workers are other processes).
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
from PIL import Image
from pydantic import Field

from autolabel.stage import Item, Stage, StageParams

HERE = Path(__file__).resolve().parent


class BusyParams(StageParams):
    work: int = Field(default=200_000, ge=0)  # loop iterations per image (~10 ms on a 2-core EPYC)


class BusyModel(Stage):
    """Stands in for a CPU-bound model: burns ``work`` Python iterations per image, then one box."""

    Params = BusyParams

    def __call__(self, items: list[Item]) -> list[Item]:
        import supervision as sv

        for item in items:
            acc = 0
            for i in range(self.params.work):
                acc = (acc + i * i) % 1_000_003
            w, h = item.image.size
            det = sv.Detections(xyxy=np.array([[0, 0, w / 2, h / 2]], dtype=np.float32),
                                confidence=np.array([acc / 1_000_003], dtype=np.float32),
                                data={"class_name": np.array(["thing"], dtype=object)})
            item.labels.add(det, stage=self.name)
        return items


def make_images(folder: Path, n: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    for i in range(n):
        Image.fromarray(np.roll(base, i, axis=1)).save(folder / f"img{i:06d}.png")


def pipeline(work: int, executor: dict | None = None) -> dict:
    return {
        "ontology": {"thing": "thing"}, "batch_size": 16,
        "stages": [{"type": "ray_bench:BusyModel", "work": work}],
        **({"executor": executor} if executor else {}),
    }


def speed(root: Path, n: int, work: int) -> list[dict]:
    import ray

    from autolabel import Pipeline

    make_images(root / "speed", n)
    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    ray_start = time.perf_counter() - t0
    rows = []
    try:
        for name, executor in [("local", None), ("ray, 1 worker", {"type": "ray", "workers": 1}),
                               ("ray, 2 workers", {"type": "ray", "workers": 2})]:
            t0, cpu0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
            summary = Pipeline.from_dict(pipeline(work, executor)).run(root / "speed", root / name.replace(" ", ""))
            wall, cpu1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
            driver_cpu = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
            assert summary.counts["labeled"] == n, summary.counts
            workers = summary.data["executor"].get("per_worker", {}).values()
            startup = min((w["ready_after_seconds"] for w in workers), default=0.0)  # until the first actor is ready
            worker_cpu = sum(w["cpu_seconds"] for w in workers)
            rows.append({"executor": name, "wall_s": round(wall, 2), "images_per_s": round(n / wall, 1),
                         "cpu_ms_per_image": round(1000 * (driver_cpu + worker_cpu) / n, 2),
                         "startup_s": round(startup, 1),
                         "steady_images_per_s": round(n / (wall - startup), 1) if executor else round(n / wall, 1)})
    finally:
        ray.shutdown()
    local, one, two = (r["wall_s"] for r in rows)
    steady = [r["steady_images_per_s"] for r in rows]
    cpu = [r["cpu_ms_per_image"] for r in rows]
    rows[1]["vs"] = (f"wall {100 * (one / local - 1):+.1f}% vs local, "
                     f"steady state {100 * (steady[0] / steady[1] - 1):+.1f}%, CPU {100 * (cpu[1] / cpu[0] - 1):+.1f}%")
    rows[2]["vs"] = f"wall {one / two:.2f}x vs 1 worker, steady state {steady[2] / steady[1]:.2f}x"
    print(f"local Ray start-up (once, not in the figures): {ray_start:.1f} s", flush=True)
    return rows


DRIVER = """
import json, sys
from autolabel.cli import main
code = main(sys.argv[1:])
hwm = next(int(line.split()[1]) for line in open('/proc/self/status') if line.startswith('VmHWM'))
print(json.dumps({"code": code, "driver_peak_mb": round(hwm / 1024, 1)}))
"""


def memory(root: Path, n: int, env: dict[str, str]) -> dict:
    folder = root / f"mem{n}"
    make_images(folder, n)
    spec = root / f"mem{n}.json"
    spec.write_text(json.dumps(pipeline(0, {"type": "ray", "workers": 2})))
    t0 = time.perf_counter()
    command = [sys.executable, "-c", DRIVER, "run", str(spec), "-i", str(folder), "-o", str(root / f"out{n}"),
               "--no-progress"]
    out = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(out.stderr[-2000:])
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return {"images": n, "wall_s": round(wall, 1), "driver_peak_mb": result["driver_peak_mb"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=3000, help="images of the speed comparison")
    parser.add_argument("--work", type=int, default=200_000, help="BusyModel iterations per image")
    parser.add_argument("--memory", type=int, nargs="*", default=[1000, 10000], help="sizes of the memory runs")
    args = parser.parse_args()
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
    sys.path.insert(0, str(HERE))  # workers (and this process) import ray_bench:BusyModel
    print(f"load average before: {os.getloadavg()[0]:.2f} (1 min), {os.cpu_count()} CPUs", flush=True)
    with tempfile.TemporaryDirectory(prefix="ray-bench-") as tmp:
        root = Path(tmp)
        for row in speed(root, args.images, args.work) if args.images else []:
            print(json.dumps(row), flush=True)
        for n in args.memory:
            print(json.dumps(memory(root, n, dict(os.environ))), flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f} (1 min)", flush=True)


if __name__ == "__main__":
    main()
