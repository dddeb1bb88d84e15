"""Video: tracking a clip against labeling the same frames as independent images, and memory over clip length.

    python benchmarks/video_bench.py speed --image-size 336 --frames 4          # CPU: a few minutes
    python benchmarks/video_bench.py speed --device cuda --dtype bfloat16 --frames 32 --json video.json
    python benchmarks/video_bench.py memory --frames 100 1000                    # tiny model; minutes on a CPU

**speed** — no weights are downloaded: ``Sam3VideoModel`` is built from facebook/sam3's real configuration
(tests/fixtures/checkpoints/facebook--sam3/config.json, 0.86 B parameters) with random weights, and its processors
from the real processor and tokenizer files. ``--image-size`` changes the input resolution (default the
checkpoint's 1008 px; 336 px, the backbone's pretraining size, has 9x fewer tokens: a CPU run of minutes instead of
an hour) and every size that follows from it (feature maps, mask size, the tracker's memory grid); the parameters
stay the real ones. Contenders, on the same weights, frames and prompts:

* **images** — the ``concepts`` stage's model (``Sam3``, on the video model's own detector) over the frames as
  independent images, ``--batch`` at a time: each frame's vision features once for all prompts;
* **track** — the ``track`` stage's model (``Sam3Video``): one session over the frames (a chunk), detection on every
  frame plus the tracker (memory attention, association, new objects), ids stable through the clip.

Each contender runs ``--repeat`` times, alternating, after one warm-up call each on two frames; frames/s is the
best run. Random weights find random objects: the tracker's cost grows with the objects it follows, so the
thresholds are set (``--threshold``) for a handful of objects per frame, and the count is printed.

**memory** — peak RSS of a whole ``autolabel run`` (a fresh process per clip length) over a generated clip of
``--frames`` frames through the ``track`` stage on the tiny video checkpoint of the tests
(tests/support/tiny_sam3_video.py: real files, small widths, 224 px), default chunks of 32 frames with 4 of overlap:
decoding streams, chunks are committed and let go, so the peak must not grow with the clip's length.

Prints markdown (paste into BENCHMARKS.md with the machine it ran on); ``--json`` writes the figures (for a GPU
suite). ``run(argv)`` returns them to a caller in the same process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "checkpoints"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # this checkout's autolabel, whatever is installed


def real_files() -> Path:
    """A folder with facebook/sam3's config, processor and tokenizer files (CLIP's vocab and merges are OWLv2's)."""
    folder = Path(tempfile.mkdtemp(prefix="video-bench-"))
    for file in (FIXTURES / "facebook--sam3").iterdir():
        shutil.copy(file, folder / file.name)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(FIXTURES / "google--owlv2-base-patch16-ensemble" / name, folder / name)
    return folder


def at_size(config: Any, size: int) -> Any:
    """facebook/sam3's config with images of ``size`` px (a multiple of 14) and every size that follows from it."""
    tokens = size // 14
    for vision in (config.detector_config.vision_config, config.tracker_config.vision_config):
        vision.backbone_config.image_size = size
        vision.backbone_feature_sizes = [[4 * tokens] * 2, [2 * tokens] * 2, [tokens] * 2]
        window = vision.backbone_config.window_size
        if tokens % window:
            vision.backbone_config.window_size = tokens
    tracker = config.tracker_config
    tracker.image_size = tracker.prompt_encoder_config.image_size = size
    tracker.memory_attention_rope_feat_sizes = [tokens, tokens]
    config.low_res_mask_size = 4 * tokens
    return config


def build(size: int, device: str, dtype: Any) -> tuple[Any, Any]:
    """(Sam3Video over a real-size random Sam3VideoModel, Sam3 over its detector): the two contenders' models."""
    import torch
    from transformers import AutoConfig, Sam3Processor, Sam3VideoModel, Sam3VideoProcessor

    from autolabel.config import ModelSpec
    from autolabel.models.sam3 import Sam3
    from autolabel.models.sam3_video import Sam3Video, install_cv_utils_fallback

    install_cv_utils_fallback()  # as Sam3Video.load does: NMS and hole filling where transformers' kernel is missing
    folder = real_files()
    config = at_size(AutoConfig.from_pretrained(folder), size)
    torch.manual_seed(0)
    model = Sam3VideoModel(config).to(device, dtype).eval()
    square = {"height": size, "width": size}
    video_processor = Sam3VideoProcessor.from_pretrained(folder)
    image_processor = Sam3Processor.from_pretrained(folder)
    for p in (video_processor, image_processor):
        p.image_processor.size = square
        p.image_processor.mask_size = {"height": 4 * (size // 14), "width": 4 * (size // 14)}
        p.target_size = size
    video_processor.video_processor.size = square
    shutil.rmtree(folder, ignore_errors=True)
    track = Sam3Video(model, video_processor, ModelSpec(type="sam3_video", id="bench/random", device=device),
                      device, dtype)
    images = Sam3(model.detector_model, image_processor, ModelSpec(type="sam3", id="bench/random", device=device),
                  device, dtype)
    return track, images


def scene_frames(n: int, width: int = 640, height: int = 480) -> list[Any]:
    """``n`` frames of moving coloured rectangles on a grey gradient (content that changes frame to frame)."""
    from PIL import Image

    out = []
    base = np.linspace(40, 200, width, dtype=np.float32)[None, :, None].repeat(height, 0).repeat(3, 2)
    for f in range(n):
        pixels = base.copy()
        for k, colour in enumerate([(220, 40, 40), (40, 200, 60), (50, 80, 230)]):
            x = (60 + 37 * f * (k + 1) + 150 * k) % (width - 120)
            y = 60 + 110 * k
            pixels[y:y + 90, x:x + 120] = colour
        out.append(Image.fromarray(pixels.astype(np.uint8)))
    return out


def speed(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from autolabel.models.concepts import ConceptPrompt

    dtype = getattr(torch, args.dtype)
    t0 = time.perf_counter()
    track, images = build(args.image_size, args.device, dtype)
    built = time.perf_counter() - t0
    frames = scene_frames(args.frames)
    prompts = list(args.prompts)

    def run_images(batch: list[Any]) -> int:
        found = 0
        for k in range(0, len(batch), args.batch):
            part = batch[k:k + args.batch]
            out = images.segment_concepts(part, [[ConceptPrompt(p) for p in prompts] for _ in part],
                                          threshold=args.threshold)
            found += sum(len(o.scores) for o in out)
        return found

    def run_track(batch: list[Any]) -> int:
        return sum(len(m) for m in track.track_concepts(batch, prompts, threshold=args.threshold,
                                                         new_object_threshold=args.threshold))

    def sync() -> None:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    contenders = {"images": run_images, "track": run_track}
    for fn in contenders.values():  # warm-up: kernels, allocator, text features
        fn(frames[:2])
    sync()
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    best: dict[str, float] = {name: float("inf") for name in contenders}
    found: dict[str, int] = {}
    for _ in range(args.repeat):
        for name, fn in contenders.items():
            sync()
            t = time.perf_counter()
            found[name] = fn(frames)
            sync()
            best[name] = min(best[name], time.perf_counter() - t)
    result = {
        "device": args.device, "dtype": args.dtype, "image_size": args.image_size, "frames": args.frames,
        "prompts": prompts, "batch": args.batch, "build_seconds": round(built, 1),
        "parameters_b": round(sum(p.numel() for p in track.model.parameters()) / 1e9, 3),
        "frames_per_second": {k: round(args.frames / v, 4) for k, v in best.items()},
        "seconds": {k: round(v, 2) for k, v in best.items()},
        "track_vs_images": round(best["images"] / best["track"], 3),
        "objects_per_frame": {k: round(v / args.frames, 1) for k, v in found.items()},
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    if args.device.startswith("cuda"):
        result["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return result


def memory(args: argparse.Namespace) -> dict[str, Any]:
    """Peak RSS of ``autolabel run`` over clips of each length, each in a fresh process."""
    sys.path.insert(0, str(ROOT / "tests" / "support"))
    from tiny_sam3_video import build as build_tiny
    from video_scene import write_clip

    work = Path(tempfile.mkdtemp(prefix="video-bench-memory-"))
    try:
        checkpoint = build_tiny(work / "sam3")
        rows = []
        for n in args.frames:
            clip = write_clip(work / f"clip{n}.mp4", frames=n, loop=True)
            spec = work / f"pipeline{n}.json"
            spec.write_text(json.dumps({
                "ontology": ["car", "person"], "models": {"sam3": {"type": "sam3_video", "id": str(checkpoint)}},
                "stages": [{"type": "track", "model": "sam3", "threshold": 0.1, "new_object_threshold": 0.12},
                           {"type": "track_length", "min_frames": 3}],
                "video": {"chunk": args.chunk, "overlap": args.overlap},
                "exports": [{"format": "mot"}]}))
            env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests" / "support")]))
            code = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
                    "r = subprocess.run(sys.argv[1:]); "
                    "print(r.returncode, time.perf_counter() - t, "
                    "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
            cmd = [sys.executable, "-c", code, sys.executable, "-m", "autolabel", "run", str(spec), "-i", str(clip),
                   "-o", str(work / f"out{n}"), "--no-progress"]
            done = subprocess.run(cmd, env=env, capture_output=True, text=True)
            returncode, seconds, rss = done.stdout.split()[-3:]
            if returncode != "0":
                raise RuntimeError(f"autolabel run failed on {n} frames: {done.stderr[-2000:]}")
            run = json.loads((work / f"out{n}" / "run.json").read_text())
            rows.append({"frames": n, "seconds": round(float(seconds), 1), "peak_rss_mb": round(int(rss) / 1024, 1),
                         "frames_labeled": run["counts"]["frames"]})
        return {"chunk": args.chunk, "overlap": args.overlap, "runs": rows}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def run(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--device", default="cpu")
    s.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    s.add_argument("--image-size", type=int, default=1008)
    s.add_argument("--frames", type=int, default=4)
    s.add_argument("--prompts", nargs="+", default=["car", "person"])
    s.add_argument("--batch", type=int, default=4, help="images per concepts call (the image contender)")
    s.add_argument("--threshold", type=float, default=0.5)
    s.add_argument("--repeat", type=int, default=1)
    s.add_argument("--json", help="write the figures here")
    m = sub.add_parser("memory")
    m.add_argument("--frames", type=int, nargs="+", default=[100, 1000])
    m.add_argument("--chunk", type=int, default=32)
    m.add_argument("--overlap", type=int, default=4)
    m.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    result = speed(args) if args.what == "speed" else memory(args)
    result["machine"] = machine()
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


def main() -> None:
    result = run()
    if "runs" in result:
        print(f"\nchunk {result['chunk']}, overlap {result['overlap']}; {result['machine']}\n")
        print("| frames | frames labeled | wall s | peak RSS MB |\n|---:|---:|---:|---:|")
        for r in result["runs"]:
            print(f"| {r['frames']} | {r['frames_labeled']} | {r['seconds']} | {r['peak_rss_mb']} |")
    else:
        fps, sec = result["frames_per_second"], result["seconds"]
        print(f"\n{result['parameters_b']} B parameters, {result['image_size']} px, {result['frames']} frames, "
              f"prompts {result['prompts']}, {result['device']} {result['dtype']}; {result['machine']}\n")
        print("| contender | seconds | frames/s | objects per frame |\n|---|---:|---:|---:|")
        for name in ("images", "track"):
            print(f"| {name} | {sec[name]} | {fps[name]} | {result['objects_per_frame'][name]} |")
        print(f"\ntrack / images throughput: {result['track_vs_images']}x; peak RSS {result['peak_rss_mb']} MB"
              + (f", peak GPU {result['peak_gpu_mb']} MB" if "peak_gpu_mb" in result else ""))


if __name__ == "__main__":
    main()
