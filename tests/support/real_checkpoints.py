"""Checkpoints built from the hub's own files: real tokenizers, processors and ``model_type``s, tiny random weights.

``tests/fixtures/checkpoints/<owner>--<name>/`` holds the configuration, tokenizer and processor files of the
checkpoints the README names, as published (no weights; see its LICENSES.md). :func:`build` does what the
checkpoints' README prescribes: ``AutoConfig`` of the real files, dimensions shrunk (widths and depths only: the
model type, the vocabulary, the image sizes the processor produces stay real), the model class of that type with
random weights, ``save_pretrained``, then the real tokenizer / processor files copied over what was written.
:func:`real` builds each once per test session; :func:`hub_cache` lays a checkpoint out as ``hf download`` does
(``models--owner--name/snapshots/<commit>/`` and ``refs/main``), for loading by hub id with ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parents[1] / "fixtures" / "checkpoints"
EXPECTED = FIXTURES / "expected"

#: kind → (hub id, fixture folder)
CHECKPOINTS = {
    "florence2": "florence-community/Florence-2-base",
    "florence2_remote": "microsoft/Florence-2-base",
    "sam2": "facebook/sam2.1-hiera-tiny",
    "sam": "facebook/sam-vit-base",
    "grounding_dino": "IDEA-Research/grounding-dino-tiny",
    "owlv2": "google/owlv2-base-patch16-ensemble",
    "sam3": "facebook/sam3",
}
#: files a fixture folder shares with another instead of a second copy: SAM 3's tokenizer is CLIP's BPE, the same
#: vocab.json (as a dict) and merges.txt (byte for byte) as OWLv2's; the hub's tokenizer.json (3.6 MB) is not
#: vendored: :func:`build` writes it from them, byte for byte the same (sha256 in tests/models/test_sam3_model.py)
SHARED = {"sam3": {"vocab.json": "owlv2", "merges.txt": "owlv2"}}


def fixture(kind: str) -> Path:
    """The folder of the real files of ``kind``'s checkpoint."""
    return FIXTURES / CHECKPOINTS[kind].replace("/", "--")


def _florence2(config: Any) -> Any:
    from transformers import Florence2ForConditionalGeneration

    text = config.text_config  # vocabulary (51328) kept: the real tokenizer's ids must fit
    text.d_model, text.encoder_layers, text.decoder_layers = 16, 1, 1
    text.encoder_attention_heads = text.decoder_attention_heads = 2
    text.encoder_ffn_dim = text.decoder_ffn_dim = 16
    vision = config.vision_config  # strides, patch sizes and window kept: 768 px still gives 577 image tokens
    vision.depths, vision.embed_dim = [1, 1, 1, 1], [8, 8, 8, 16]
    vision.num_heads, vision.num_groups, vision.mlp_ratio = [1, 1, 1, 2], [1, 1, 1, 2], 1.0
    vision.projection_dim = 16
    return Florence2ForConditionalGeneration(config)


def _sam2(config: Any) -> Any:
    from transformers import Sam2VideoModel

    backbone = config.vision_config.backbone_config  # 1024 px and the three feature sizes kept (the processor's)
    backbone.blocks_per_stage, backbone.embed_dim_per_stage = [1, 1, 2, 1], [8, 16, 32, 64]
    backbone.hidden_size, backbone.num_attention_heads_per_stage, backbone.global_attention_blocks = 8, [1] * 4, [3]
    config.vision_config.backbone_channel_list, config.vision_config.fpn_hidden_size = [64, 32, 16, 8], 32
    config.prompt_encoder_config.hidden_size, config.prompt_encoder_config.mask_input_channels = 32, 4
    decoder = config.mask_decoder_config
    decoder.hidden_size, decoder.mlp_dim, decoder.num_hidden_layers = 32, 32, 1
    decoder.num_attention_heads, decoder.iou_head_hidden_dim = 2, 16
    for key in ("memory_attention_hidden_size", "memory_encoder_hidden_size", "mask_downsampler_embed_dim",
                "memory_fuser_embed_dim", "memory_attention_feed_forward_hidden_size", "memory_fuser_intermediate_dim"):
        setattr(config, key, 32)
    config.memory_attention_num_layers, config.memory_encoder_output_channels = 1, 16
    return Sam2VideoModel(config)


def _sam(config: Any) -> Any:
    from transformers import SamModel

    vision = config.vision_config  # 1024 px, 16 px patches (the processor's frame) kept
    vision.hidden_size, vision.output_channels, vision.num_hidden_layers = 16, 16, 1
    vision.num_attention_heads, vision.global_attn_indexes, vision.mlp_dim, vision.num_pos_feats = 2, [0], 16, 8
    config.prompt_encoder_config.hidden_size, config.prompt_encoder_config.mask_input_channels = 16, 4
    decoder = config.mask_decoder_config
    decoder.hidden_size, decoder.mlp_dim, decoder.num_hidden_layers = 16, 16, 1
    decoder.num_attention_heads, decoder.iou_head_hidden_dim = 2, 16
    return SamModel(config)


def _grounding_dino(config: Any) -> Any:
    from transformers import GroundingDinoForObjectDetection

    swin = config.backbone_config
    swin.embed_dim, swin.depths, swin.num_heads = 8, [1, 1, 1, 1], [1, 1, 1, 1]
    config.d_model, config.encoder_layers, config.decoder_layers = 32, 1, 2
    config.encoder_attention_heads = config.decoder_attention_heads = 4
    config.encoder_ffn_dim = config.decoder_ffn_dim = 8
    config.num_queries, config.encoder_n_points, config.decoder_n_points = 20, 2, 2
    text = config.text_config  # bert-base-uncased's vocabulary kept
    text.hidden_size, text.num_hidden_layers, text.num_attention_heads, text.intermediate_size = 8, 1, 2, 8
    return GroundingDinoForObjectDetection(config)


def _owlv2(config: Any) -> Any:
    from transformers import Owlv2ForObjectDetection

    text, vision = config.text_config, config.vision_config  # CLIP's vocabulary, 960 px / 16 px patches kept
    text.hidden_size, text.intermediate_size, text.num_hidden_layers, text.num_attention_heads = 16, 16, 1, 2
    vision.hidden_size, vision.intermediate_size, vision.num_hidden_layers, vision.num_attention_heads = 16, 16, 1, 2
    config.projection_dim = 16
    return Owlv2ForObjectDetection(config)


def _sam3(config: Any) -> Any:
    """Sam3VideoModel of facebook/sam3's config, shrunk as transformers' ``Sam3ModelTester`` shrinks it (widths 16,
    one or two layers, 20 queries), with 1008 px / 14 px patches, 288 px masks, CLIP's vocabulary and the 32-token
    window kept; then :func:`_sharpen_sam3`."""
    from transformers import Sam3VideoModel

    def backbone(vit: Any) -> None:  # the detector and the tracker share one backbone: same shapes in both
        vit.hidden_size, vit.intermediate_size, vit.num_hidden_layers, vit.num_attention_heads = 16, 32, 2, 2
        vit.global_attn_indexes = [1]

    det = config.detector_config
    backbone(det.vision_config.backbone_config)
    det.vision_config.fpn_hidden_size = 16
    text = det.text_config
    text.hidden_size, text.intermediate_size, text.num_hidden_layers, text.num_attention_heads = 16, 32, 1, 2
    text.projection_dim = 16
    for part in (det.geometry_encoder_config, det.detr_encoder_config, det.detr_decoder_config):
        part.hidden_size, part.intermediate_size, part.num_attention_heads, part.num_layers = 16, 32, 2, 1
    det.detr_decoder_config.num_queries = 20
    det.mask_decoder_config.hidden_size, det.mask_decoder_config.num_attention_heads = 16, 2
    tracker = config.tracker_config
    backbone(tracker.vision_config.backbone_config)
    tracker.vision_config.fpn_hidden_size = 16
    tracker.prompt_encoder_config.hidden_size, tracker.prompt_encoder_config.mask_input_channels = 16, 4
    decoder = tracker.mask_decoder_config
    decoder.hidden_size, decoder.mlp_dim, decoder.num_hidden_layers = 16, 16, 1
    decoder.num_attention_heads, decoder.iou_head_hidden_dim = 2, 16
    for key in ("memory_attention_hidden_size", "memory_encoder_hidden_size", "mask_downsampler_embed_dim",
                "memory_fuser_embed_dim", "memory_attention_feed_forward_hidden_size", "memory_fuser_intermediate_dim"):
        setattr(tracker, key, 16)
    tracker.memory_attention_num_layers, tracker.memory_encoder_output_channels = 1, 16
    return _sharpen_sam3(Sam3VideoModel(config))


def _sharpen_sam3(model: Any) -> Any:
    """Weights whose answers depend on the image and the prompt.

    At transformers' initialisation (std 0.02) the necks' feature maps are ~1e-5, so every image looks the same to
    the heads, and scores sit at 0.5. Here every linear and convolution of the necks and heads gets unit-gain
    weights (std 1/sqrt(fan in)), and the score, presence, box and mask outputs are scaled up: query scores spread
    over (0, 1), presence scores differ between images, boxes move with the image, masks are ~half on.
    """
    import torch

    generator = torch.Generator().manual_seed(1)
    det = model.detector_model
    parts = [det.vision_encoder.neck, det.detr_encoder, det.detr_decoder, det.mask_decoder, det.geometry_encoder,
             det.dot_product_scoring, model.tracker_neck, model.tracker_model.mask_decoder]
    with torch.no_grad():
        for module in (m for part in parts for m in part.modules()):
            if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                weight = module.weight
                fan_in = weight[0].numel() if not isinstance(module, torch.nn.ConvTranspose2d) else \
                    weight.shape[0] * weight[0, 0].numel()
                weight.copy_(torch.randn(weight.shape, generator=generator) / fan_in**0.5)
        det.dot_product_scoring.query_proj.weight.mul_(3.0)
        det.detr_decoder.presence_head.layer3.weight.mul_(10.0)  # presence ~0.6-0.8, apart between images
        det.detr_decoder.presence_head.layer3.bias.fill_(3.0)
        det.detr_decoder.box_head.layer3.weight.mul_(5.0)
        det.mask_decoder.mask_embedder.layers[-1].weight.mul_(3.0)
    return model


SHRINK: dict[str, Callable[[Any], Any]] = {
    "florence2": _florence2, "sam2": _sam2, "sam": _sam, "grounding_dino": _grounding_dino, "owlv2": _owlv2,
    "sam3": _sam3,
}


def build(kind: str, path: Path) -> Path:
    """A ``kind`` checkpoint at ``path``: the real files, a shrunk config of the real ``model_type``, random weights."""
    import torch
    from transformers import AutoConfig

    source = fixture(kind)
    config = AutoConfig.from_pretrained(source)
    torch.manual_seed(0)
    model = SHRINK[kind](config)
    if kind == "sam3":  # its README's trap: save_pretrained writes the tracker as tracker_model.tracker_model.*
        from safetensors.torch import save_file

        path.mkdir(parents=True, exist_ok=True)
        model.config.save_pretrained(path)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path / "model.safetensors",
                  metadata={"format": "pt"})
    else:
        model.save_pretrained(path)
    for file in source.iterdir():  # the hub's own tokenizer / processor files win over what save_pretrained wrote
        if file.suffix in (".json", ".txt") and file.name != "config.json":
            shutil.copy(file, path / file.name)
    for name, owner in SHARED.get(kind, {}).items():
        shutil.copy(fixture(owner) / name, path / name)
    if kind == "sam3":  # the hub's tokenizer.json, rebuilt from vocab.json + merges.txt (byte for byte: see SHARED)
        from transformers import AutoTokenizer

        with tempfile.TemporaryDirectory() as scratch:
            AutoTokenizer.from_pretrained(path).save_pretrained(scratch)
            shutil.copy(Path(scratch) / "tokenizer.json", path / "tokenizer.json")
    return path


@cache
def _root() -> Path:
    root = Path(tempfile.mkdtemp(prefix="autolabel-real-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return root


@cache
def real(kind: str) -> str:
    """The folder of the ``kind`` checkpoint built from the real files (built on first use, once per session)."""
    return str(build(kind, _root() / kind))


def hub_cache(cache_dir: Path, repo_id: str, folder: str | Path, commit: str) -> Path:
    """Lay ``folder``'s files out as the hub cache holds a download of ``repo_id`` at ``commit``; return the snapshot.

    ``cache_dir`` is what ``HF_HUB_CACHE`` points at: ``models--owner--name/refs/main`` names the commit and
    ``snapshots/<commit>/`` holds the files (the real cache links them to ``blobs/``; plain copies load the same).
    """
    repo = Path(cache_dir) / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    shutil.copytree(folder, snapshot, dirs_exist_ok=True)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot
