"""One image, one vision pass: ``pipelines/fld5b.yaml``'s Florence-2 part, this tree against another git ref (main).

    python benchmarks/vision_bench.py                              # main vs this tree: 2 images, batch 2, 20 tokens
    python benchmarks/vision_bench.py --against main --images 4 --batch 4 --repeats 2 --with-off

The Florence-2 part is the file's seven ``florence2`` stages (proposals, region categories, dense captions, a
detailed caption, its grounding, a caption, OCR with regions) with the file's ontology, generation (3 beams) and
COCO export; its filters and SAM 2 are left out. The model is a randomly initialised Florence-2 of the real base
size (``florence2_bench.build_model``: the same weights in every process), every answer forced to ``--tokens`` new
tokens (a random model would stop at once), on the CPU.

Each side runs in its own process, importing ``autolabel`` from its own tree (the other ref is ``git archive``-d
into a temporary folder), the sides alternated ``--repeats`` times so that both see the same machine; each process
builds the model and warms up untimed, then times one ``Pipeline.run`` over the image files: wall seconds and CPU
seconds of the process (steadier on a shared machine), and the images that went through the vision tower (counted
at ``get_image_features``, in either tree). The stored labels of every side are compared (floats to 4 decimals).

Prints a markdown table (paste into BENCHMARKS.md with the machine it ran on).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
FLD5B = ROOT / "pipelines" / "fld5b.yaml"
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def florence_part(tokens: int, batch: int, share: bool | None = None, size: str = "base",
                  source: Path = FLD5B) -> dict[str, Any]:
    """The pipeline of ``source``'s ``florence2`` stages, answers forced to ``tokens``; ``share`` None: no key (a
    tree from before ``share_vision_features``)."""
    data = yaml.safe_load(source.read_text())
    florence = data["models"]["florence"]
    generation = {**florence.get("generation", {}), "max_new_tokens": tokens, "min_new_tokens": tokens}
    config = {
        "name": "fld5b-florence-part",
        "models": {"florence": {"type": "florence2", "id": f"bench/florence-2-{size}-random",
                                "generation": generation}},
        "ontology": data["ontology"],
        "batch_size": batch,
        "stages": [s for s in data["stages"] if s["type"] == "florence2"],
        "exports": data.get("exports", []),
    }
    if share is not None:
        config["share_vision_features"] = share
    return config


def count_tower(model: Any) -> list[int]:
    """Images per call of ``model.get_image_features`` from now on (wraps the instance's method)."""
    calls: list[int] = []
    original = model.get_image_features

    def counted(*args: Any, **kwargs: Any) -> Any:
        pixels = kwargs.get("pixel_values", args[0] if args else None)
        calls.append(int(pixels.shape[0]))
        return original(*args, **kwargs)

    model.get_image_features = counted
    return calls


def run_pipeline(adapter: Any, config: dict[str, Any], inputs: Any, output: Path) -> dict[str, Any]:
    """``Pipeline.run`` with ``adapter`` as its florence model (loading is not labeling): seconds, CPU seconds and
    run.json's figures."""
    from autolabel import Pipeline

    pipeline = Pipeline.from_dict(config)
    adapter.spec = pipeline.config.models["florence"]  # this run's generation settings
    pipeline.models._loaded["florence"] = adapter  # the pool's cache: as if loaded from that id
    wall, cpu = time.perf_counter(), time.process_time()
    summary = pipeline.run(input=inputs, output=output)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if summary.status != "ok":
        raise RuntimeError(f"the pipeline run failed: {summary.data.get('error')} {summary.failures}")
    return {"seconds": wall, "cpu_seconds": cpu, "stage_seconds": summary.data["stage_seconds"],
            "stage_images": summary.data["stage_images"], "vision_passes": summary.data.get("vision_passes")}


def labels_digest(output: Path) -> str:
    """A hash of every image's stored labels, floats rounded to 4 decimals (last bits vary with the batch)."""
    from autolabel.store import Store

    def rounded(value: Any) -> Any:
        if isinstance(value, float):
            return round(value, 4)
        if isinstance(value, dict):
            return {k: rounded(v) for k, v in value.items()}
        if isinstance(value, list):
            return [rounded(v) for v in value]
        return value

    with Store(output) as store:
        rows = sorted((row["rel_path"], rounded(row["labels"])) for row in store.images())
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()[:16]


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """One side: build the model, warm up, time one run of the Florence-2 part."""
    import torch
    from florence2_bench import build_model

    from autolabel.config import ModelSpec
    from autolabel.models.florence2 import Florence2

    torch.set_num_threads(args.threads)
    share = {"on": True, "off": False, "none": None}[args.share]
    model, processor = build_model(args.size)
    adapter = Florence2(model, processor, ModelSpec(id=f"bench/florence-2-{args.size}-random"), "cpu", torch.float32)
    work = Path(tempfile.mkdtemp(prefix="vision-bench-"))
    images = sorted(Path(args.inputs).iterdir())
    warm = florence_part(2, 1, share, args.size)
    warm["stages"] = warm["stages"][:1]
    run_pipeline(adapter, warm, images[:1], work / "warm")  # first-call allocations, lazy imports: not timed
    tower = count_tower(model)
    try:
        timed = run_pipeline(adapter, florence_part(args.tokens, args.batch, share, args.size), images, work / "run")
        return timed | {"tower_images": sum(tower), "labels": labels_digest(work / "run")}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def export_tree(ref: str, into: Path, repo: Path = ROOT) -> Path:
    """``autolabel/`` as of git ``ref`` of ``repo``, in a folder of its own (the importable tree of that side)."""
    archive = subprocess.run(["git", "-C", str(repo), "archive", "--format=tar", ref, "autolabel"],
                             check=True, capture_output=True).stdout
    into.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def side(tree: Path, share: str, inputs: Path, args: argparse.Namespace) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tree), str(ROOT / "benchmarks")]),
               OMP_NUM_THREADS=str(args.threads), HF_HUB_OFFLINE="1")
    cmd = [sys.executable, __file__, "--worker", "--tree", str(tree), "--share", share, "--inputs", str(inputs),
           "--images", str(args.images), "--batch", str(args.batch), "--tokens", str(args.tokens),
           "--threads", str(args.threads), "--size", args.size]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tree)
    if done.returncode != 0:
        raise RuntimeError(f"the {tree} side failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", default="main", help="the git ref to compare with (its autolabel/)")
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=20, help="new tokens per answer (forced)")
    parser.add_argument("--repeats", type=int, default=1, help="alternate the sides this many times; best kept")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per side")
    parser.add_argument("--with-off", action="store_true", help="also this tree with share_vision_features: false")
    parser.add_argument("--repo", type=Path, default=ROOT, help="the git checkout --against is read from")
    parser.add_argument("--size", default="base", choices=["base", "large", "tiny"], help="tiny: check the plumbing")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tree", help=argparse.SUPPRESS)
    parser.add_argument("--share", default="on", help=argparse.SUPPRESS)
    parser.add_argument("--inputs", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    work = Path(tempfile.mkdtemp(prefix="vision-bench-"))
    try:
        compare(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def compare(args: argparse.Namespace, work: Path) -> None:
    """The sides, alternated; the table."""
    from florence2_bench import make_images

    (work / "images").mkdir()
    make_images(work / "images", args.images)
    against = export_tree(args.against, work / "against", args.repo)
    commit = subprocess.run(["git", "-C", str(args.repo), "rev-parse", "--short", args.against], capture_output=True,
                            text=True).stdout.strip()
    sides = [(f"{args.against} ({commit})", against, "none"), ("this tree, sharing on", ROOT, "on")]
    if args.with_off:
        sides.insert(1, ("this tree, share_vision_features: false", ROOT, "off"))
    results: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in sides}
    for r in range(args.repeats):
        for name, tree, share in sides:
            results[name].append(side(tree, share, work / "images", args))
            print(f"repeat {r + 1}: {name}: {results[name][-1]['seconds']:.1f} s", file=sys.stderr)

    n = args.images
    base = results[sides[0][0]]
    base_wall, base_cpu = min(r["seconds"] for r in base), min(r["cpu_seconds"] for r in base)
    digests = {r["labels"] for runs in results.values() for r in runs}
    stages = base[0]["stage_images"]
    print(f"\n`pipelines/fld5b.yaml`'s Florence-2 part ({len(stages)} stages: {', '.join(stages)}), random "
          f"Florence-2-{args.size}-sized model, {n} images (1024x768 and 640x960 JPEGs), batch {args.batch}, "
          f"{args.tokens} new tokens forced, 3 beams; CPU, {args.threads} torch thread(s), "
          f"{platform.processor() or platform.machine()}; each side in its own process, alternated, best of "
          f"{args.repeats}; labels {'identical' if len(digests) == 1 else 'DIFFER'} across sides\n")
    print("| side | wall s | CPU s | vision passes (images through the tower) | wall speed-up | CPU speed-up |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, _, _ in sides:
        wall = min(r["seconds"] for r in results[name])
        cpu = min(r["cpu_seconds"] for r in results[name])
        tower = results[name][0]["tower_images"]
        print(f"| {name} | {wall:.1f} | {cpu:.1f} | {tower} ({tower / n:g} per image) | {base_wall / wall:.2f} | "
              f"{base_cpu / cpu:.2f} |")
    print("\nPer repeat (wall s / CPU s): " + "; ".join(
        f"{name}: " + ", ".join(f"{r['seconds']:.1f}/{r['cpu_seconds']:.1f}" for r in results[name])
        for name, _, _ in sides))
    print("Stage images (main side): " + json.dumps(stages))


if __name__ == "__main__":
    main()
