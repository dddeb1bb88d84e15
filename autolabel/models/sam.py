"""SAM and SAM2 through transformers: masks for boxes, the image embedding computed once.

Per batch, the vision encoder runs once over every image that has boxes (once for every ``segment`` stage of a
pipeline's batch: the embeddings are shared, see :mod:`.features`); then, per image, the prompt encoder and
mask decoder run over its boxes, ``max_boxes_per_call`` at a time: a crowded image (hundreds of proposals) would
otherwise hold every box's decoder activations at once, and memory would grow with the box count. The decoder's
low-resolution logits are upscaled to the image's size (in chunks, to bound memory on large images) and
thresholded at 0; SAM's stability score (IoU of the masks at logit +1 and -1) is computed from the same logits,
and the model's predicted IoU is kept.

SAM 2 / 2.1 checkpoints in transformers' format are video checkpoints (``model_type: "sam2_video"``, processor
``Sam2VideoProcessor``); their image model (``Sam2Model``, the weights without the memory modules) is what boxes
need, so :class:`Sam2` builds its config from the video config's vision, prompt-encoder and mask-decoder parts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from .catalog import checkpoints_of
from .features import ImageFeatures
from .hub import CheckpointModel, load_checkpoint
from .outputs import Masks

if TYPE_CHECKING:
    from PIL import Image

    from .spec import ModelSpec

#: how many masks are upscaled to full resolution at once (float32 logits of N×H×W)
UPSCALE_CHUNK = 16
#: boxes per prompt-encoder + mask-decoder call unless the stage says otherwise (bounds memory per image)
MAX_BOXES_PER_CALL = 64
#: SAM's stability offset: logits thresholded at ±1 around the mask threshold 0
STABILITY_OFFSET = 1.0


def stability_score(logits: Any, offset: float = STABILITY_OFFSET) -> Any:
    """IoU of ``logits > +offset`` and ``logits > -offset`` per mask (the first is inside the second). 0 if both empty.

    ``logits`` is a (N, H, W) torch tensor; returns (N,). ``offset`` >= 0: an empty outer mask has an empty inner one,
    so its ratio is 0 / 1.
    """
    inner = (logits > offset).flatten(1).sum(1).float()
    outer = (logits > -offset).flatten(1).sum(1).float()
    return inner / outer.clamp(min=1)


class _Segmenter(CheckpointModel):
    """What SAM and SAM2 share; subclasses say how to slice embeddings and how to upscale logits."""

    checkpoint_types: tuple[str, ...] = ()
    model_class = ""
    processor_class = "AutoProcessor"  # a video checkpoint's AutoProcessor may not be the image model's
    task = "box_to_mask"

    @classmethod
    def load(cls, spec: "ModelSpec") -> "_Segmenter":
        import transformers

        model_cls = _WithImageConfig(getattr(transformers, cls.model_class), cls.image_config)
        processor_cls = getattr(transformers, cls.processor_class)
        model, processor, device, dtype = load_checkpoint(spec, model_cls, processor_cls, cls.checkpoint_types)
        return cls(model, processor, spec, device, dtype)

    def segment(
        self,
        images: Sequence["Image.Image"],
        boxes: Sequence[np.ndarray],
        multimask: bool = False,
        max_boxes_per_call: int = MAX_BOXES_PER_CALL,
        features: ImageFeatures | None = None,
    ) -> list[Masks]:
        """One :class:`Masks` per image, masks in the order of its ``boxes`` ((N, 4) xyxy pixels; N may be 0).

        ``multimask``: let the decoder propose three masks per box and keep the one with the highest predicted IoU
        (SAM's answer to ambiguous prompts); otherwise one mask per box. ``max_boxes_per_call``: boxes decoded per
        call; each box is decoded on its own, so the masks do not depend on it, only the peak memory does.
        ``features``: the batch's image embeddings (shared with the other stages of a pipeline); default: computed
        here, in one encoder call over the images that have boxes.
        """
        import torch

        if max_boxes_per_call < 1:
            raise ValueError(f"max_boxes_per_call must be >= 1, got {max_boxes_per_call}")
        results = [_empty(im) for im in images]
        todo = [i for i, b in enumerate(boxes) if len(b)]
        if not todo:
            return results
        source = features if features is not None else ImageFeatures.direct(self.vision_features)
        embedded = source.get(images, todo)  # once per image, for all its boxes (and, shared, for every stage)
        with torch.inference_mode():
            for i, (embedding, resized) in zip(todo, embedded):
                image = images[i]
                scale = np.array([resized[1] / image.width, resized[0] / image.height] * 2, dtype=np.float32)
                prompts = np.asarray(boxes[i], np.float32).reshape(-1, 4) * scale
                parts = [
                    self._decode(embedding, prompts[start : start + max_boxes_per_call], multimask, image, resized)
                    for start in range(0, len(prompts), max_boxes_per_call)
                ]
                results[i] = Masks(
                    masks=np.concatenate([p[0] for p in parts]),
                    predicted_iou=np.concatenate([p[1] for p in parts]),  # float32: _decode's .float()
                    stability_score=np.concatenate([p[2] for p in parts]),
                )
        return results

    def vision_features(self, images: Sequence["Image.Image"]) -> list[tuple[Any, tuple[int, int]]]:
        """Per image, its embedding (SAM: a (1, C, h, w) tensor; SAM2: one per feature level) and the model's input
        frame (height, width) before padding: one encoder call for all. What :mod:`.features` shares."""
        import torch

        batch = self.processor(images=list(images), return_tensors="pt")
        pixels = batch["pixel_values"].to(self.device, dtype=self.dtype)
        with torch.inference_mode():
            embeddings = self.model.get_image_embeddings(pixels)
        return [(self._embedding(embeddings, j), self._resized_size(batch, j)) for j in range(len(images))]

    def _decode(
        self, embedding: Any, prompts: np.ndarray, multimask: bool, image: "Image.Image", resized: tuple[int, int]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks, predicted IoU and stability of one call's boxes (model-frame xyxy), at the image's size."""
        import torch

        prompt = torch.as_tensor(prompts, device=self.device)[None]
        out = self.model(image_embeddings=embedding, input_boxes=prompt.to(self.dtype), multimask_output=multimask)
        low, iou = out.pred_masks[0].float(), out.iou_scores[0].float()  # (N, K, h, w), (N, K)
        best = iou.argmax(-1)
        rows = torch.arange(len(best), device=best.device)
        low, iou = low[rows, best][:, None], iou[rows, best]  # (N, 1, h, w), (N,)
        masks, stability = [], []
        for start in range(0, len(low), UPSCALE_CHUNK):
            logits = self._upscale(low[start : start + UPSCALE_CHUNK], (image.height, image.width), resized)
            masks.append((logits > 0).cpu().numpy())
            stability.append(stability_score(logits).cpu().numpy())
        return np.concatenate(masks), iou.cpu().numpy(), np.concatenate(stability)

    # -- what differs between SAM and SAM2
    @staticmethod
    def image_config(config: Any) -> Any:
        """The config of the image model to build from a checkpoint's config (itself, unless a subclass says)."""
        return config

    def _resized_size(self, batch: Any, index: int) -> tuple[int, int]:
        raise NotImplementedError

    def _embedding(self, embeddings: Any, index: int) -> Any:
        raise NotImplementedError

    def _upscale(self, low: Any, size: tuple[int, int], resized: tuple[int, int]) -> Any:
        raise NotImplementedError


class Sam(_Segmenter):
    """Model type ``sam``: checkpoints such as ``facebook/sam-vit-base`` / ``-large`` / ``-huge``.

    SAM resizes the longer side to 1024 and pads: boxes scale by the resize, masks are cropped out of the padding.
    """

    checkpoint_types = checkpoints_of("sam")
    model_class = "SamModel"

    def _resized_size(self, batch: Any, index: int) -> tuple[int, int]:
        h, w = (int(v) for v in batch["reshaped_input_sizes"][index])
        return h, w

    def _embedding(self, embeddings: Any, index: int) -> Any:
        return embeddings[index : index + 1]

    def _upscale(self, low: Any, size: tuple[int, int], resized: tuple[int, int]) -> Any:
        (logits,) = self.processor.post_process_masks([low], [size], [resized], binarize=False)
        return logits[:, 0]


class Sam2(_Segmenter):
    """Model type ``sam2``: checkpoints such as ``facebook/sam2.1-hiera-tiny`` / ``-small`` / ``-base-plus``.

    SAM2 resizes to a square without padding: boxes scale per axis, masks resize straight back.
    The hub's checkpoints (``-large`` too) are ``sam2_video`` ones: their image model is loaded; a ``sam2``
    image-model checkpoint loads as it is.
    """

    checkpoint_types = checkpoints_of("sam2")
    model_class = "Sam2Model"

    @staticmethod
    def image_config(config: Any) -> Any:
        """A ``Sam2Config`` from a ``Sam2VideoConfig``'s image parts; ``Sam2Model`` then skips the memory weights."""
        if config.model_type != "sam2_video":
            return config
        from transformers import Sam2Config

        return Sam2Config(
            vision_config=config.vision_config.to_dict(),
            prompt_encoder_config=config.prompt_encoder_config.to_dict(),
            mask_decoder_config=config.mask_decoder_config.to_dict(),
            initializer_range=config.initializer_range,
        )

    def _resized_size(self, batch: Any, index: int) -> tuple[int, int]:
        h, w = batch["pixel_values"].shape[2:]  # (B, C, H, W)
        return int(h), int(w)

    def _embedding(self, embeddings: Any, index: int) -> Any:
        return [level[index : index + 1] for level in embeddings]  # one tensor per feature level

    def _upscale(self, low: Any, size: tuple[int, int], resized: tuple[int, int]) -> Any:
        (logits,) = self.processor.post_process_masks([low], [size], binarize=False)
        return logits[:, 0]


class _WithImageConfig:
    """``model_cls.from_pretrained`` with the checkpoint's config turned into its image model's (``image_config``)."""

    def __init__(self, model_cls: Any, image_config: Any):
        self.model_cls, self.image_config = model_cls, image_config

    def from_pretrained(self, source: str, config: Any, **kwargs: Any) -> Any:
        return self.model_cls.from_pretrained(source, config=self.image_config(config), **kwargs)


def _empty(image: "Image.Image") -> Masks:
    return Masks(
        masks=np.zeros((0, image.height, image.width), dtype=bool),
        predicted_iou=np.zeros(0, np.float32),
        stability_score=np.zeros(0, np.float32),
    )
