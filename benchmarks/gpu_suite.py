"""The GPU suite: one command, a markdown table with the device named, under 8 minutes on one H100.

    python benchmarks/gpu_suite.py --out gpu_suite.md            # on a machine with a CUDA GPU
    python benchmarks/gpu_suite.py --smoke                       # tiny sizes on the CPU (what the tests run)

No weights are downloaded: the Florence-2 models are randomly initialised at the real checkpoints' sizes
(``florence2_bench.build_model``), every answer forced to ``--tokens`` new tokens (a random model would stop at
once). Sections, each timed against ``--budget`` seconds (a section that would not fit is skipped with a note):

1. **OD pipeline vs the anchors' pattern** — Florence-2-large, ``Pipeline.run`` of an ``<OD>`` stage at batch 32 in
   bf16 (3 beams, the stage's default), against one image per ``generate``, fp32, 3 beams (what autodistill's
   Florence-2 does). Goal: at least 5x.
2. **fld5b's Florence-2 part, sharing on vs off** — ``pipelines/fld5b.yaml``'s seven Florence-2 stages at batch 32,
   bf16, with ``share_vision_features`` on and off (vision passes per image from run.json).
3. **SAM 3 concepts** — ``benchmarks/sam3_bench.py`` when it exists (branch ``sam3``), else a note.
4. **Training** — ``benchmarks/train_bench.py`` when it exists (branch ``train``), else a note.

Sections 3 and 4 run the script as a subprocess with ``--device`` (and ``--smoke`` under ``--smoke``) when its
``--help`` lists them, and quote the markdown table it prints.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # florence2_bench, vision_bench: beside this file
os.environ.setdefault("HF_HUB_OFFLINE", "1")

#: sizes per mode: model, images and batch of each section, forced tokens
FULL = {"size": "large", "od_images": 96, "batch": 32, "fld5b_images": 32, "tokens": 20, "repeats": 2}
SMOKE = {"size": "tiny", "od_images": 4, "batch": 2, "fld5b_images": 2, "tokens": 3, "repeats": 1}
EXTERNAL = {"SAM 3 concepts": "sam3_bench.py", "training": "train_bench.py"}


@dataclass
class Suite:
    """The rows of the table and what else the reader should know, against a time budget."""

    budget: float
    started: float = field(default_factory=time.perf_counter)
    rows: list[tuple[str, str, str, str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    quoted: list[str] = field(default_factory=list)

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.started)

    def section(self, name: str, needs: float, run: Callable[[], None]) -> None:
        """Run one section if ``needs`` seconds are left; a failure is a note, not the end of the suite."""
        if self.left() < needs:
            self.notes.append(f"{name}: skipped, {self.left():.0f} s of the {self.budget:.0f} s budget left")
            return
        t0 = time.perf_counter()
        try:
            run()
        except Exception as err:  # noqa: BLE001 — one section's failure must not cost the others' figures
            self.notes.append(f"{name}: failed: {type(err).__name__}: {' '.join(str(err).split())[:300]}")
        print(f"{name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(0)
        return f"{torch.cuda.get_device_name(0)} ({props.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}"
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} " \
           f"torch threads)"


def synchronized(device: str) -> Callable[[Callable[[], Any]], float]:
    """Seconds a call takes, the GPU's queue drained before and after."""
    import torch

    def timed(call: Callable[[], Any]) -> float:
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        call()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    return timed


def od_section(suite: Suite, sizes: dict[str, Any], built: dict[str, Any], device: str, work: Path) -> None:
    """Florence-2 ``<OD>``: one image per generate in fp32, then the pipeline at batch 32 (bf16 on a GPU: the model
    is converted in place, so the sections after this one find it in the pipeline's dtype)."""
    import torch
    from florence2_bench import bare_loop, make_images, pipeline_run
    from PIL import Image

    from autolabel.config import ModelSpec
    from autolabel.models.florence2 import Florence2

    model, processor, dtype = built["model"], built["processor"], built["dtype"]
    folder = work / "od"
    folder.mkdir()
    paths = make_images(folder, sizes["od_images"])
    images = [Image.open(p).convert("RGB") for p in paths]
    tokens = {"max_new_tokens": sizes["tokens"], "min_new_tokens": sizes["tokens"]}
    params = sum(p.numel() for p in model.parameters())
    timed = synchronized(device)

    def anchors() -> None:
        bare_loop(model, processor, images, 1, {**tokens, "num_beams": 3}, device, torch.float32)

    bare_loop(model, processor, images[:1], 1, {**tokens, "num_beams": 3}, device, torch.float32)  # warm-up
    anchor_s = min(timed(anchors) for _ in range(sizes["repeats"]))
    to_pipeline_dtype(built)
    adapter = Florence2(model, processor, ModelSpec(id=f"bench/florence-2-{sizes['size']}-random"), device, dtype)
    settings = {**tokens, "num_beams": 3}
    pipeline_run(adapter, folder, sizes["batch"], settings, work, limit=1)  # warm-up
    ours_s = min(timed(lambda: pipeline_run(adapter, folder, sizes["batch"], settings, work))
                 for _ in range(sizes["repeats"]))
    n, ratio = len(images), anchor_s / ours_s
    suite.rows.append((
        f"Florence-2-{sizes['size']} ({params / 1e6:.3g}M parameters) `<OD>`, {n} images, "
        f"{sizes['tokens']} tokens forced",
        f"anchors' pattern (1 image per generate, fp32, beams 3): {n / anchor_s:.2f} img/s",
        f"pipeline (batch {sizes['batch']}, {str(dtype).replace('torch.', '')}, beams 3): {n / ours_s:.2f} img/s",
        f"{ratio:.2f}x", "goal >= 5x: " + ("met" if ratio >= 5 else "not met"),
    ))


def fld5b_section(suite: Suite, sizes: dict[str, Any], built: dict[str, Any], device: str, work: Path) -> None:
    """``pipelines/fld5b.yaml``'s Florence-2 part with and without sharing image features."""
    from florence2_bench import make_images
    from vision_bench import florence_part, run_pipeline

    from autolabel.config import ModelSpec
    from autolabel.models.florence2 import Florence2

    to_pipeline_dtype(built)
    folder = work / "fld5b"
    folder.mkdir()
    make_images(folder, sizes["fld5b_images"])
    adapter = Florence2(built["model"], built["processor"], ModelSpec(id="bench"), device, built["dtype"])
    warm = florence_part(2, 1, True, sizes["size"])
    warm["stages"] = warm["stages"][:1]
    run_pipeline(adapter, warm, sorted(folder.iterdir())[:1], work / "fld5b-warm")
    timed = synchronized(device)
    runs: dict[bool, list[tuple[float, dict[str, Any]]]] = {True: [], False: []}
    for r in range(sizes["repeats"]):
        for share in (False, True):  # alternated: both see the same machine
            config = florence_part(sizes["tokens"], sizes["batch"], share, sizes["size"])
            got: dict[str, Any] = {}
            out = work / f"fld5b-{share}-{r}"
            seconds = timed(lambda c=config, o=out, g=got: g.update(run_pipeline(adapter, c, folder, o)))
            runs[share].append((seconds, got))
    (off_s, off), (on_s, on) = min(runs[False], key=lambda x: x[0]), min(runs[True], key=lambda x: x[0])
    n = sizes["fld5b_images"]
    per = {s: (v["vision_passes"] or {}).get("florence", {}).get("per_image") for s, v in ((False, off), (True, on))}
    suite.rows.append((
        f"fld5b's Florence-2 part ({len(on['stage_images'])} stages), Florence-2-{sizes['size']}, {n} images, "
        f"batch {sizes['batch']}, {str(built['dtype']).replace('torch.', '')}, beams 3, {sizes['tokens']} tokens "
        f"forced",
        f"sharing off: {n / off_s:.2f} img/s, {per[False]} vision passes per image",
        f"sharing on: {n / on_s:.2f} img/s, {per[True]} vision passes per image",
        f"{off_s / on_s:.2f}x", "",
    ))


def to_pipeline_dtype(built: dict[str, Any]) -> None:
    """Convert the model (in place) to the dtype a pipeline loads it in on this device: bf16 on a GPU."""
    built["model"].to(built["dtype"])


def external_section(suite: Suite, name: str, script: str, smoke: bool, device: str, folder: Path = HERE) -> None:
    """Run another branch's benchmark script (``folder / script``), when present, and quote its table."""
    path = folder / script
    if not path.is_file():
        suite.notes.append(f"{name}: benchmarks/{script} is not in this tree yet; nothing measured")
        return
    help_text = subprocess.run([sys.executable, str(path), "--help"], capture_output=True, text=True,
                               timeout=120).stdout
    cmd = [sys.executable, str(path)]
    if smoke:
        if "--smoke" not in help_text:
            suite.notes.append(f"{name}: benchmarks/{script} has no --smoke; not run in a smoke run")
            return
        cmd.append("--smoke")
    if "--device" in help_text:
        cmd += ["--device", device]
    limit = max(10.0, min(suite.left() - 5, 240.0))
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, cwd=HERE.parent)
    except subprocess.TimeoutExpired:
        suite.notes.append(f"{name}: `{' '.join(cmd[1:])}` ran past {limit:.0f} s; stopped")
        return
    if done.returncode != 0:
        tail = " ".join(done.stderr.strip().splitlines()[-1:])[:300]
        suite.notes.append(f"{name}: `{' '.join(cmd[1:])}` failed (exit {done.returncode}): {tail}")
        return
    table = [line for line in done.stdout.splitlines() if line.startswith("|")]
    suite.quoted.append(f"### {name} (`{script}`)\n\n" + "\n".join(table or done.stdout.strip().splitlines()[-15:]))


def render(suite: Suite, device: str, smoke: bool, seconds: float) -> str:
    import torch
    import transformers

    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"## GPU suite (`benchmarks/gpu_suite.py{' --smoke' if smoke else ''}`)",
        "",
        f"Device: **{device_name(device)}**; torch {torch.__version__}, transformers {transformers.__version__}; "
        f"{when}; {seconds:.0f} s in all. "
        + ("Smoke run: tiny models, the plumbing, not the speed." if smoke else
           "Random weights at the real sizes, answers forced to a fixed length."),
        "",
        "| benchmark | baseline | autolabel | speed-up | note |",
        "|---|---|---|---:|---|",
        *(f"| {' | '.join(row)} |" for row in suite.rows),
    ]
    if suite.notes:
        lines += ["", *(f"* {note}" for note in suite.notes)]
    for block in suite.quoted:
        lines += ["", block]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (runs on a CPU in seconds)")
    parser.add_argument("--device", default="auto", help="auto: cuda when there is one")
    parser.add_argument("--budget", type=float, default=450.0, help="seconds for the whole suite")
    parser.add_argument("--out", type=Path, help="also write the table here")
    parser.add_argument("--only", nargs="*", choices=["od", "fld5b", "sam3", "train"], help="run only these")
    args = parser.parse_args(argv)

    from autolabel.models.pool import pick_device

    device = pick_device(args.device)
    if not args.smoke and not device.startswith("cuda"):
        print("note: no CUDA device; the full sizes on a CPU take hours (use --smoke, or --budget)", file=sys.stderr)
    sizes = SMOKE if args.smoke else FULL
    suite = Suite(budget=args.budget)
    work = Path(tempfile.mkdtemp(prefix="gpu-suite-"))
    try:
        table = run_sections(suite, args, sizes, device, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(table)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table)
        (args.out.with_suffix(".json")).write_text(json.dumps(
            {"rows": suite.rows, "notes": suite.notes, "device": device_name(device)}, indent=1))
    return table


def run_sections(suite: Suite, args: argparse.Namespace, sizes: dict[str, Any], device: str, work: Path) -> str:
    """Every section asked for, in order; the table."""
    import torch

    wanted = set(args.only or ["od", "fld5b", "sam3", "train"])
    if wanted & {"od", "fld5b"}:
        from florence2_bench import build_model

        from autolabel.models.pool import pick_dtype

        model, processor = build_model(sizes["size"])  # once: fp32 for the anchors, then the pipeline's dtype
        built = {"model": model.to(device), "processor": processor, "dtype": pick_dtype("auto", device)}
        if "od" in wanted:
            suite.section("OD pipeline vs anchors", 5 if args.smoke else 120,
                          lambda: od_section(suite, sizes, built, device, work))
        if "fld5b" in wanted:
            suite.section("fld5b Florence-2 part", 5 if args.smoke else 90,
                          lambda: fld5b_section(suite, sizes, built, device, work))
        del built, model
    for key, (name, script) in zip(("sam3", "train"), EXTERNAL.items()):
        if key in wanted:
            suite.section(name, 5 if args.smoke else 60,
                          lambda n=name, s=script: external_section(suite, n, s, args.smoke, device))
    if device.startswith("cuda"):
        suite.notes.append(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    return render(suite, device, args.smoke, time.perf_counter() - suite.started)


if __name__ == "__main__":
    main()
