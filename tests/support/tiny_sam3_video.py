"""A tiny ``facebook/sam3`` for the video tests: the real files (config of ``model_type: "sam3_video"``, CLIP
tokenizer, ``Sam3VideoProcessor``), dimensions shrunk, random weights, saved as its README prescribes (safetensors'
``save_file`` of the state dict, then the hub's files copied over).

It differs from :func:`real_checkpoints._sam3` (the image tests' tiny SAM 3) in two ways the video models need:

* the necks are 128 wide (the real model: 256) with the memory's 64 channels: transformers' video tracker reads its
  memories with a hard-coded 64-channel projection (``kv_in_dim=64``) and splits the object pointers by
  ``width / 64``, so with both 16 (or equal) the memory attention fails on the second frame;
* images are 224 px (16x16 patches of 14 px; feature maps 64/32/16, masks 64 px; the processor's sizes follow), not
  1008: at 1008 px one frame of this model takes a minute on a CPU, at 224 px a third of a second.

The vocabulary, tokenizer, 32-token window, model type and processor classes stay the real ones, and weights are
sharpened as :func:`real_checkpoints._sharpen_sam3` does so that answers depend on the frames.
"""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

from real_checkpoints import SHARED, _sharpen_sam3, fixture

SIZE = 224  #: image side in pixels (the real model: 1008)
WIDTH = 128  #: neck and head width (the real model: 256); must be a multiple of, and larger than, 64


def config() -> Any:
    """facebook/sam3's config, shrunk as the module docstring says."""
    from transformers import AutoConfig

    tokens = SIZE // 14
    cfg = AutoConfig.from_pretrained(fixture("sam3"))

    def vision(v: Any) -> None:  # the detector and the tracker share one backbone: the same shapes in both
        vit = v.backbone_config
        vit.hidden_size, vit.intermediate_size, vit.num_hidden_layers, vit.num_attention_heads = 16, 32, 2, 2
        vit.global_attn_indexes, vit.window_size = [1], 8
        vit.image_size = vit.pretrain_image_size = SIZE
        v.backbone_feature_sizes = [[4 * tokens] * 2, [2 * tokens] * 2, [tokens] * 2]
        v.fpn_hidden_size = WIDTH

    det = cfg.detector_config
    vision(det.vision_config)
    text = det.text_config
    text.hidden_size, text.intermediate_size, text.num_hidden_layers, text.num_attention_heads = 16, 32, 1, 2
    text.projection_dim = 16
    for part in (det.geometry_encoder_config, det.detr_encoder_config, det.detr_decoder_config):
        part.hidden_size, part.intermediate_size, part.num_attention_heads, part.num_layers = WIDTH, 32, 2, 1
    det.detr_decoder_config.num_queries = 20
    det.mask_decoder_config.hidden_size, det.mask_decoder_config.num_attention_heads = WIDTH, 2
    tracker = cfg.tracker_config
    vision(tracker.vision_config)
    tracker.image_size = tracker.prompt_encoder_config.image_size = SIZE
    tracker.memory_attention_rope_feat_sizes = [tokens, tokens]
    tracker.prompt_encoder_config.hidden_size, tracker.prompt_encoder_config.mask_input_channels = WIDTH, 4
    decoder = tracker.mask_decoder_config
    decoder.hidden_size, decoder.mlp_dim, decoder.num_hidden_layers = WIDTH, 16, 1
    decoder.num_attention_heads, decoder.iou_head_hidden_dim = 2, 16
    for key in ("memory_attention_hidden_size", "memory_encoder_hidden_size", "mask_downsampler_embed_dim",
                "memory_fuser_embed_dim"):
        setattr(tracker, key, WIDTH)
    tracker.memory_attention_feed_forward_hidden_size = tracker.memory_fuser_intermediate_dim = 16
    tracker.memory_attention_num_layers, tracker.memory_encoder_output_channels = 1, 64
    cfg.low_res_mask_size = 4 * tokens
    return cfg


def build(path: Path) -> Path:
    """The tiny video checkpoint at ``path``."""
    import torch
    from safetensors.torch import save_file
    from transformers import Sam3VideoModel

    torch.manual_seed(0)
    model = _sharpen_sam3(Sam3VideoModel(config()))
    path.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(path)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path / "model.safetensors",
              metadata={"format": "pt"})
    source = fixture("sam3")
    for file in source.iterdir():
        if file.suffix in (".json", ".txt") and file.name != "config.json":
            shutil.copy(file, path / file.name)
    for name, owner in SHARED["sam3"].items():
        shutil.copy(fixture(owner) / name, path / name)
    processor = json.loads((path / "processor_config.json").read_text())  # sizes follow the model's images
    square = {"height": SIZE, "width": SIZE}
    processor["image_processor"]["size"] = processor["video_processor"]["size"] = square
    processor["image_processor"]["mask_size"] = {"height": 4 * (SIZE // 14), "width": 4 * (SIZE // 14)}
    processor["target_size"] = SIZE
    (path / "processor_config.json").write_text(json.dumps(processor, indent=2))
    return path


@cache
def tiny_sam3_video() -> str:
    """The folder of the tiny video checkpoint (built once per test session)."""
    root = Path(tempfile.mkdtemp(prefix="autolabel-sam3-video-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return str(build(root / "sam3"))
