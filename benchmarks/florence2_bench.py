"""Florence-2 throughput: the autolabel pipeline vs a bare batched ``generate`` loop, and vs the anchors' pattern.

    python benchmarks/florence2_bench.py                     # 8 images, batch 4, 20 new tokens, on CPU
    python benchmarks/florence2_bench.py --images 64 --batch 16 --device cuda

No weights are downloaded: the model is a randomly initialised Florence-2 of the real base size (DaViT vision
tower 128/256/512/1024 with depths 1/1/9/1, BART-base-like text model 768-d 6+6 layers, ~51k-token vocabulary,
768x768 images, 577 image tokens: ~231M parameters). A random model emits ``</s>`` at once, so every answer is
forced to ``--tokens`` new tokens (``min_new_tokens = max_new_tokens``) — the same work for every contender.

Contenders, on the same model, images and generation settings:

* **bare loop** — ``processor(text, images)`` → ``model.generate`` → ``batch_decode`` → ``post_process_generation``
  per batch of in-memory images: the least any labeling code must do, without scores, store or files.
* **pipeline** — ``Pipeline.run`` over the same images as files: decode (EXIF), the ``florence2`` stage (per-box
  confidence from token probabilities), the run store, the COCO export. The target is >= 0.9 of the bare loop.
* **anchors' pattern** — one image per ``generate``, ``num_beams=3``, fp32 (what autodistill's Florence-2 does),
  against the pipeline with the same beams, batched.

Prints a markdown table (paste into BENCHMARKS.md with the machine it ran on).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def build_tokenizer(base_vocab: int = 50265) -> Any:
    """A byte-level tokenizer with a BART-sized vocabulary (filler entries) plus Florence-2's added tokens."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import RobertaTokenizer

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for ch in sorted(ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    while len(vocab) < base_vocab - 1:
        vocab[f"\u0120filler{len(vocab)}"] = len(vocab)
    vocab["<mask>"] = len(vocab)
    tok = RobertaTokenizer(vocab=vocab, merges=[], add_prefix_space=False,
                           extra_special_tokens={"image_token": "<image>"})
    tok.add_tokens([f"<loc_{i}>" for i in range(1000)] + ["<poly>", "</poly>", "<sep>"])
    return tok


#: the real checkpoints' dimensions (vision: DaViT embed dims / heads / groups; text: BART width, layers, heads,
#: FFN), and a tiny one for smoke runs
SIZES: dict[str, dict[str, Any]] = {
    "base": {"vision": {"embed_dim": [128, 256, 512, 1024], "num_heads": [4, 8, 16, 32],
                        "num_groups": [4, 8, 16, 32], "depths": [1, 1, 9, 1], "projection_dim": 768},
             "text": {"d_model": 768, "layers": 6, "heads": 12, "ffn": 3072}, "vocab": 50265, "image_size": 768},
    "large": {"vision": {"embed_dim": [256, 512, 1024, 2048], "num_heads": [8, 16, 32, 64],
                         "num_groups": [8, 16, 32, 64], "depths": [1, 1, 9, 1], "projection_dim": 1024},
              "text": {"d_model": 1024, "layers": 12, "heads": 16, "ffn": 4096}, "vocab": 50265, "image_size": 768},
    "tiny": {"vision": {"embed_dim": [8, 8, 8, 16], "num_heads": [1, 1, 1, 2], "num_groups": [1, 1, 1, 2],
                        "depths": [1, 1, 1, 1], "projection_dim": 32, "window_size": 2, "mlp_ratio": 1.0},
             "text": {"d_model": 32, "layers": 1, "heads": 2, "ffn": 64}, "vocab": 300, "image_size": 64},
}


def build_model(size: str = "base", seed: int = 0) -> tuple[Any, Any]:
    """A random Florence-2 of a real checkpoint's dimensions (``base``: 231M parameters, ``large``: 0.77B; or
    ``tiny``), and its processor. The same ``seed`` gives the same weights in any process."""
    import torch
    from transformers import (BartConfig, CLIPImageProcessor, Florence2Config, Florence2ForConditionalGeneration,
                              Florence2Processor, Florence2VisionConfig)

    dims = SIZES[size]
    image_size, t = dims["image_size"], dims["text"]
    tok = build_tokenizer(dims["vocab"])
    vision = Florence2VisionConfig(drop_path_rate=0.0, **dims["vision"])
    text = BartConfig(
        vocab_size=len(tok), d_model=t["d_model"], encoder_layers=t["layers"], decoder_layers=t["layers"],
        encoder_attention_heads=t["heads"], decoder_attention_heads=t["heads"], encoder_ffn_dim=t["ffn"],
        decoder_ffn_dim=t["ffn"], max_position_embeddings=1024,
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        decoder_start_token_id=tok.eos_token_id, forced_eos_token_id=tok.eos_token_id,
    )
    config = Florence2Config(text_config=text, vision_config=vision, image_token_id=tok.image_token_id)
    torch.manual_seed(seed)
    model = Florence2ForConditionalGeneration(config).eval()
    image_processor = CLIPImageProcessor(
        do_resize=True, size={"height": image_size, "width": image_size}, do_center_crop=False,
        crop_size={"height": image_size, "width": image_size}, do_rescale=True, do_normalize=True,
        image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225], do_convert_rgb=True,
    )
    image_processor.image_seq_length = (image_size // 32) ** 2 + 1
    post = {k: {} for k in ("ocr", "phrase_grounding", "pure_text", "description_with_bboxes",
                            "description_with_polygons", "polygons", "bboxes", "description_with_bboxes_or_polygons")}
    processor = Florence2Processor(image_processor=image_processor, tokenizer=tok, post_processor_config=post)
    return model, processor


def build_base_size(image_size: int = 768) -> tuple[Any, Any]:
    """A random Florence-2 of the base checkpoint's dimensions, and its processor."""
    assert image_size == SIZES["base"]["image_size"], "the base size is 768x768"
    return build_model("base")


def make_images(folder: Path, n: int) -> list[Path]:
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        w, h = (1024, 768) if i % 2 == 0 else (640, 960)  # landscape and portrait photos, resized to 768x768
        path = folder / f"img{i:03d}.jpg"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def bare_loop(model: Any, processor: Any, images: list, batch: int, settings: dict, device: str, dtype: Any) -> float:
    """Seconds for the least code that labels: batched generate, decode, parse."""
    import torch

    t0 = time.perf_counter()
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch]
        inputs = processor(text=["<OD>"] * len(chunk), images=chunk, return_tensors="pt").to(device)
        inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
        with torch.inference_mode():
            out = model.generate(**inputs, do_sample=False, **settings)
        texts = processor.batch_decode(out, skip_special_tokens=False)
        for text, image in zip(texts, chunk):
            processor.post_process_generation(text, task="<OD>", image_size=image.size)
    return time.perf_counter() - t0


def pipeline_run(adapter: Any, folder: Path, batch: int, settings: dict, work: Path, limit: int | None = None) -> float:
    """Seconds for ``Pipeline.run`` over the image files (model already loaded: loading is not labeling)."""
    from autolabel import Pipeline

    config = {
        "models": {"florence": {"id": "bench/florence-2-base-random", "generation": settings}},
        "ontology": {"person": ["person"], "car": ["car"]},
        "batch_size": batch,
        "stages": [{"type": "florence2", "name": "detect", "model": "florence", "task": "od"}],
        "exports": [{"format": "coco"}],
    }
    pipeline = Pipeline.from_dict(config)
    adapter.spec = pipeline.config.models["florence"]  # this run's generation settings
    pipeline.models._loaded["florence"] = adapter  # the pool's cache: as if loaded from that id
    t0 = time.perf_counter()
    inputs = sorted(folder.iterdir())[:limit] if limit else folder
    summary = pipeline.run(input=inputs, output=work / f"run-{time.time_ns()}")
    seconds = time.perf_counter() - t0
    assert summary.status == "ok", summary.data.get("error")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=20, help="new tokens per answer (forced)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--skip-anchors", action="store_true", help="leave out the one-image-per-generate runs")
    parser.add_argument("--repeats", type=int, default=1, help="alternate the contenders this many times; best kept")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()

    import torch
    from PIL import Image

    from autolabel.config import ModelSpec
    from autolabel.models.florence2 import Florence2
    from autolabel.models.pool import pick_device, pick_dtype

    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    dtype = pick_dtype("auto", device)
    model, processor = build_base_size()
    model = model.to(device, dtype)
    params = sum(p.numel() for p in model.parameters())
    adapter = Florence2(model, processor, ModelSpec(id="bench/florence-2-base-random"), device, dtype)

    work = Path(tempfile.mkdtemp(prefix="florence2-bench-"))
    folder = work / "images"
    folder.mkdir()
    paths = make_images(folder, args.images)
    images = [Image.open(p).convert("RGB") for p in paths]
    tokens = {"max_new_tokens": args.tokens, "min_new_tokens": args.tokens}

    # warm-up (first-call allocations, lazy imports) on one image, not timed
    bare_loop(model, processor, images[:1], 1, {**tokens, "num_beams": 1}, device, dtype)
    pipeline_run(adapter, folder, args.batch, {**tokens, "num_beams": 1}, work, limit=1)

    contenders: list[tuple[str, Any, str, Any]] = []
    for beams in (1, 3):
        settings = {**tokens, "num_beams": beams}
        contenders.append((
            f"bare batched generate loop (batch {args.batch}, beams {beams})",
            lambda s=settings: bare_loop(model, processor, images, args.batch, s, device, dtype),
            f"pipeline (batch {args.batch}, beams {beams})",
            lambda s=settings: pipeline_run(adapter, folder, args.batch, s, work),
        ))
    if not args.skip_anchors:  # on CUDA the pipeline runs in bf16/fp16 and the anchors in fp32
        fp32 = model if dtype == torch.float32 else None

        def anchors() -> float:
            nonlocal fp32
            if fp32 is None:
                fp32 = build_base_size()[0].to(device)
            return bare_loop(fp32, processor, images, 1, {**tokens, "num_beams": 3}, device, torch.float32)

        contenders.append((
            "anchors' pattern (1 image per generate, beams 3, fp32)", anchors,
            f"pipeline (batch {args.batch}, beams 3, {str(dtype).replace('torch.', '')})",
            # in fp32 (CPU) the pipeline's run is the beams-3 one above: not timed twice
            None if dtype == torch.float32 else lambda: pipeline_run(adapter, folder, args.batch,
                                                                     {**tokens, "num_beams": 3}, work),
        ))
    times: dict[int, list[list[float]]] = {k: [[], []] for k in range(len(contenders))}
    for _ in range(args.repeats):  # alternate, so both see the same machine (other load, clocks)
        for k, (_, base, _, ours) in enumerate(contenders):
            times[k][0].append(base())
            times[k][1].append(ours() if ours is not None else times[1][1][-1])
    rows = [(name, min(times[k][0]), ours_name, min(times[k][1]))
            for k, (name, _, ours_name, _) in enumerate(contenders)]

    n = args.images
    print(f"\nFlorence-2-base-sized random model ({params / 1e6:.0f}M params), {n} images (1024x768 and 640x960 JPEGs "
          f"→ 768x768), {args.tokens} new tokens forced, task <OD>; device {device} "
          f"({torch.get_num_threads()} threads), {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}; "
          f"best of {args.repeats}\n")
    print("| baseline | s/img | pipeline | s/img | pipeline / baseline throughput |")
    print("|---|---:|---|---:|---:|")
    for name, base, ours_name, ours in rows:
        print(f"| {name} | {base / n:.2f} | {ours_name} | {ours / n:.2f} | {base / ours:.2f} |")


if __name__ == "__main__":
    main()
