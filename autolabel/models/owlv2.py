"""OWLv2 through transformers: every prompt as a text query of one forward pass per batch.

OWLv2 scores each of its patch boxes against each query; a box takes its best query (sigmoid of the logit, the
model's own score). Its processor pads every image to a square (bottom and right) before resizing, so predicted
boxes are relative to that square: they scale by the image's longer side on both axes, then are clipped to the
image (a box may reach into the padding).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from .catalog import checkpoints_of
from .hub import CheckpointModel, load_checkpoint, to_device
from .outputs import Boxes, clip_boxes, cxcywh_to_xyxy

if TYPE_CHECKING:
    from PIL import Image

    from .spec import ModelSpec


class Owlv2(CheckpointModel):
    """Model type ``owlv2``: checkpoints such as ``google/owlv2-base-patch16-ensemble``."""

    checkpoint_types = checkpoints_of("owlv2")
    default_box_threshold = 0.1  # OWL-ST's keep threshold; the transformers default too
    default_text_threshold = None  # one score per box: no text_threshold
    task = "open_vocabulary_detection"

    @classmethod
    def load(cls, spec: "ModelSpec") -> "Owlv2":
        from transformers import AutoProcessor, Owlv2ForObjectDetection

        model, processor, device, dtype = load_checkpoint(
            spec, Owlv2ForObjectDetection, AutoProcessor, cls.checkpoint_types
        )
        return cls(model, processor, spec, device, dtype)

    def detect(
        self,
        images: Sequence["Image.Image"],
        prompts: Sequence[str],
        box_threshold: float | None = None,
        text_threshold: float | None = None,
    ) -> list[Boxes]:
        """Boxes per image whose best query scores above ``box_threshold``; ``labels`` index ``prompts``."""
        import torch

        box_threshold = self.default_box_threshold if box_threshold is None else box_threshold
        if not images:
            return []
        length = int(self.model.config.text_config.max_position_embeddings)  # 16: longer prompts are cut
        batch = self.processor(
            text=[list(prompts)] * len(images), images=list(images), return_tensors="pt",
            padding="max_length", truncation=True, max_length=length,
        )
        with torch.inference_mode():
            out = self.model(**to_device(batch, self.device, self.dtype))
        scores, labels = out.logits.float().sigmoid().max(-1)  # (B, patches)
        side = np.array([max(im.width, im.height) for im in images], dtype=np.float32)[:, None, None]
        boxes = cxcywh_to_xyxy(out.pred_boxes.float().cpu().numpy()) * side  # the padded square's pixels
        scores, labels = scores.cpu().numpy(), labels.cpu().numpy()
        results = []
        for i, image in enumerate(images):
            k = scores[i] > box_threshold
            found = Boxes(clip_boxes(boxes[i][k], image.width, image.height), scores[i][k].astype(np.float32),
                          labels[i][k].astype(np.int64))
            results.append(found.with_area())
        return results
