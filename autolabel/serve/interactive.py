"""Smart-tool clicks → SAM / SAM 2 masks, the image embedding computed once per image.

SAM's cost is almost all in the vision encoder; the prompt encoder and mask decoder are tiny. An annotator clicks
several times on one image, so each image's embedding is kept (an LRU keyed by content hash) and every further
click runs only the decoder. Works on the loaded segmenter's public parts (its transformers ``model`` and
``processor``, ``device``, ``dtype``), as :mod:`autolabel.models.sam` loads them.

Not thread-safe by design: the backend runs all model work on one queue (see :mod:`autolabel.serve.backend`).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from .protocol import Prompt


@dataclass
class Embedded:
    """One image's embedding and the sizes needed to map prompts in and masks out."""

    embedding: Any  # SAM: a (1, C, h, w) tensor; SAM 2: one tensor per feature level
    size: tuple[int, int]  # the image's (height, width)
    resized: tuple[int, int]  # the model's input frame (height, width) before padding


def model_prompt(entry: Embedded, prompt: Prompt) -> dict[str, np.ndarray]:
    """The prompt in the model's input frame: points and box scaled from the image's pixels by the resize the
    processor applied (SAM: longest side to its size, aspect kept; SAM 2: both sides to its square), as the
    processor's own ``input_points`` / ``input_boxes`` handling does (tests/serve/test_serve_units.py checks it)."""
    (height, width), (rh, rw) = entry.size, entry.resized
    scale = np.array([rw / width, rh / height], dtype=np.float32)
    out: dict[str, np.ndarray] = {}
    if prompt.points:
        out["input_points"] = np.asarray(prompt.points, np.float32) * scale
        out["input_labels"] = np.asarray(prompt.point_labels, np.int64)
    if prompt.box is not None:
        out["input_boxes"] = np.asarray(prompt.box, np.float32) * np.concatenate([scale, scale])
    return out


class Interactive:
    """Masks for clicks and boxes with a per-image embedding cache of ``cache_size`` images."""

    def __init__(self, segmenter: Any, cache_size: int = 16):
        from transformers import SamModel

        self.segmenter = segmenter
        self.model, self.processor = segmenter.model, segmenter.processor
        self.is_sam = isinstance(self.model, SamModel)  # else SAM 2 (resizes to a square, no padding)
        self.cache: OrderedDict[str, Embedded] = OrderedDict()
        self.cache_size = max(0, cache_size)
        self.encoder_calls = 0  # vision-encoder runs (for /health and the tests)

    def embed(self, key: str, image: Any) -> Embedded:
        """The embedding of ``image`` (a PIL RGB image whose content hash is ``key``), from the cache if there."""
        import torch

        if key in self.cache:
            self.cache.move_to_end(key)
            return self.cache[key]
        batch = self.processor(images=[image], return_tensors="pt")
        pixels = batch["pixel_values"].to(self.segmenter.device, dtype=self.segmenter.dtype)
        with torch.inference_mode():
            embedding = self.model.get_image_embeddings(pixels)
        self.encoder_calls += 1
        if self.is_sam:
            resized = tuple(int(v) for v in batch["reshaped_input_sizes"][0])
        else:
            resized = tuple(int(v) for v in pixels.shape[-2:])
        entry = Embedded(embedding, (image.height, image.width), resized)  # type: ignore[arg-type]
        if self.cache_size:
            self.cache[key] = entry
            while len(self.cache) > self.cache_size:
                self.cache.popitem(last=False)
        return entry

    def mask(self, key: str, image: Any, prompt: Prompt) -> tuple[np.ndarray, float]:
        """The best mask ((H, W) bool) for the prompt and the model's predicted IoU for it.

        One click alone is ambiguous (a part or the whole?): the decoder proposes three masks and the one with
        the highest predicted IoU is kept; with more clicks or a box, one mask.
        """
        import torch

        entry = self.embed(key, image)
        device, dtype = self.segmenter.device, self.segmenter.dtype
        kwargs: dict[str, Any] = {}
        for name, array in model_prompt(entry, prompt).items():
            kind = torch.long if name == "input_labels" else dtype
            kwargs[name] = torch.as_tensor(array, device=device, dtype=kind)[None, None]
        multimask = len(prompt.points) == 1 and prompt.box is None
        embedding = entry.embedding
        with torch.inference_mode():
            out = self.model(image_embeddings=embedding, multimask_output=multimask, **kwargs)
            low, iou = out.pred_masks[0, 0].float(), out.iou_scores[0, 0].float()  # (K, h, w), (K,)
            best = int(iou.argmax())
            logits = self._upscale(low[best][None, None], entry)
        return (logits[0, 0] > 0).cpu().numpy(), float(iou[best])

    def _upscale(self, low: Any, entry: Embedded) -> Any:
        """Low-resolution logits (1, 1, h, w) → the image's size (SAM also crops its padding away)."""
        if self.is_sam:
            (logits,) = self.processor.post_process_masks([low], [entry.size], [entry.resized], binarize=False)
        else:
            (logits,) = self.processor.post_process_masks([low], [entry.size], binarize=False)
        return logits
