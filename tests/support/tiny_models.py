"""Tiny checkpoints of each family, built from configs (tokenizers and processors constructed in code).

Each builder writes what ``save_pretrained`` writes — config, weights, processor — into a folder, which tests load
through the model type's ``load`` exactly as a user's checkpoint folder is loaded. Random weights: these test
plumbing (batching, coordinates, shapes, rows), not answers. :func:`tiny` builds each once per test session.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from functools import cache
from pathlib import Path

import torch

#: words the tiny BERT tokenizer knows (anything else is [UNK])
BERT_WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "a", "cat", "dog", "person", "car", "traffic",
              "light", "forklift", "pallet", "##s"]


def grounding_dino(path: Path) -> Path:
    """A 150k-parameter Grounding DINO (Swin + 1-layer BERT) with a 96–128 px image processor.

    Not smaller: a square image alone must leave its last feature level more than 1×1 (its GroupNorm needs two
    values), or any square image run on its own would crash.
    """
    from transformers import (BertTokenizer, GroundingDinoConfig, GroundingDinoForObjectDetection,
                              GroundingDinoImageProcessor, GroundingDinoProcessor, SwinConfig)

    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(BERT_WORDS)})
    swin = SwinConfig(window_size=7, embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], image_size=98,
                      out_features=["stage2", "stage3", "stage4"], out_indices=[2, 3, 4])
    config = GroundingDinoConfig(
        d_model=32, encoder_layers=1, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
        encoder_ffn_dim=8, decoder_ffn_dim=8, num_queries=10, num_feature_levels=4, encoder_n_points=2,
        decoder_n_points=2, backbone_config=swin, max_text_len=32,
        text_config=dict(model_type="bert", vocab_size=len(BERT_WORDS), hidden_size=8, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=8, max_position_embeddings=32),
    )
    torch.manual_seed(0)
    GroundingDinoForObjectDetection(config).save_pretrained(path)
    image_processor = GroundingDinoImageProcessor(size={"shortest_edge": 96, "longest_edge": 128})
    GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(path)
    return path


def owlv2(path: Path) -> Path:
    """A 17k-parameter OWLv2 (32 px, 8 px patches: 16 boxes per image) with a byte-level CLIP tokenizer."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTokenizer, Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor

    vocab: dict[str, int] = {}
    for suffix in ("", "</w>"):
        for char in sorted(ByteLevel.alphabet()):
            vocab.setdefault(char + suffix, len(vocab))
    bos, eos = len(vocab), len(vocab) + 1  # OWL masks out queries whose first token id is 0: keep specials last
    vocab |= {"<|startoftext|>": bos, "<|endoftext|>": eos}
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[])
    config = Owlv2Config(
        text_config=dict(vocab_size=len(vocab), hidden_size=16, intermediate_size=16, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=16, bos_token_id=bos, eos_token_id=eos,
                         pad_token_id=eos),
        vision_config=dict(hidden_size=16, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16,
    )
    torch.manual_seed(0)
    Owlv2ForObjectDetection(config).save_pretrained(path)
    image_processor = Owlv2ImageProcessor(size={"height": 32, "width": 32})
    Owlv2Processor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(path)
    return path


def sam(path: Path) -> Path:
    """A 24k-parameter SAM: 64 px input, 4×4 embedding, 16×16 mask logits."""
    from transformers import SamConfig, SamImageProcessor, SamModel, SamProcessor

    config = SamConfig(
        vision_config=dict(hidden_size=16, output_channels=16, num_hidden_layers=1, num_attention_heads=2,
                           image_size=64, patch_size=16, global_attn_indexes=[0], window_size=2,
                           num_pos_feats=8, mlp_dim=16),
        prompt_encoder_config=dict(hidden_size=16, image_size=64, patch_size=16, mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=16, mlp_dim=16, num_hidden_layers=1, num_attention_heads=2,
                                 iou_head_hidden_dim=16),
    )
    torch.manual_seed(0)
    SamModel(config).save_pretrained(path)
    image_processor = SamImageProcessor(size={"longest_edge": 64}, pad_size={"height": 64, "width": 64})
    SamProcessor(image_processor=image_processor).save_pretrained(path)
    return path


def sam2(path: Path) -> Path:
    """A 170k-parameter SAM2 (Hiera, 64 px input, 16×16 mask logits)."""
    from transformers import (Sam2Config, Sam2HieraDetConfig, Sam2MaskDecoderConfig, Sam2Model,
                              Sam2PromptEncoderConfig, Sam2Processor, Sam2VisionConfig)
    from transformers.models.sam2.image_processing_sam2 import Sam2ImageProcessor

    backbone = Sam2HieraDetConfig(
        hidden_size=12, image_size=64, patch_stride=4, patch_kernel_size=7, patch_padding=3,
        blocks_per_stage=[1, 1, 2, 1], embed_dim_per_stage=[12, 24, 48, 96],
        num_attention_heads_per_stage=[1, 1, 1, 1], window_size_per_stage=[4, 4, 4, 4], global_attention_blocks=[3],
    )
    vision = Sam2VisionConfig(backbone_config=backbone, backbone_channel_list=[96, 48, 24, 12],
                              backbone_feature_sizes=[[16, 16], [8, 8], [4, 4]], fpn_hidden_size=32)
    config = Sam2Config(
        vision_config=vision,
        prompt_encoder_config=Sam2PromptEncoderConfig(hidden_size=32, image_size=64, patch_size=16,
                                                      mask_input_channels=8),
        mask_decoder_config=Sam2MaskDecoderConfig(hidden_size=32, mlp_dim=32, num_hidden_layers=1,
                                                  num_attention_heads=2, iou_head_hidden_dim=16),
        memory_attention_hidden_size=12, memory_encoder_hidden_size=32, image_size=64, mask_downsampler_embed_dim=32,
        memory_fuser_embed_dim=32, memory_attention_num_layers=1, memory_attention_feed_forward_hidden_size=32,
    )
    torch.manual_seed(0)
    Sam2Model(config).save_pretrained(path)
    processor = Sam2Processor(image_processor=Sam2ImageProcessor(size={"height": 64, "width": 64}), target_size=64)
    processor.save_pretrained(path)
    return path


BUILDERS = {"grounding_dino": grounding_dino, "owlv2": owlv2, "sam": sam, "sam2": sam2}


@cache
def _root() -> Path:
    root = Path(tempfile.mkdtemp(prefix="autolabel-tiny-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return root


@cache
def tiny(kind: str) -> str:
    """The folder of the tiny ``kind`` checkpoint (built on first use, shared by every test of the session)."""
    return str(BUILDERS[kind](_root() / kind))


class Recorder:
    """Wraps ``owner.name`` (a method or a function attribute) to record each call's arguments; ``undo`` restores it."""

    def __init__(self, owner: object, name: str, after=None):
        self.owner, self.name, self.after = owner, name, after
        self.original = getattr(owner, name)
        self.calls: list[tuple[tuple, dict]] = []

        def wrapper(*args, **kwargs):
            self.calls.append((args, kwargs))
            out = self.original(*args, **kwargs)
            return self.after(out, *args, **kwargs) if self.after else out

        setattr(owner, name, wrapper)

    def undo(self) -> None:
        setattr(self.owner, self.name, self.original)

    def __len__(self) -> int:
        return len(self.calls)


def noise_image(width: int, height: int, seed: int = 0):
    """An RGB PIL image of noise (random models see something), ``width`` × ``height``."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def rotated_jpeg(path: Path, width: int, height: int) -> Path:
    """A JPEG stored ``width`` × ``height`` with EXIF orientation 6 (displayed rotated: ``height`` × ``width``)."""
    image = noise_image(width, height, seed=7)
    exif = image.getexif()
    exif[0x0112] = 6
    image.save(path, exif=exif, quality=90)
    return path
