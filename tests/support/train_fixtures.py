"""A Florence-2 small enough to learn on the CPU in seconds, built from the real checkpoint's files, and the images
and ground truth it learns.

The model is ``florence-community/Florence-2-base``'s config with the widths and depths shrunk: its real tokenizer
(51,289 tokens, special ``<loc_K>``), its real processor (768x768 pixels, 577 image tokens), random weights. Its
vision tower is wider than :mod:`real_checkpoints`' (16/32/64/128) so that its features tell images apart after
the projector's LayerNorm, and it has no dropout, so that a few dozen steps are deterministic.

The images are solid colours, one each (what a frozen random tower distinguishes best), and each has known boxes.
"""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

from real_checkpoints import fixture

#: one colour per image: far apart, so that their features differ even averaged over the image
COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255), (0, 0, 0),
           (255, 255, 255)]
CLASSES = ["dog", "cat"]


def build_model(path: Path, width: int = 32, heads: int = 4, seed: int = 0) -> Path:
    """The trainable tiny Florence-2 at ``path`` (config + random weights + the real tokenizer/processor files)."""
    import torch
    from transformers import AutoConfig, Florence2ForConditionalGeneration

    source = fixture("florence2")
    config = AutoConfig.from_pretrained(source)
    text = config.text_config
    text.d_model, text.encoder_layers, text.decoder_layers = width, 1, 1
    text.encoder_attention_heads = text.decoder_attention_heads = heads
    text.encoder_ffn_dim = text.decoder_ffn_dim = width
    text.dropout = text.attention_dropout = text.activation_dropout = 0.0
    vision = config.vision_config
    vision.depths, vision.embed_dim = [1, 1, 1, 1], [16, 32, 64, 128]
    vision.num_heads, vision.num_groups, vision.mlp_ratio = [1, 2, 4, 8], [1, 2, 4, 8], 1.0
    vision.projection_dim, vision.drop_path_rate = width, 0.0
    torch.manual_seed(seed)
    Florence2ForConditionalGeneration(config).save_pretrained(path)
    for file in source.iterdir():  # the hub's own tokenizer / processor files
        if file.suffix in (".json", ".txt") and file.name != "config.json":
            shutil.copy(file, path / file.name)
    return path


#: 1000 px a side: one pixel per location bin, so whole-pixel boxes survive quantization exactly (IoU 1 when the
#: model writes the right tokens: AP can reach 1.0, not just IoU >= 0.95 on large boxes)
SIZE = (1000, 1000)


@cache
def built(width: int = 32, heads: int = 4) -> Path:
    """:func:`build_model` once per test session (tests copy it when they write into it; none does: training
    writes elsewhere)."""
    root = Path(tempfile.mkdtemp(prefix="autolabel-train-model-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return build_model(root / f"w{width}-h{heads}", width=width, heads=heads)


def boxes_of(k: int, size: tuple[int, int] = SIZE, most: int = 1) -> list[tuple[str, list[float]]]:
    """Image ``k``'s known boxes (class, xyxy whole pixels): 1 to ``most``, drawn from a seeded generator."""
    rng = np.random.default_rng(100 + k)
    out = []
    for j in range(1 + k % most):
        x0, y0 = int(rng.integers(0, size[0] // 2)), int(rng.integers(0, size[1] // 2))
        w, h = int(rng.integers(size[0] // 10, size[0] // 2)), int(rng.integers(size[1] // 10, size[1] // 2))
        out.append((CLASSES[(k + j) % 2], [float(x0), float(y0), float(x0 + w), float(y0 + h)]))
    return out


def write_dataset(folder: Path, n: int = 8, size: tuple[int, int] = SIZE, most: int = 1) -> Path:
    """``n`` solid-colour PNGs in ``folder/images`` and their boxes in ``folder/coco.json``; returns the COCO file."""
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    coco = {"images": [], "annotations": [], "categories": [{"id": i + 1, "name": c} for i, c in enumerate(CLASSES)]}
    for k in range(n):
        name = f"im{k}.png"
        Image.new("RGB", size, COLOURS[k % len(COLOURS)]).save(images / name)
        coco["images"].append({"id": k + 1, "file_name": name, "width": size[0], "height": size[1]})
        for cls, (x1, y1, x2, y2) in boxes_of(k, size, most):
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": k + 1,
                                        "category_id": CLASSES.index(cls) + 1, "bbox": [x1, y1, x2 - x1, y2 - y1]})
    path = folder / "coco.json"
    path.write_text(json.dumps(coco))
    return path
