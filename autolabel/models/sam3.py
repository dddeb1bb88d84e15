"""SAM 3 through transformers: every instance of a concept (``sam3``), and its tracker as a box/point segmenter
(``sam3_tracker``), both from the one ``facebook/sam3`` checkpoint.

The hub's checkpoint is a *video* checkpoint (``model_type: "sam3_video"``; ``AutoProcessor`` gives a
``Sam3VideoProcessor``, which takes no text): the image detector (``Sam3Model`` + ``Sam3Processor``) and the
tracker (``Sam3TrackerModel`` + ``Sam3TrackerProcessor``) are pulled out of it by :func:`load_sam3`, which the video
model types can reuse (``Sam3VideoModel`` / ``Sam3TrackerVideoModel`` with their processors). An image-only
``sam3`` checkpoint loads too.

Cost: the vision backbone (a 1008 px ViT, 446 M of the 0.86 B parameters) dominates. :meth:`Sam3.segment_concepts`
runs it once per image (``vision_features``, the one place images are encoded), the text encoder once per
distinct prompt (a cache that lives as long as the model), and only the detector head once per (image, prompt),
``rows_per_call`` rows per forward. Rows with the same number of exemplar boxes share a forward; text-only rows
never share one with boxed rows (the geometry encoder's tokens would change theirs). Post-processing keeps only the
kept queries' masks, upsampled into bool (:mod:`.concepts`).

One backbone for both. transformers builds the tracker's vision encoder from the checkpoint's *detector* backbone
(``detector_model.vision_encoder.backbone.*``) and its own neck (``tracker_neck.*``): the ViT is the same weights
on the same pixels (both processors are the checkpoint's one image processor), the necks differ (and the tracker
then projects two levels with its mask decoder's ``conv_s0`` / ``conv_s1``). So ``vision_features`` of both model
types is the ViT's output alone (:class:`Backbone`), what a pipeline's batch shares between the two
(:mod:`.features`: equal :meth:`~_Sam3Vision.vision_family` and :meth:`~_Sam3Vision.vision_weights`, a digest of the
backbone's tensors), and each model runs its own neck over it on every call (4 % of a backbone pass at the real
size on a CPU). The neck code mirrors transformers' ``Sam3VisionModel.forward`` and
``Sam3TrackerModel.get_image_features`` / ``get_image_embeddings``; tests/models/test_sam3_sharing.py checks it against
them, tensor for tensor.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass
from itertools import chain
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from .catalog import checkpoints_of
from .concepts import ConceptPrompt, Instances, assemble, kept, normalized_boxes, select
from .features import ImageFeatures
from .hub import CheckpointModel, load_checkpoint
from .sam import MAX_BOXES_PER_CALL, _Segmenter, _WithImageConfig

if TYPE_CHECKING:
    from PIL import Image

    from .spec import ModelSpec

#: the text SAM 3 reads for a prompt of exemplar boxes alone (what ``Sam3Processor`` fills in)
VISUAL = "visual"
#: rows (image × prompt) per detector-head forward unless the caller says otherwise (bounds activation memory)
ROWS_PER_CALL = 8
#: distinct prompts whose text features are kept (the ontology's, in practice: a few dozen)
TEXT_CACHE = 1024


#: keys of the backbone's config that say nothing about what it computes (where it was read from, by which version)
_NOT_COMPUTATION = ("_name_or_path", "transformers_version", "architectures", "dtype", "torch_dtype")


@dataclass(frozen=True)
class Backbone:
    """One image's output of SAM 3's vision backbone (the ViT before either neck): what the detector and the
    tracker of one checkpoint share."""

    hidden: Any  #: (1, tokens, width): the ViT's last hidden state (72 × 72 tokens of 1024 at 1008 px)
    size: tuple[int, int]  #: (height, width) of the model's input (the processor's square)


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


class _Sam3Vision:
    """What SAM 3's detector and tracker have in common: the vision backbone, its features, its identity."""

    model: Any
    processor: Any
    device: str
    dtype: Any
    _weights_digest: str | None = None

    def vision_features(self, images: Sequence["Image.Image"]) -> list[Backbone]:
        """The backbone's output per image, one batched forward: the one place these models encode images (every
        prompt or box of an image reuses it; a pipeline's batch shares it between stages, and between the detector
        and the tracker of one checkpoint)."""
        import torch

        pixels = self.processor.image_processor(images=list(images), return_tensors="pt")["pixel_values"]
        pixels = pixels.to(self.device, dtype=self.dtype)
        with torch.inference_mode():
            hidden = self.model.vision_encoder.backbone(pixels).last_hidden_state
        size = (int(pixels.shape[-2]), int(pixels.shape[-1]))
        return [Backbone(hidden[j : j + 1], size) for j in range(len(images))]

    def vision_family(self) -> str:
        """What :meth:`vision_features` computes, short of the weights: the backbone's class, config and attention
        kernel, the image preprocessing, dtype and device (the detector's and the tracker's of one checkpoint match)."""
        backbone = self.model.vision_encoder.backbone
        config = {k: v for k, v in backbone.config.to_dict().items() if k not in _NOT_COMPUTATION}
        return json.dumps({
            "features": f"{__name__}.Backbone",
            "tower": f"{type(backbone).__module__}.{type(backbone).__qualname__}",
            "config": config, "attention": getattr(backbone.config, "_attn_implementation", None),
            "preprocessing": self.processor.image_processor.to_dict(),
            "dtype": str(self.dtype), "device": str(self.device),
        }, sort_keys=True, default=str)

    def vision_weights(self) -> str:
        """sha256 of every parameter and buffer of the backbone (names, dtypes, shapes, bytes), computed once per
        loaded model (~3 s for the real 446 M parameters on a CPU): two models share only equal tensors."""
        if self._weights_digest is None:
            self._weights_digest = tensors_digest(self.model.vision_encoder.backbone)
        return self._weights_digest

    def _neck(self, backbones: Sequence[Backbone]) -> Any:
        """This model's neck over ``backbones`` (as one batch): ``Sam3VisionModel.forward`` after its backbone."""
        import torch
        from transformers.models.sam3.modeling_sam3 import Sam3VisionEncoderOutput

        sizes = {b.size for b in backbones}
        if len(sizes) != 1:
            raise ValueError(f"backbone outputs of different input sizes in one call: {sorted(sizes)}")
        encoder = self.model.vision_encoder
        patch = encoder.config.backbone_config.patch_size
        (height, width), = sizes
        with torch.inference_mode():
            hidden = backbones[0].hidden if len(backbones) == 1 else torch.cat([b.hidden for b in backbones])
            spatial = hidden.view(len(backbones), height // patch, width // patch, -1).permute(0, 3, 1, 2)
            fpn, position = encoder.neck(spatial)
        return Sam3VisionEncoderOutput(last_hidden_state=hidden, fpn_hidden_states=fpn,
                                       fpn_position_encoding=position)


def tensors_digest(module: Any) -> str:
    """sha256 of a module's parameters and buffers: each one's name, dtype, shape and bytes, in module order."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in chain(module.named_parameters(), module.named_buffers()):
        flat = tensor.detach().reshape(-1).contiguous()
        digest.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(flat.view(torch.uint8).cpu().numpy().data)
    return digest.hexdigest()


class Sam3(_Sam3Vision, CheckpointModel):
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
        for text in texts:
            self._text.move_to_end(text)
        out = (torch.stack([self._text[t][0] for t in texts]), torch.stack([self._text[t][1] for t in texts]))
        while len(self._text) > TEXT_CACHE:  # the least recently asked go first (never this call's)
            self._text.popitem(last=False)
        return out

    # -- concepts ------------------------------------------------------------------------------------------------
    def segment_concepts(
        self,
        images: Sequence["Image.Image"],
        prompts: Sequence[Sequence[ConceptPrompt]],
        threshold: float | None = None,
        mask_threshold: float = 0.5,
        max_instances: int | None = None,
        rows_per_call: int = ROWS_PER_CALL,
        features: ImageFeatures | None = None,
    ) -> list[Instances]:
        """Every instance of every prompt: one :class:`Instances` per image, ``prompts[i]`` being image ``i``'s.

        ``threshold`` on the final score (default :attr:`default_threshold`), ``mask_threshold`` on the mask
        probability, ``max_instances`` per prompt (the best-scoring), ``rows_per_call`` (image, prompt) rows per
        forward of the detector head (memory, not results). ``features``: the batch's backbone outputs (shared with
        the pipeline's other stages of this model, and with a ``sam3_tracker`` of the same weights); default:
        computed here, in one backbone call over the images that have prompts.
        """
        threshold = self.default_threshold if threshold is None else threshold
        if len(prompts) != len(images):
            raise ValueError(f"{len(prompts)} prompt lists for {len(images)} images")
        if rows_per_call < 1:
            raise ValueError(f"rows_per_call must be >= 1, got {rows_per_call}")
        rows = [(i, p) for i, image_prompts in enumerate(prompts) for p in range(len(image_prompts))]
        found: list[list[tuple[int, Any, Any, Any]]] = [[] for _ in images]  # per image: (prompt, its kept queries)
        if rows:
            texts = dict.fromkeys(p.text for ps in prompts for p in ps if p.text is not None)
            self.check_prompts([t for t in texts if t not in self._text])  # before the backbone runs; cached: checked
            asked = sorted({i for i, _ in rows})  # an image without prompts costs no backbone pass
            source = features if features is not None else ImageFeatures.direct(self.vision_features)
            vision = self._neck(source.get(images, asked))
            slot = {i: k for k, i in enumerate(asked)}
            for group in _groups(rows, prompts, rows_per_call):
                out = self._head(vision, slot, images, [(i, prompts[i][p]) for i, p in group])
                query_scores = out.pred_logits.float().sigmoid().cpu().numpy()
                presence = out.presence_logits.float().sigmoid().reshape(-1).cpu().numpy()
                for r, (i, p) in enumerate(group):
                    chosen = select(query_scores[r], presence[r], threshold, max_instances)
                    found[i].append((p, chosen, *kept(out, r, chosen.queries)))
                del out
        return [assemble(image.height, image.width, sorted(parts, key=lambda part: part[0]), mask_threshold)
                for image, parts in zip(images, found)]

    def _head(self, features: Any, slot: dict[int, int], images: Sequence["Image.Image"],
              rows: list[tuple[int, ConceptPrompt]]) -> Any:
        """One forward of the detector head over ``rows`` (image index, prompt), the necked backbone output reused
        (image ``i``'s is row ``slot[i]`` of ``features``)."""
        import torch
        from transformers.modeling_outputs import BaseModelOutputWithPooling
        from transformers.models.sam3.modeling_sam3 import Sam3VisionEncoderOutput

        index = [slot[i] for i, _ in rows]

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


class Sam3Tracker(_Sam3Vision, _Segmenter):
    """Model type ``sam3_tracker``: SAM 3's tracker as a box/point segmenter (stage ``segment``, serve's clicks),
    loaded from the same ``facebook/sam3`` folder (SAM 2 style: 1008 px square, three feature levels).

    Its ``vision_features`` are the backbone's alone, the detector's when both come from one checkpoint; each
    :meth:`segment` call runs the tracker's neck over them (:meth:`embeddings`)."""

    checkpoint_types = checkpoints_of("sam3_tracker")
    model_class = "Sam3TrackerModel"
    processor_class = "Sam3TrackerProcessor"

    @staticmethod
    def image_config(config: Any) -> Any:
        return tracker_config(config)

    def segment(
        self,
        images: Sequence["Image.Image"],
        boxes: Sequence[np.ndarray],
        multimask: bool = False,
        max_boxes_per_call: int = MAX_BOXES_PER_CALL,
        features: ImageFeatures | None = None,
    ) -> list[Any]:
        """:meth:`_Segmenter.segment`, its image embeddings made by the tracker's neck from the backbone outputs
        (``features``: the batch's, shared with a ``sam3`` model of the same weights; default: computed here)."""
        source = features if features is not None else ImageFeatures.direct(self.vision_features)
        return super().segment(images, boxes, multimask=multimask, max_boxes_per_call=max_boxes_per_call,
                               features=_Finished(source, self.embeddings))  # type: ignore[arg-type]

    def embeddings(self, backbones: Sequence[Backbone]) -> list[tuple[list[Any], tuple[int, int]]]:
        """Per image: its three feature levels for the mask decoder and its input size, from its backbone output;
        ``Sam3TrackerModel.get_image_features`` + ``get_image_embeddings`` after the backbone, one batch."""
        import torch

        model = self.model
        n = len(backbones)
        maps = list(self._neck(backbones).fpn_hidden_states)
        with torch.inference_mode():
            maps[0] = model.mask_decoder.conv_s0(maps[0])  # what transformers precomputes for the decoder
            maps[1] = model.mask_decoder.conv_s1(maps[1])
            maps = [level.flatten(2).permute(2, 0, 1) for level in maps]
            maps[-1] = maps[-1] + model.no_memory_embedding
            levels = [level.permute(1, 2, 0).view(n, -1, *size)
                      for level, size in zip(maps, model.backbone_feature_sizes)]
        return [([level[j : j + 1] for level in levels], backbones[j].size) for j in range(n)]

    def _upscale(self, low: Any, size: tuple[int, int], resized: tuple[int, int]) -> Any:
        (logits,) = self.processor.post_process_masks([low], [size], binarize=False)
        return logits[:, 0]


class _Finished:
    """A features source whose entries go through ``finish`` (one call over the asked images) on the way out: the
    tracker's neck over the backbone outputs that the batch shares."""

    def __init__(self, source: ImageFeatures, finish: Callable[[Sequence[Any]], list[Any]]):
        self.source, self.finish = source, finish

    def get(self, images: Sequence["Image.Image"], indices: Sequence[int], chunk: int | None = None) -> list[Any]:
        found = self.source.get(images, indices, chunk)
        return self.finish(found) if found else []
