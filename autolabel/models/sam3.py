"""SAM 3 through transformers: every instance of a concept (``sam3``), and its tracker as a box/point segmenter
(``sam3_tracker``), both from the one ``facebook/sam3`` checkpoint.

The hub's checkpoint is a *video* checkpoint (``model_type: "sam3_video"``; ``AutoProcessor`` gives a
``Sam3VideoProcessor``, which takes no text): the image detector (``Sam3Model`` + ``Sam3Processor``) and the
tracker (``Sam3TrackerModel`` + ``Sam3TrackerProcessor``) are pulled out of it by :func:`load_sam3`, which the video
model types can reuse (``Sam3VideoModel`` / ``Sam3TrackerVideoModel`` with their processors). An image-only
``sam3`` checkpoint loads too.

Cost: the vision backbone (a 1008 px ViT, most of the 0.86 B parameters) dominates. :meth:`Sam3.segment_concepts`
runs it once per image (:meth:`Sam3.vision_features`, the one place images are encoded), the text encoder once per
distinct prompt (a cache that lives as long as the model), and only the detector head once per (image, prompt),
``rows_per_call`` rows per forward. Rows with the same number of exemplar boxes share a forward; text-only rows
never share one with boxed rows (the geometry encoder's tokens would change theirs). Post-processing keeps only the
kept queries' masks, upsampled into bool (:mod:`.concepts`).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from .catalog import checkpoints_of
from .concepts import ConceptPrompt, Instances, normalized_boxes, select, upsample_into
from .hub import CheckpointModel, load_checkpoint
from .sam import _Segmenter, _WithImageConfig

if TYPE_CHECKING:
    from PIL import Image

    from ..config import ModelSpec

#: the text SAM 3 reads for a prompt of exemplar boxes alone (what ``Sam3Processor`` fills in)
VISUAL = "visual"
#: rows (image × prompt) per detector-head forward unless the caller says otherwise (bounds activation memory)
ROWS_PER_CALL = 8
#: distinct prompts whose text features are kept (the ontology's, in practice: a few dozen)
TEXT_CACHE = 1024


def detector_config(config: Any) -> Any:
    """The image detector's config (``Sam3Config``): a ``sam3_video`` config's ``detector_config``, else itself."""
    return config.detector_config if config.model_type == "sam3_video" else config


def tracker_config(config: Any) -> Any:
    """What ``Sam3TrackerModel`` is built from: a ``sam3_video`` config as is (the model takes its tracker part and
    transformers renames the shared backbone's and the tracker neck's weights), any other config unchanged."""
    return config


def load_sam3(spec: "ModelSpec", model_class: str, processor_class: str, part: Any = None,
              model_types: tuple[str, ...] | None = None) -> tuple[Any, Any, str, Any]:
    """(model, processor, device, dtype) of one part of a SAM 3 checkpoint, offline-first, one-line errors.

    ``model_class`` / ``processor_class``: transformers class names (``Sam3Model`` / ``Sam3Processor``,
    ``Sam3TrackerModel`` / ``Sam3TrackerProcessor``, ``Sam3VideoModel`` / ``Sam3VideoProcessor``, ...); ``part``
    maps the checkpoint's config to the one that model takes (default: unchanged); ``model_types``: the checkpoint
    ``model_type`` values accepted (default: what model type ``spec.type`` loads).
    """
    import transformers

    model_cls = _WithImageConfig(getattr(transformers, model_class), part or (lambda config: config))
    accepted = model_types or checkpoints_of(spec.type) or checkpoints_of("sam3")
    return load_checkpoint(spec, model_cls, getattr(transformers, processor_class), accepted)


class Sam3(CheckpointModel):
    """Model type ``sam3``: ``facebook/sam3`` (or any ``sam3`` / ``sam3_video`` checkpoint): concept prompts →
    every instance with box, mask and score."""

    checkpoint_types = checkpoints_of("sam3")
    task = "concept_segmentation"
    #: the score floor when the stage sets none: Meta's own SAM 3 image predictor's default confidence threshold
    default_threshold = 0.5
    #: SAM 3's text window: start token + prompt + end token
    max_prompt_tokens = 32

    def __init__(self, model: Any, processor: Any, spec: "ModelSpec", device: str, dtype: Any):
        super().__init__(model, processor, spec, device, dtype)
        self._text: OrderedDict[str, tuple[Any, Any]] = OrderedDict()  # prompt → (features (L, C), mask (L,))
        self.text_encoder_calls = 0  # prompts encoded (for tests and benchmarks: once per distinct prompt)

    @classmethod
    def load(cls, spec: "ModelSpec") -> "Sam3":
        model, processor, device, dtype = load_sam3(spec, "Sam3Model", "Sam3Processor", detector_config,
                                                    cls.checkpoint_types)
        return cls(model, processor, spec, device, dtype)

    # -- prompts -------------------------------------------------------------------------------------------------
    def prompt_tokens(self, text: str) -> int:
        """How many tokens SAM 3 reads for ``text`` (with its start and end tokens)."""
        return len(self.processor.tokenizer(text)["input_ids"])

    def check_prompts(self, texts: Sequence[str]) -> None:
        """A ValueError naming the first prompt longer than SAM 3's text window."""
        for text in texts:
            if (n := self.prompt_tokens(text)) > self.max_prompt_tokens:
                raise ValueError(f"prompt {text!r} is {n} tokens; SAM 3 reads at most {self.max_prompt_tokens} "
                                 "(its start and end tokens included): shorten it")

    def text_features(self, texts: Sequence[str]) -> tuple[Any, Any]:
        """(features (T, 32, C), attention mask (T, 32)) of ``texts``, each distinct text encoded once per model."""
        import torch

        new = [t for t in dict.fromkeys(texts) if t not in self._text]
        if new:
            self.check_prompts(new)
            tokens = self.processor.tokenizer(new, padding="max_length", max_length=self.max_prompt_tokens,
                                              return_tensors="pt")
            ids, mask = tokens["input_ids"].to(self.device), tokens["attention_mask"].to(self.device)
            with torch.inference_mode():
                features = self.model.get_text_features(input_ids=ids, attention_mask=mask).pooler_output
            self.text_encoder_calls += len(new)
            for k, text in enumerate(new):
                self._text[text] = (features[k], mask[k])
                while len(self._text) > TEXT_CACHE:
                    self._text.popitem(last=False)
        for text in texts:
            self._text.move_to_end(text)
        return (torch.stack([self._text[t][0] for t in texts]), torch.stack([self._text[t][1] for t in texts]))

    # -- images --------------------------------------------------------------------------------------------------
    def vision_features(self, images: Sequence["Image.Image"]) -> Any:
        """The vision backbone's output for ``images`` (one batch; row ``i`` is image ``i``).

        The one place this model encodes images: every prompt of an image reuses it (``vision_embeds=``), and a
        per-batch cache shared across stages can take its place.
        """
        import torch

        pixels = self.processor(images=list(images), return_tensors="pt")["pixel_values"]
        with torch.inference_mode():
            return self.model.get_vision_features(pixels.to(self.device, dtype=self.dtype))

    # -- concepts ------------------------------------------------------------------------------------------------
    def segment_concepts(
        self,
        images: Sequence["Image.Image"],
        prompts: Sequence[Sequence[ConceptPrompt]],
        threshold: float | None = None,
        mask_threshold: float = 0.5,
        max_instances: int | None = None,
        rows_per_call: int = ROWS_PER_CALL,
        features: Any = None,
    ) -> list[Instances]:
        """Every instance of every prompt: one :class:`Instances` per image, ``prompts[i]`` being image ``i``'s.

        ``threshold`` on the final score (default :attr:`default_threshold`), ``mask_threshold`` on the mask
        probability, ``max_instances`` per prompt (the best-scoring), ``rows_per_call`` (image, prompt) rows per
        forward of the detector head (memory, not results). ``features``: :meth:`vision_features` of ``images``
        when already computed.
        """
        import torch

        threshold = self.default_threshold if threshold is None else threshold
        if len(prompts) != len(images):
            raise ValueError(f"{len(prompts)} prompt lists for {len(images)} images")
        if rows_per_call < 1:
            raise ValueError(f"rows_per_call must be >= 1, got {rows_per_call}")
        rows = [(i, p) for i, image_prompts in enumerate(prompts) for p in range(len(image_prompts))]
        kept: list[list[tuple[int, Any]]] = [[] for _ in images]  # per image: (prompt, its kept queries' tensors)
        if rows:
            self.check_prompts(list(dict.fromkeys(p.text for ps in prompts for p in ps if p.text is not None)))
            if features is None:
                features = self.vision_features(images)
            for group in _groups(rows, prompts, rows_per_call):
                out = self._head(features, images, [(i, prompts[i][p]) for i, p in group])
                query_scores = out.pred_logits.float().sigmoid().cpu().numpy()
                presence = out.presence_logits.float().sigmoid().reshape(-1).cpu().numpy()
                for r, (i, p) in enumerate(group):
                    chosen = select(query_scores[r], presence[r], threshold, max_instances)
                    index = torch.as_tensor(chosen.queries, device=out.pred_masks.device)
                    kept[i].append((p, chosen, out.pred_boxes[r, index].float(), out.pred_masks[r, index]))
                del out
        return [_instances(image, sorted(parts, key=lambda part: part[0]), mask_threshold)
                for image, parts in zip(images, kept)]

    def _head(self, features: Any, images: Sequence["Image.Image"], rows: list[tuple[int, ConceptPrompt]]) -> Any:
        """One forward of the detector head over ``rows`` (image index, prompt), the backbone's output reused."""
        import torch
        from transformers.modeling_outputs import BaseModelOutputWithPooling
        from transformers.models.sam3.modeling_sam3 import Sam3VisionEncoderOutput

        index = [i for i, _ in rows]

        def take(levels: Sequence[Any]) -> list[Any]:
            if len(set(index)) == 1:  # one image's rows: a view, no copy of its feature maps
                return [level[index[0] : index[0] + 1].expand(len(index), *level.shape[1:]) for level in levels]
            at = torch.as_tensor(index, device=levels[0].device)
            return [level.index_select(0, at) for level in levels]

        vision = Sam3VisionEncoderOutput(fpn_hidden_states=take(features.fpn_hidden_states),
                                         fpn_position_encoding=take(features.fpn_position_encoding))
        text, mask = self.text_features([p.text if p.text is not None else VISUAL for _, p in rows])
        boxes: dict[str, Any] = {}
        if len(rows[0][1].boxes):
            norm = np.stack([normalized_boxes(p.boxes, images[i].width, images[i].height) for i, p in rows])
            labels = np.stack([p.positive.astype(np.int64) for _, p in rows])
            boxes = {"input_boxes": torch.as_tensor(norm, device=self.device, dtype=self.dtype),
                     "input_boxes_labels": torch.as_tensor(labels, device=self.device)}
        with torch.inference_mode():
            return self.model(vision_embeds=vision, text_embeds=BaseModelOutputWithPooling(pooler_output=text),
                              attention_mask=mask, **boxes)


def _groups(rows: list[tuple[int, int]], prompts: Sequence[Sequence[ConceptPrompt]],
            size: int) -> list[list[tuple[int, int]]]:
    """Rows with the same number of exemplar boxes (0: text only), image-major, ``size`` at a time."""
    by_count: dict[int, list[tuple[int, int]]] = {}
    for i, p in rows:
        by_count.setdefault(len(prompts[i][p].boxes), []).append((i, p))
    return [same[k : k + size] for same in by_count.values() for k in range(0, len(same), size)]


def _instances(image: "Image.Image", parts: list[tuple[int, Any, Any, Any]], mask_threshold: float) -> Instances:
    """One image's kept queries as :class:`Instances`: boxes in its pixels, masks upsampled into one bool array."""
    import torch

    if not parts or not sum(len(chosen.queries) for _, chosen, _, _ in parts):
        return Instances.empty(image.height, image.width)
    scale = np.array([image.width, image.height] * 2, np.float32)
    masks = np.empty((sum(len(c.queries) for _, c, _, _ in parts), image.height, image.width), dtype=bool)
    upsample_into(masks, torch.cat([low for _, _, _, low in parts]), mask_threshold)
    return Instances(
        xyxy=np.concatenate([box.cpu().numpy().reshape(-1, 4) * scale for _, _, box, _ in parts]).astype(np.float32),
        masks=masks,
        scores=np.concatenate([c.scores for _, c, _, _ in parts]),
        query_scores=np.concatenate([c.query_scores for _, c, _, _ in parts]),
        presence_scores=np.concatenate([np.full(len(c.queries), c.presence_score, np.float32) for _, c, _, _ in parts]),
        prompts=np.concatenate([np.full(len(c.queries), p, np.int64) for p, c, _, _ in parts]),
        queries=np.concatenate([c.queries for _, c, _, _ in parts]),
    )


class Sam3Tracker(_Segmenter):
    """Model type ``sam3_tracker``: SAM 3's tracker as a box/point segmenter (stage ``segment``, serve's clicks),
    loaded from the same ``facebook/sam3`` folder (SAM 2 style: 1008 px square, three feature levels)."""

    checkpoint_types = checkpoints_of("sam3_tracker")
    model_class = "Sam3TrackerModel"
    processor_class = "Sam3TrackerProcessor"

    @staticmethod
    def image_config(config: Any) -> Any:
        return tracker_config(config)

    def _resized_size(self, batch: Any, index: int) -> tuple[int, int]:
        h, w = batch["pixel_values"].shape[-2:]
        return int(h), int(w)

    def _embedding(self, embeddings: Any, index: int) -> Any:
        return [level[index : index + 1] for level in embeddings]

    def _upscale(self, low: Any, size: tuple[int, int], resized: tuple[int, int]) -> Any:
        (logits,) = self.processor.post_process_masks([low], [size], binarize=False)
        return logits[:, 0]
