"""Grounding DINO and MM-Grounding-DINO through transformers: every prompt in one forward pass per batch.

The prompts are joined into one caption (``"person. forklift. pallet."``) — the form the model was trained on,
where each phrase attends only to itself — so one pass scores every box against every prompt (autodistill runs
one pass per class). The model scores each box against each *token*; a prompt's score for a box is the highest
probability among its tokens, the box takes the prompt that scores highest, and that score is its confidence.
This is the official box score (the maximum token probability) restricted to the prompts' tokens, so separators
and special tokens never label a box, and a multi-word prompt ("traffic light") is one label, not the decoded
tokens that happened to pass a threshold ("light").

Captions longer than the model's text window (256 tokens) are split into as few passes as fit.
Boxes are predicted relative to each image's own extent, so they scale by the image's width and height.

Images of one resized size share a pass; each size gets its own. In a mixed batch the processor pads every image to
the largest, and the padding is masked out of the transformer but not out of the Swin backbone, whose windows mix
it into the features near the image's edge: an image's boxes would then depend on which images share its batch
(seen on the tiny test model: two of ten boxes change). One pass per size keeps labels independent of the batch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np

from .catalog import checkpoints_of
from .hub import CheckpointModel, load_checkpoint, to_device
from .outputs import Boxes, clip_boxes, cxcywh_to_xyxy

if TYPE_CHECKING:
    from PIL import Image

    from .spec import ModelSpec


def caption(prompts: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    """The caption Grounding DINO reads (lower case, ``". "``-joined, ending in ``"."``) and each prompt's char span.

    >>> caption(["Person", "traffic light"])
    ('person. traffic light.', [(0, 6), (8, 21)])
    """
    text, spans = "", []
    for prompt in prompts:
        start = len(text)
        text += " ".join(prompt.lower().split())
        spans.append((start, len(text)))
        text += ". "
    return text.rstrip(), spans


def same_size_groups(pixel_mask: np.ndarray) -> list[tuple[np.ndarray, int, int]]:
    """``(rows, height, width)`` per resized size: the batch rows whose unpadded extent (``pixel_mask``) it is.

    >>> mask = np.zeros((3, 4, 4), bool); mask[0, :2, :3] = mask[1] = mask[2, :2, :3] = True
    >>> [(rows.tolist(), h, w) for rows, h, w in same_size_groups(mask)]
    [([0, 2], 2, 3), ([1], 4, 4)]
    """
    mask = np.asarray(pixel_mask, dtype=bool)
    sizes = [(int(m.any(1).sum()), int(m.any(0).sum())) for m in mask]
    return [(np.flatnonzero([s == size for s in sizes]), *size) for size in dict.fromkeys(sizes)]


def token_spans(offsets: np.ndarray, spans: Sequence[tuple[int, int]]) -> np.ndarray:
    """(P, L) bool: token ``t`` belongs to prompt ``p`` when their character ranges overlap.

    ``offsets`` (L, 2) are the tokenizer's character offsets; special tokens have empty ranges and belong to none.
    """
    offsets = np.asarray(offsets).reshape(-1, 2)
    start, end = offsets[:, 0], offsets[:, 1]
    return np.stack([(start < pe) & (end > ps) & (end > start) for ps, pe in spans]).reshape(len(spans), len(offsets))


class GroundingDino(CheckpointModel):
    """Model type ``grounding_dino``: checkpoints such as ``IDEA-Research/grounding-dino-tiny`` or
    ``openmmlab-community/mm_grounding_dino_tiny_o365v1_goldg_v3det`` (transformers picks the class from the config)."""

    checkpoint_types = checkpoints_of("grounding_dino")
    default_box_threshold = 0.35  # Grounding DINO's published defaults
    default_text_threshold = 0.25
    task = "open_vocabulary_detection"

    @classmethod
    def load(cls, spec: "ModelSpec") -> "GroundingDino":
        from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

        model, processor, device, dtype = load_checkpoint(
            spec, AutoModelForZeroShotObjectDetection, AutoProcessor, cls.checkpoint_types
        )
        return cls(model, processor, spec, device, dtype)

    @property
    def max_text_len(self) -> int:
        return int(getattr(self.model.config, "max_text_len", 256))

    def prompt_chunks(self, prompts: Sequence[str]) -> Iterator[tuple[int, list[str]]]:
        """``(offset, prompts)`` groups whose caption fits the text window ([CLS] + tokens + [SEP])."""
        tokenizer = self.processor.tokenizer
        budget = self.max_text_len - 2
        chunk: list[str] = []
        used, offset = 0, 0
        for prompt in prompts:
            cost = len(tokenizer(caption([prompt])[0], add_special_tokens=False)["input_ids"])
            if cost > budget:
                raise ValueError(f"prompt {prompt!r} is {cost} tokens; Grounding DINO reads at most {budget}")
            if chunk and used + cost > budget:
                yield offset, chunk
                offset, chunk, used = offset + len(chunk), [], 0
            chunk.append(prompt)
            used += cost
        if chunk:
            yield offset, chunk

    def detect(
        self,
        images: Sequence["Image.Image"],
        prompts: Sequence[str],
        box_threshold: float | None = None,
        text_threshold: float | None = None,
    ) -> list[Boxes]:
        """Boxes per image whose best prompt scores above both thresholds; ``labels`` index ``prompts``."""
        import torch

        box_threshold = self.default_box_threshold if box_threshold is None else box_threshold
        text_threshold = self.default_text_threshold if text_threshold is None else text_threshold
        if not images:
            return []
        processed = self.processor.image_processor(list(images), return_tensors="pt")
        sizes = np.array([(im.width, im.height, im.width, im.height) for im in images], dtype=np.float32)
        parts: list[list[Boxes]] = [[] for _ in images]
        for offset, chunk in self.prompt_chunks(prompts):
            text, spans = caption(chunk)
            for rows, height, width in same_size_groups(processed["pixel_mask"].numpy()):
                index = torch.as_tensor(rows)
                pixels = {  # the group alone, as the processor would have padded it: not at all
                    "pixel_values": processed["pixel_values"][index, :, :height, :width],
                    "pixel_mask": processed["pixel_mask"][index, :height, :width],
                }
                tokens = self.processor.tokenizer(
                    [text] * len(rows), return_tensors="pt", padding=True, return_token_type_ids=True,
                    return_offsets_mapping=True,
                )
                owner = token_spans(tokens.pop("offset_mapping")[0].numpy(), spans)
                owner = torch.as_tensor(owner, device=self.device)
                with torch.inference_mode():
                    out = self.model(**to_device(pixels, self.device, self.dtype),
                                     **to_device(tokens, self.device, self.dtype))
                probs = out.logits.float().sigmoid()[:, :, : owner.shape[1]]  # (B, Q, L); -inf padding → 0
                per_prompt = torch.stack([torch.where(row, probs, 0.0).amax(-1) for row in owner], dim=-1)  # (B,Q,P)
                scores, labels = per_prompt.max(-1)
                keep = (scores > box_threshold) & (scores > text_threshold)
                boxes = cxcywh_to_xyxy(out.pred_boxes.float().cpu().numpy()) * sizes[rows][:, None, :]
                scores, labels, keep = scores.cpu().numpy(), labels.cpu().numpy(), keep.cpu().numpy()
                for j, i in enumerate(rows):
                    k, image = keep[j], images[i]
                    parts[i].append(
                        Boxes(clip_boxes(boxes[j][k], image.width, image.height), scores[j][k].astype(np.float32),
                              labels[j][k].astype(np.int64) + offset)
                    )
        return [Boxes.concat(p).with_area() for p in parts]

