"""Training throughput: ``autolabel train``'s loop against a plain transformers ``Trainer`` on the same pairs.

    python benchmarks/train_bench.py                          # CPU: batch 2, 4 steps (3 timed), LoRA
    python benchmarks/train_bench.py --device cuda            # a GPU: batch 8, 10 steps, bf16 autocast on both sides
    python benchmarks/train_bench.py --mode full --json out.json   # every weight but the vision tower's
    python benchmarks/train_bench.py --smoke                  # a tiny model, in seconds (the GPU suite's smoke)

No weights are downloaded: the model is Florence-2-base's real configuration (tests/fixtures/checkpoints: DaViT
128/256/512/1024, depths 1/1/9/1; BART 768-d 6+6 layers; the real 51k tokenizer and 768x768 processor) with random
weights, saved to a temporary folder that both sides load. The data is ``batch x steps`` synthetic 1024x768 / 640x960
JPEGs with 1-3 boxes each, written as COCO; both sides train on the very same token ids (autolabel's pairs: ``<OD>``
prompts, quantized answers, labels padded with -100), the vision tower frozen, LoRA r=16 on the same modules (or
full), AdamW, linear warmup/decay, gradient clipping at 1.0, the same batch size.

Contenders, each in a fresh subprocess (so peak memory is its own), alternated ``--repeats`` times:

* **Trainer** — ``transformers.Trainer``: a map-style dataset that loads and preprocesses each image in
  ``__getitem__``, a collator, ``model(input_ids, pixel_values, labels)`` (the model runs its own vision tower).
* **autolabel** — ``autolabel.train.api.train`` (the ``autolabel train`` code path): its loop, prefetch threads,
  each image through the frozen tower once per step.
* **autolabel, 2nd epoch** — the same, timed over the second epoch, when the frozen tower's outputs are kept
  (``feature_cache_mb``): what every epoch after the first costs.

Throughput is samples (pairs) per second over the optimizer steps after the first (warm-up) one, from timestamps
taken at each step's end on both sides; also per second of the process's CPU time, which a shared machine's other
load does not inflate (both sides use the same threads: torch's, and no data-loader workers on the CPU).
Validation, checkpoints and model loading are outside the timed window.
Prints a markdown table (paste into BENCHMARKS.md with the machine it ran on); ``--json`` also writes the numbers
(benchmarks/gpu_suite.py quotes the table).
"""

from __future__ import annotations

import argparse
import contextlib
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

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "checkpoints" / "florence-community--Florence-2-base"
LR = 2e-4


class Done(Exception):
    """Raised from the last timed step: what comes after (validation, saving) is not the loop's speed."""


# -- setup (parent) ----------------------------------------------------------------------------------------------
def build(work: Path, n: int, seed: int = 0, smoke: bool = False) -> tuple[Path, Path, Path]:
    """A random base-size Florence-2 folder (``smoke``: widths and depths shrunk), ``n`` images and their COCO file."""
    import numpy as np
    import torch
    from PIL import Image
    from transformers import AutoConfig, Florence2ForConditionalGeneration

    model = work / "model"
    config = AutoConfig.from_pretrained(FIXTURE)
    if smoke:  # the real tokenizer, processor and image size; a model of ~1M weights
        text, vision = config.text_config, config.vision_config
        text.d_model, text.encoder_layers, text.decoder_layers = 16, 1, 1
        text.encoder_attention_heads = text.decoder_attention_heads = 2
        text.encoder_ffn_dim = text.decoder_ffn_dim = 16
        vision.depths, vision.embed_dim, vision.projection_dim = [1, 1, 1, 1], [8, 8, 8, 16], 16
        vision.num_heads, vision.num_groups, vision.mlp_ratio = [1, 1, 1, 2], [1, 1, 1, 2], 1.0
    torch.manual_seed(seed)
    Florence2ForConditionalGeneration(config).save_pretrained(model)
    for file in FIXTURE.iterdir():
        if file.suffix in (".json", ".txt") and file.name != "config.json":
            shutil.copy(file, model / file.name)
    images = work / "images"
    images.mkdir()
    rng = np.random.default_rng(seed)
    coco: dict[str, Any] = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "person"},
                                                                           {"id": 2, "name": "car"}]}
    for k in range(n):
        w, h = (1024, 768) if k % 2 == 0 else (640, 960)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(images / f"{k:04d}.jpg", quality=90)
        coco["images"].append({"id": k + 1, "file_name": f"{k:04d}.jpg", "width": w, "height": h})
        for _ in range(1 + k % 3):
            x, y = float(rng.integers(0, w // 2)), float(rng.integers(0, h // 2))
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": k + 1,
                                        "category_id": int(rng.integers(1, 3)),
                                        "bbox": [x, y, float(rng.integers(20, w // 2)),
                                                 float(rng.integers(20, h // 2))]})
    gt = work / "coco.json"
    gt.write_text(json.dumps(coco))
    return model, images, gt


# -- contenders (each in its own process) ------------------------------------------------------------------------
def peak_memory(device: str) -> float:
    """Peak memory in MB: the GPU's allocations on CUDA, else the process's resident set."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_autolabel(args: argparse.Namespace, second_epoch: bool) -> dict[str, Any]:
    from autolabel.train.api import train

    stamps: list[tuple[float, float]] = []
    epochs = 2 if second_epoch else 1
    last = args.steps * epochs

    def on_step(step: int, loss: float) -> None:
        if args.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
        stamps.append((time.perf_counter(), time.process_time()))
        if step == last:
            raise Done

    with contextlib.suppress(Done):
        train(str(args.work / "model"), args.work / "coco.json", args.work / f"out-{os.getpid()}",
              args.work / "images", mode=args.mode, lr=LR, epochs=epochs, batch_size=args.batch, val_fraction=0,
              eval_every=epochs + 1, device=args.device, precision=args.precision, progress=False, notes=None,
              on_step=on_step, warmup=0.05, workers=args.workers)  # workers None: autolabel's default
    return timing(stamps[-args.steps:], args.batch)  # the timed epoch's step ends: the last epoch's


def timing(stamps: list[tuple[float, float]], batch: int) -> dict[str, Any]:
    """Wall and CPU seconds from the first step's end to the last's, and the samples trained in between."""
    return {"seconds": stamps[-1][0] - stamps[0][0], "cpu_seconds": stamps[-1][1] - stamps[0][1],
            "samples": batch * (len(stamps) - 1)}


def run_trainer(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from PIL import Image
    from transformers import (AutoProcessor, Florence2ForConditionalGeneration, Trainer, TrainerCallback,
                              TrainingArguments)

    from autolabel.train import samples as make
    from autolabel.train.data import assign_splits, load
    from autolabel.train.model import LORA_TEXT

    processor = AutoProcessor.from_pretrained(args.work / "model")
    model = Florence2ForConditionalGeneration.from_pretrained(args.work / "model")
    dataset = load(args.work / "coco.json", args.work / "images")
    assign_splits(dataset.examples, 0.0, 0)
    pairs = make.build(dataset, "od", processor, 1022, 400)
    for p in model.model.vision_tower.parameters():
        p.requires_grad_(False)
    if args.mode == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=LORA_TEXT))

    class Pairs(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(pairs)

        def __getitem__(self, i: int) -> dict[str, Any]:
            image = Image.open(dataset.examples[pairs[i].example].path).convert("RGB")
            pixels = processor.image_processor([image], return_tensors="pt")["pixel_values"][0]
            return {"sample": pairs[i], "pixel_values": pixels}

    def collate(rows: list[dict[str, Any]]) -> dict[str, Any]:
        batch = make.collate([r["sample"] for r in rows], processor.tokenizer.pad_token_id)
        return batch | {"pixel_values": torch.stack([r["pixel_values"] for r in rows])}

    stamps: list[tuple[float, float]] = []

    class Timer(TrainerCallback):
        def on_step_end(self, *_: Any, **__: Any) -> None:
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            stamps.append((time.perf_counter(), time.process_time()))

    training = TrainingArguments(
        output_dir=str(args.work / f"trainer-{os.getpid()}"), per_device_train_batch_size=args.batch,
        max_steps=args.steps, learning_rate=LR, lr_scheduler_type="linear", warmup_steps=0.05, max_grad_norm=1.0,
        weight_decay=0.0, logging_steps=10**6, save_strategy="no", report_to=[], dataloader_num_workers=0,
        remove_unused_columns=False, bf16=args.precision == "bf16" or (args.precision == "auto" and
                                                                       args.device.startswith("cuda")),
        use_cpu=args.device == "cpu", seed=0, disable_tqdm=True)
    Trainer(model=model, args=training, train_dataset=Pairs(), data_collator=collate, callbacks=[Timer()]).train()
    return timing(stamps, args.batch)


def worker(args: argparse.Namespace) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker == "trainer":
        out = run_trainer(args)
    else:
        out = run_autolabel(args, second_epoch=args.worker == "autolabel-cached")
    out["samples_per_s"] = out["samples"] / out["seconds"]
    out["samples_per_cpu_s"] = out["samples"] / out["cpu_seconds"]
    out["peak_mb"] = peak_memory(args.device)
    print("RESULT " + json.dumps(out), flush=True)


# -- the run (parent) --------------------------------------------------------------------------------------------
NAMES = {"trainer": "transformers Trainer", "autolabel": "autolabel train",
         "autolabel-cached": "autolabel train, 2nd epoch (frozen tower's outputs kept)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, help="pairs per step (default: 8 on a GPU, 2 on the CPU)")
    parser.add_argument("--steps", type=int, help="optimizer steps per contender, the first one warm-up (default: "
                        "10 on a GPU, 4 on the CPU)")
    parser.add_argument("--smoke", action="store_true", help="a tiny model (same tokenizer and images): seconds")
    parser.add_argument("--mode", choices=["lora", "full"], default="lora")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    parser.add_argument("--repeats", type=int, default=1, help="alternate the contenders this many times; best kept")
    parser.add_argument("--workers", type=int, help="autolabel's image-reading threads (default: its own)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--skip-cached", action="store_true", help="leave out the 2nd-epoch run")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument("--worker", choices=list(NAMES), help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    gpu = args.device.startswith("cuda")
    args.batch = args.batch or (8 if gpu else 2)
    args.steps = args.steps or (10 if gpu else 4)
    if args.steps < 2:
        parser.error("--steps: at least 2 (the first one is not timed)")
    if args.worker:
        worker(args)
        return

    work = Path(tempfile.mkdtemp(prefix="train-bench-"))
    try:
        t0 = time.perf_counter()
        build(work, args.batch * args.steps, smoke=args.smoke)
        setup = time.perf_counter() - t0
        order = ["trainer", "autolabel"] + ([] if args.skip_cached else ["autolabel-cached"])
        results: dict[str, list[dict[str, Any]]] = {name: [] for name in order}
        for _ in range(args.repeats):
            for name in order:
                argv = [sys.executable, __file__, "--worker", name, "--work", str(work)] + [
                    f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
                    if k in ("batch", "steps", "mode", "device", "precision", "workers", "threads") and v is not None]
                done = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
                line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
                if line is None:
                    sys.exit(f"{name} failed:\n{done.stderr[-3000:]}")
                results[name].append(json.loads(line[len("RESULT "):]))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    best = {name: max(runs, key=lambda r: r["samples_per_s"]) for name, runs in results.items()}
    base = best["trainer"]["samples_per_s"]
    cpu = {name: max(r["samples_per_cpu_s"] for r in runs) for name, runs in results.items()}
    size = "a tiny Florence-2 (--smoke)" if args.smoke else "Florence-2-base size"
    print(f"{size} (random weights), {args.mode}, batch {args.batch}, {args.steps} steps "
          f"({args.steps - 1} timed), device {args.device}, precision {args.precision}; best of {args.repeats}; "
          f"setup {setup:.0f} s; python {platform.python_version()}")
    print()
    print("| contender | samples/s | × Trainer | samples per CPU-s | × Trainer | peak memory MB |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in best.items():
        print(f"| {NAMES[name]} | {r['samples_per_s']:.3f} | {r['samples_per_s'] / base:.2f} | {cpu[name]:.3f} | "
              f"{cpu[name] / cpu['trainer']:.2f} | {r['peak_mb']:.0f} |")
    if args.json:
        args.json.write_text(json.dumps({"settings": {k: str(v) for k, v in vars(args).items()},
                                         "results": results, "best": best}, indent=1))


if __name__ == "__main__":
    main()
