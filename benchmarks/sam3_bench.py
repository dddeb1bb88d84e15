"""SAM 3 concepts: the ``concepts`` stage against the anchors' pattern, and post-processing memory at 4000x3000.

    python benchmarks/sam3_bench.py --image-size 336          # CPU: 4 images x 6 classes (a few minutes)
    python benchmarks/sam3_bench.py --device cuda --dtype bfloat16 --batch 8 --images 16 --json sam3.json

No weights are downloaded: the model is ``Sam3Model`` built from facebook/sam3's real configuration
(tests/fixtures/checkpoints/facebook--sam3/config.json: the 0.84 B-parameter detector of the 0.86 B checkpoint) with
random weights, and ``Sam3Processor`` from its real processor and tokenizer files. ``--image-size`` changes the
input resolution (default the checkpoint's 1008 px; 336 px is the backbone's pretraining size, 9x fewer tokens, for
a CPU run of minutes instead of an hour): the parameters stay the real ones.

Contenders, on the same model, images, prompts and thresholds, alternated batch by batch so both see the same
machine:

* **anchors' pattern** — per image, per class: ``processor(images=[image], text=[class])``, one full forward
  (vision backbone, text encoder, detector head), then ``processor.post_process_instance_segmentation`` (what a
  loop over classes around transformers' documented example does).
* **concepts stage** — the ``concepts`` stage over batches of ``--batch`` images: each image's vision features once
  for all its prompts, each prompt's text features once per run, ``prompts_per_call`` rows per head forward, and
  the bounded post-processing (rows with boxes, masks, both score parts).

``--memory``: one 4000x3000 image, one prompt, threshold 0 (every query kept): the whole stage call's peak, and
post-processing alone, ours against transformers' (transformers' at 4000x3000 needs ~12 bytes a pixel of every
query's mask at once — 28.8 GB for 200 — so it is run at ``--memory-small`` instead, and projected).

``--sharing``: instead of the above, the ``concepts`` + ``sam3_tracker`` pipeline (a ``concepts`` stage, then a
``segment`` stage re-segmenting its rows with the tracker, ``overwrite: true``) with ``share_vision_features`` on
against off, alternated ``--repeats`` times in one process, batch by batch as the runner calls a pipeline. The tracker
is ``Sam3TrackerModel`` of the checkpoint's real tracker configuration, random weights, its backbone the detector's
tensors (what loading both model types from facebook/sam3 gives). Random weights score every query ~0.25, so the
concepts stage keeps ``--max-instances`` per prompt at threshold 0: the tracker gets classes x max-instances boxes per
image. Wall and CPU seconds per side, the images through the backbone (counted at transformers' ViT), the stored
rows compared (boxes, masks, scores: identical or not), and the one-off weight digest::

    python benchmarks/sam3_bench.py --sharing --image-size 336 --images 2 --classes 2 --batch 2 --repeats 2

Prints markdown (paste into BENCHMARKS.md with the machine it ran on); ``--json`` writes the figures, for
benchmarks/gpu_suite.py. ``run(argv)`` returns them to a caller in the same process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "checkpoints"
CLASSES = ["person", "car", "truck", "dog", "bicycle", "traffic light"]


def real_files() -> Path:
    """A folder with facebook/sam3's processor and tokenizer files (CLIP's vocab and merges are OWLv2's)."""
    folder = Path(tempfile.mkdtemp(prefix="sam3-bench-"))
    for file in (FIXTURES / "facebook--sam3").iterdir():
        shutil.copy(file, folder / file.name)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(FIXTURES / "google--owlv2-base-patch16-ensemble" / name, folder / name)
    return folder


def build(image_size: int, device: str, dtype: Any) -> tuple[Any, Any, Any]:
    """(Sam3 model type wrapping a real-size random Sam3Model, its processor, the folder of the real files)."""
    import torch
    from transformers import AutoConfig, Sam3Model, Sam3Processor

    from autolabel.config import ModelSpec
    from autolabel.models.sam3 import Sam3

    folder = real_files()
    config = AutoConfig.from_pretrained(folder).detector_config
    config.image_size = image_size
    torch.manual_seed(0)
    model = Sam3Model(config).to(device, dtype).eval()
    processor = Sam3Processor.from_pretrained(folder)
    processor.image_processor.size = {"height": image_size, "width": image_size}
    processor.target_size = image_size
    spec = ModelSpec(type="sam3", id="bench/sam3-random", device=device)
    return Sam3(model, processor, spec, device, dtype), processor, folder


def photos(n: int) -> list[Any]:
    """Photo-sized images: landscape 1024x768 and portrait 640x960, alternating (smooth noise, as JPEG)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        w, h = (1024, 768) if i % 2 == 0 else (640, 960)
        small = Image.fromarray(rng.integers(0, 256, (h // 16, w // 16, 3), dtype=np.uint8))
        out.append(small.resize((w, h)))
    return out


def anchors(model: Any, processor: Any, images: list, classes: list[str], threshold: float) -> int:
    """One full forward per prompt per image, then transformers' post-processing; returns instances found."""
    import torch

    found = 0
    for image in images:
        for text in classes:
            inputs = processor(images=[image], text=[text], return_tensors="pt")
            inputs = {k: v.to(model.device, dtype=model.dtype) if v.is_floating_point() else v.to(model.device)
                      for k, v in inputs.items()}
            with torch.inference_mode():
                out = model.model(**inputs)
            (result,) = processor.post_process_instance_segmentation(
                out, threshold=threshold, mask_threshold=0.5, target_sizes=[(image.height, image.width)])
            found += len(result["scores"])
    return found


def stage(model: Any, classes: list[str], threshold: float, rows_per_call: int) -> Any:
    """The concepts stage, as a pipeline builds it, on the already built model."""
    from autolabel import Pipeline

    pipeline = Pipeline.from_dict({
        "models": {"sam3": {"type": "sam3", "id": "bench/sam3-random"}}, "ontology": classes,
        "stages": [{"type": "concepts", "model": "sam3", "threshold": threshold,
                    "prompts_per_call": rows_per_call}],
    })
    pipeline.models._loaded["sam3"] = model
    return pipeline


def concepts(pipeline: Any, images: list) -> int:
    from autolabel.stage import Item

    items = pipeline([Item.of(image, f"img{k}") for k, image in enumerate(images)])
    return sum(len(item.labels.detections) for item in items)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def peak_since_reset() -> int:
    """This process's peak resident memory (bytes) since the last :func:`reset_peak`."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def resident() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux)


def grown(fn: Any) -> tuple[Any, int, int]:
    """(fn(), host peak growth in bytes, device peak growth in bytes) over the call."""
    import torch

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        device_before = torch.cuda.memory_allocated()
    before = resident()
    reset_peak()
    result = fn()
    host = peak_since_reset() - before
    device = torch.cuda.max_memory_allocated() - device_before if cuda else 0
    return result, host, device


def memory(model: Any, pipeline: Any, big: tuple[int, int], small: tuple[int, int]) -> dict[str, Any]:
    """Peak memory growth at ``big`` (the whole stage call; our post-processing) and ``small`` (both
    post-processings), one prompt, threshold 0."""
    import torch
    from PIL import Image

    from autolabel.models.concepts import post_process

    def image(size: tuple[int, int]) -> Any:
        w, h = size
        rng = np.random.default_rng(1)
        return Image.fromarray(rng.integers(0, 256, (h // 50, w // 50, 3), dtype=np.uint8)).resize((w, h))

    def forward(img: Any) -> Any:
        inputs = model.processor(images=[img], text=["car"], return_tensors="pt")
        inputs = {k: v.to(model.device, dtype=model.dtype) if v.is_floating_point() else v.to(model.device)
                  for k, v in inputs.items()}
        with torch.inference_mode():
            return model.model(**inputs)

    out: dict[str, Any] = {}
    big_image, small_image = image(big), image(small)
    one = stage(model, ["car"], 0.0, pipeline.stages[0].params.prompts_per_call)
    n, out["stage_host_bytes"], out["stage_device_bytes"] = grown(lambda: concepts(one, [big_image]))
    out["kept"] = n
    outputs = forward(big_image)
    _, out["ours_big_host_bytes"], out["ours_big_device_bytes"] = grown(
        lambda: post_process(outputs, [(big[1], big[0])], threshold=0.0))
    outputs = forward(small_image)
    _, out["ours_small_host_bytes"], _ = grown(lambda: post_process(outputs, [(small[1], small[0])], threshold=0.0))
    _, out["transformers_small_host_bytes"], _ = grown(
        lambda: model.processor.post_process_instance_segmentation(outputs, threshold=0.0,
                                                                    target_sizes=[(small[1], small[0])]))
    queries = outputs.pred_logits.shape[1]
    out["queries"] = queries
    out["masks_big_bytes"] = queries * big[0] * big[1]  # the kept masks as bool: the labels themselves
    out["transformers_big_projected_bytes"] = queries * big[0] * big[1] * 12  # float32 + int64 per pixel
    return out


def build_tracker(detector: Any, folder: Path, image_size: int) -> Any:
    """Sam3Tracker of the real tracker configuration at ``image_size``, random weights, its backbone a copy of
    ``detector``'s (as loading both model types from one checkpoint gives), sharing the detector's image processor."""
    import torch
    from transformers import AutoConfig, Sam3TrackerModel, Sam3TrackerProcessor

    from autolabel.config import ModelSpec
    from autolabel.models.sam3 import Sam3Tracker

    config = AutoConfig.from_pretrained(folder)
    tracker = config.tracker_config
    grid = image_size // tracker.vision_config.backbone_config.patch_size
    tracker.vision_config.image_size = image_size
    tracker.vision_config.backbone_feature_sizes = [[4 * grid] * 2, [2 * grid] * 2, [grid] * 2]
    tracker.prompt_encoder_config.image_size = image_size
    torch.manual_seed(1)
    model = Sam3TrackerModel(config)
    model.vision_encoder.backbone.load_state_dict(detector.model.vision_encoder.backbone.state_dict())
    model = model.to(detector.device, detector.dtype).eval()
    processor = Sam3TrackerProcessor(image_processor=detector.processor.image_processor, target_size=image_size)
    spec = ModelSpec(type="sam3_tracker", id="bench/sam3-random", device=detector.device)
    return Sam3Tracker(model, processor, spec, detector.device, detector.dtype)


def paired(classes: list[str], batch: int, max_instances: int, share: bool, detector: Any, tracker: Any) -> Any:
    """The concepts + sam3_tracker pipeline on the built models (both ids: the one checkpoint)."""
    from autolabel import Pipeline

    pipeline = Pipeline.from_dict({
        "models": {"sam3": {"type": "sam3", "id": "bench/sam3-random"},
                   "tracker": {"type": "sam3_tracker", "id": "bench/sam3-random"}},
        "ontology": classes, "batch_size": batch, "share_vision_features": share,
        "stages": [{"name": "concepts", "type": "concepts", "model": "sam3", "threshold": 0.0,
                    "max_instances": max_instances},
                   {"name": "masks", "type": "segment", "model": "tracker", "from_stages": ["concepts"],
                    "overwrite": True}],
    })
    pipeline.models._loaded.update(sam3=detector, tracker=tracker)
    return pipeline


def labelled(pipeline: Any, images: list, batch: int) -> list[Any]:
    """The pipeline over ``images``, ``batch`` at a time (one call per batch, as the runner makes them)."""
    from autolabel.stage import Item

    items = [Item.of(image, f"img{k}") for k, image in enumerate(images)]
    out: list[Any] = []
    for start in range(0, len(items), batch):
        out += pipeline(items[start : start + batch])
    return out


def same_rows(a: list[Any], b: list[Any]) -> bool:
    """Every image's rows equal: boxes, scores, masks, the tracker's predicted IoU and stability."""
    for x, y in zip(a, b, strict=True):
        dx, dy = x.labels.detections, y.labels.detections
        if len(dx) != len(dy) or not (np.array_equal(dx.xyxy, dy.xyxy) and np.array_equal(dx.confidence, dy.confidence)
                                      and np.array_equal(dx.mask, dy.mask)):
            return False
        if any(not np.array_equal(dx.data[k], dy.data[k]) for k in ("predicted_iou", "stability_score")):
            return False
    return True


def sharing(args: argparse.Namespace) -> dict[str, Any]:
    """concepts + sam3_tracker with share_vision_features on against off, alternated; see the module docstring."""
    import torch

    from autolabel.models.sam3 import tensors_digest

    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    t0 = time.perf_counter()
    detector, _, folder = build(args.image_size, args.device, dtype)
    tracker = build_tracker(detector, folder, args.image_size)
    build_s = time.perf_counter() - t0
    backbone = detector.model.vision_encoder.backbone
    t = time.perf_counter()
    tensors_digest(backbone)
    digest_s = time.perf_counter() - t
    classes, images = CLASSES[: args.classes], photos(args.images)

    seen: list[int] = []  # images per backbone forward, either model's

    def count(module: Any, inputs: tuple) -> None:
        seen.append(int(inputs[0].shape[0]))

    hooks = [m.model.vision_encoder.backbone.register_forward_pre_hook(count) for m in (detector, tracker)]
    labelled(paired(classes[:1], 1, 1, True, detector, tracker), images[:1], 1)  # first calls, digests: not timed
    runs: dict[str, list[dict[str, Any]]] = {"on": [], "off": []}
    answers: dict[str, list[Any]] = {}
    for r in range(args.repeats):
        for side in (("on", "off") if r % 2 == 0 else ("off", "on")):
            pipeline = paired(classes, args.batch, args.max_instances, side == "on", detector, tracker)
            seen.clear()
            sync(args.device)
            wall, cpu = time.perf_counter(), time.process_time()
            answers[side] = labelled(pipeline, images, args.batch)
            sync(args.device)
            runs[side].append({"seconds": round(time.perf_counter() - wall, 2),
                               "cpu_seconds": round(time.process_time() - cpu, 2), "backbone_images": sum(seen),
                               "vision_passes": {k: v.summary() for k, v in pipeline.vision.items()},
                               "stage_seconds": {k: round(v, 2) for k, v in pipeline.timings.items()}})
            print(f"repeat {r + 1}, sharing {side}: {runs[side][-1]['seconds']:.1f} s", file=sys.stderr)
    for hook in hooks:
        hook.remove()
    shutil.rmtree(folder, ignore_errors=True)
    boxes = sum(len(item.labels.detections) for item in answers["on"])
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "device": args.device if not args.device.startswith("cuda") else torch.cuda.get_device_name(),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "dtype": args.dtype,
        "params": {"sam3": sum(p.numel() for p in detector.model.parameters()),
                   "tracker": sum(p.numel() for p in tracker.model.parameters()),
                   "backbone": sum(p.numel() for p in backbone.parameters())},
        "image_size": args.image_size, "images": len(images), "classes": len(classes), "batch": args.batch,
        "max_instances": args.max_instances, "boxes_segmented": boxes, "build_seconds": round(build_s, 1),
        "digest_seconds": round(digest_s, 2), "runs": runs, "rows_identical": same_rows(answers["on"],
                                                                                         answers["off"]),
    }
    best = {side: min(r["seconds"] for r in rs) for side, rs in runs.items()}
    best_cpu = {side: min(r["cpu_seconds"] for r in rs) for side, rs in runs.items()}
    result["speedup"] = {"wall": round(best["off"] / best["on"], 2), "cpu": round(best_cpu["off"] / best_cpu["on"], 2)}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


def sharing_report(r: dict[str, Any]) -> str:
    """The sharing figures as markdown."""
    p = r["params"]
    lines = [f"concepts + sam3_tracker (one checkpoint: the tracker's backbone is the detector's tensors), random "
             f"weights of facebook/sam3's real configs (sam3 {p['sam3'] / 1e9:.2f} B, tracker {p['tracker'] / 1e9:.2f} "
             f"B params, backbone {p['backbone'] / 1e6:.0f} M), {r['image_size']} px input, {r['dtype']}; "
             f"{r['images']} images x {r['classes']} classes, {r['max_instances']} instances per prompt kept "
             f"({r['boxes_segmented']} boxes re-segmented by the tracker), batch {r['batch']}; {r['device']}, "
             f"{r['threads']} threads, torch {r['torch']}. Best of {len(r['runs']['on'])}, sides alternated.", "",
             "| side | wall s | CPU s | images through the backbone | wall speed-up | CPU speed-up |",
             "|---|---:|---:|---:|---:|---:|"]
    off_wall = min(x["seconds"] for x in r["runs"]["off"])
    off_cpu = min(x["cpu_seconds"] for x in r["runs"]["off"])
    for side, label in (("off", "`share_vision_features: false`"), ("on", "sharing on (the default)")):
        wall = min(x["seconds"] for x in r["runs"][side])
        cpu = min(x["cpu_seconds"] for x in r["runs"][side])
        n = r["runs"][side][0]["backbone_images"]
        lines.append(f"| {label} | {wall:.1f} | {cpu:.1f} | {n} ({n / r['images']:g} per image) | "
                     f"{off_wall / wall:.2f} | {off_cpu / cpu:.2f} |")
    lines += ["", "Per repeat (wall / CPU s): " + "; ".join(
        f"{side}: " + ", ".join(f"{x['seconds']:.1f}/{x['cpu_seconds']:.1f}" for x in r["runs"][side])
        for side in ("off", "on")),
        f"Rows (boxes, scores, masks, predicted IoU, stability) identical on and off: **{r['rows_identical']}**. "
        f"vision_passes with sharing: {json.dumps(r['runs']['on'][0]['vision_passes'])}. One-off weight digest of "
        f"the backbone (once per loaded model, only when both are in the pipeline): {r['digest_seconds']:.2f} s."]
    return "\n".join(lines)


def run(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--classes", type=int, default=6, help=f"the first N of {', '.join(CLASSES)}")
    parser.add_argument("--batch", type=int, default=4, help="images per stage call (the pipeline's batch_size)")
    parser.add_argument("--prompts-per-call", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=1008, help="model input px (the checkpoint's: 1008)")
    parser.add_argument("--threshold", type=float, default=0.3, help="score threshold, both contenders")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--skip-anchors", action="store_true")
    parser.add_argument("--memory", action="store_true", help="also the 4000x3000 memory case")
    parser.add_argument("--memory-small", default="1000x750", help="size where transformers' post-processing fits")
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--sharing", action="store_true",
                        help="instead: concepts + sam3_tracker with share_vision_features on against off")
    parser.add_argument("--max-instances", type=int, default=2, help="--sharing: instances kept per prompt")
    parser.add_argument("--repeats", type=int, default=2, help="--sharing: alternate the sides this many times")
    args = parser.parse_args(argv)
    if args.sharing:
        return sharing(args)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    t0 = time.perf_counter()
    model, processor, folder = build(args.image_size, args.device, dtype)
    build_s = time.perf_counter() - t0
    params = sum(p.numel() for p in model.model.parameters())
    classes = CLASSES[: args.classes]
    images = photos(args.images)
    pipeline = stage(model, classes, args.threshold, args.prompts_per_call)

    anchors(model, processor, images[:1], ["warm-up"], args.threshold)  # first-call costs: not timed
    concepts(stage(model, ["warm-up"], args.threshold, args.prompts_per_call), images[:1])
    calls = model.text_encoder_calls  # the classes are not among the warm-up's prompts: each is new
    times = {"anchors": 0.0, "concepts": 0.0}
    found = {"anchors": 0, "concepts": 0}
    for start in range(0, len(images), args.batch):  # alternate batch by batch: the same machine for both
        chunk = images[start : start + args.batch]
        sync(args.device)
        t = time.perf_counter()
        found["concepts"] += concepts(pipeline, chunk)
        sync(args.device)
        times["concepts"] += time.perf_counter() - t
        if not args.skip_anchors:
            t = time.perf_counter()
            found["anchors"] += anchors(model, processor, chunk, classes, args.threshold)
            sync(args.device)
            times["anchors"] += time.perf_counter() - t
    result: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "device": args.device if not args.device.startswith("cuda") else torch.cuda.get_device_name(),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "dtype": args.dtype,
        "params": params, "image_size": args.image_size, "images": len(images), "classes": len(classes),
        "batch": args.batch, "prompts_per_call": args.prompts_per_call, "threshold": args.threshold,
        "build_seconds": round(build_s, 1), "seconds": {k: round(v, 2) for k, v in times.items()},
        "images_per_second": {k: round(len(images) / v, 4) for k, v in times.items() if v},
        "instances": found, "text_encoder_calls": model.text_encoder_calls - calls,
    }
    if times["anchors"]:
        result["speedup"] = round(times["anchors"] / times["concepts"], 2)
    if args.memory:
        w, h = (int(v) for v in args.memory_small.split("x"))
        result["memory"] = memory(model, pipeline, (4000, 3000), (w, h))
    shutil.rmtree(folder, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


def report(r: dict[str, Any]) -> str:
    """The figures as markdown."""
    lines = [f"Sam3Model of facebook/sam3's real config ({r['params'] / 1e9:.2f} B params, random weights), "
             f"{r['image_size']} px input, {r['dtype']}; {r['images']} images (1024x768 / 640x960) x {r['classes']} "
             f"classes, threshold {r['threshold']}; {r['device']}, {r['threads']} threads, torch {r['torch']}.", "",
             "| contender | seconds | images/s | instances |", "|---|---:|---:|---:|"]
    for name, label in (("anchors", "anchors' pattern: a full forward per prompt per image + transformers' "
                                     "post-processing"),
                        ("concepts", f"concepts stage (batch {r['batch']}, {r['prompts_per_call']} prompts per "
                                     "head call)")):
        if r["seconds"].get(name):
            lines.append(f"| {label} | {r['seconds'][name]:.1f} | {r['images_per_second'][name]:.4f} | "
                         f"{r['instances'][name]} |")
    if "speedup" in r:
        lines += ["", f"concepts / anchors throughput: **{r['speedup']:.2f}x**; text encoder runs: "
                      f"{r['text_encoder_calls']} (one per distinct prompt)."]
    m = r.get("memory")
    if m:
        gib = 1 << 30
        lines += ["", f"4000x3000, one prompt, threshold 0 ({m['kept']} of {m['queries']} queries kept), peak growth "
                      "of resident memory:", "",
                  "| what | ours | transformers' post-processing |", "|---|---:|---:|",
                  f"| the stage call (forward + post-processing + rows) | {m['stage_host_bytes'] / gib:.2f} GiB | |",
                  f"| post-processing at 4000x3000 | {m['ours_big_host_bytes'] / gib:.2f} GiB (masks alone: "
                  f"{m['masks_big_bytes'] / gib:.2f} GiB) | {m['transformers_big_projected_bytes'] / gib:.1f} GiB "
                  "(projected: 12 bytes/pixel/mask; not run) |",
                  f"| post-processing at the small size | {m['ours_small_host_bytes'] / gib:.3f} GiB | "
                  f"{m['transformers_small_host_bytes'] / gib:.3f} GiB |"]
        if m.get("stage_device_bytes"):
            lines.append(f"| device memory, the stage call | {m['stage_device_bytes'] / gib:.2f} GiB | |")
    return "\n".join(lines)


if __name__ == "__main__":
    figures = run()
    print(sharing_report(figures) if "runs" in figures else report(figures))
