"""Florence-2 through transformers' own ``Florence2ForConditionalGeneration`` (never ``trust_remote_code``).

One model, every task: it answers a task token (``<OD>``, ``<CAPTION>``, ...) with text, boxes written as
quantized ``<loc_K>`` tokens, which its processor parses. This adapter adds what a labeling job needs:

* **Batches.** Many images per ``generate``; tasks asked once per (image, prompt) — open-vocabulary detection over
  every prompt, a region task over every box — run the vision tower once per *image* and the text encoder and
  decoder once per row (``encoder_outputs`` handed to ``generate``, built the way the model's own forward builds
  them), in chunks of ``max_rows`` rows. In a pipeline the image features are shared by every Florence-2 stage of
  a batch (:mod:`.features`): seven tasks about an image cost one vision pass.
* **Token probabilities, cheaply.** A logits processor keeps each step's top few log-probabilities (renormalized
  over what the other processors left), enough to find the chosen token's probability after greedy *and* beam
  search (a beam's next token is among its top ``2 × num_beams``); ``beam_indices`` say which beam each kept token
  came from. This is what ``compute_transition_scores`` gives, without holding the full ``steps × rows × vocab``
  scores (gigabytes at 1024 new tokens).
* **Scores per box.** :mod:`.florence2_scores` finds which tokens wrote each box, quad or polygon; the
  processor's own parse gives the coordinates (so they are exactly transformers').

Nothing heavy is imported at module level: validating a pipeline imports this module for :data:`TASKS`.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence, get_args

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import ModelLoadError
from .contract import accepts
from .features import ImageFeatures
from .florence2_scores import Located, ScoreMethod, align, geometric_mean, instance_score, locate
from .hub import CheckpointModel, config_dict, from_pretrained, wrong_type_message

if TYPE_CHECKING:
    from PIL import Image

    from ..config import ModelSpec

log = logging.getLogger(__name__)

#: the one table of Florence-2 tasks: stage ``task:`` → (task token, how it is asked and what it gives).
#: Kinds: ``boxes`` / ``quads`` one answer with shapes per image; ``prompted`` one per (image, prompt);
#: ``region`` one per box of earlier stages; ``text`` one image-level text per image
TASK_TABLE: dict[str, tuple[str, str]] = {
    "proposals": ("<REGION_PROPOSAL>", "boxes"),
    "od": ("<OD>", "boxes"),
    "dense_caption": ("<DENSE_REGION_CAPTION>", "boxes"),
    "grounding": ("<CAPTION_TO_PHRASE_GROUNDING>", "boxes"),
    "ovd": ("<OPEN_VOCABULARY_DETECTION>", "prompted"),
    "res": ("<REFERRING_EXPRESSION_SEGMENTATION>", "prompted"),
    "region_segmentation": ("<REGION_TO_SEGMENTATION>", "region"),
    "region_category": ("<REGION_TO_CATEGORY>", "region"),
    "region_description": ("<REGION_TO_DESCRIPTION>", "region"),
    "region_ocr": ("<REGION_TO_OCR>", "region"),
    "caption": ("<CAPTION>", "text"),
    "detailed_caption": ("<DETAILED_CAPTION>", "text"),
    "more_detailed_caption": ("<MORE_DETAILED_CAPTION>", "text"),
    "ocr": ("<OCR>", "text"),
    "ocr_regions": ("<OCR_WITH_REGION>", "quads"),
}
#: stage ``task:`` → Florence-2 task token
TASKS: dict[str, str] = {task: token for task, (token, _) in TASK_TABLE.items()}

#: generation settings unless the model or the stage says otherwise (Microsoft's examples use these)
GENERATION_DEFAULTS: dict[str, Any] = {"max_new_tokens": 1024, "num_beams": 3}

class Generation(BaseModel):
    """The generation settings a pipeline may set (``generation:`` of a Florence-2 model and of its stages).

    Sampling is left out: labels must be reproducible. Strict: ``num_beams: true`` or ``"3"`` is an error, not
    a silent conversion. Pipelines keep the settings as written (a dict, so the cache keys stay as they were);
    this model checks them, :func:`generation_problems` words its errors.
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    # ``default=None`` only marks a key as optional: a key given as null is an error (defaults are not validated)
    max_new_tokens: int = Field(default=None, ge=1)
    min_new_tokens: int = Field(default=None, ge=0)
    num_beams: int = Field(default=None, ge=1)
    early_stopping: bool | str = None  # True, False or "never", as transformers takes it
    length_penalty: int | float = None
    no_repeat_ngram_size: int = Field(default=None, ge=0)
    repetition_penalty: int | float = None
    use_cache: bool = None

#: rows (image × prompt, or boxes) per ``generate`` call unless the stage says otherwise
MAX_ROWS = 64


def generation_problems(settings: dict[str, Any]) -> list[str]:
    """One line per invalid generation setting (``key: problem``), from :class:`Generation`; empty when all are fine.

    >>> generation_problems({"num_beams": 0, "max_new_tokens": 20})
    ['num_beams: must be a whole number >= 1 (got 0)']
    """
    try:
        Generation.model_validate(settings)
    except ValidationError as err:
        return list(dict.fromkeys(_generation_problem(str(e["loc"][0]), e) for e in err.errors()))
    return []


def _generation_problem(key: str, error: Any) -> str:
    """The line for one pydantic error of :class:`Generation`, worded from the field's declared type."""
    known = ", ".join(Generation.model_fields)
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key (known: {known}; there is no sampling: labels must be reproducible)"
    field, value = Generation.model_fields[key], error.get("input")
    kinds = get_args(field.annotation) or (field.annotation,)
    if kinds == (int,):
        least = next((m.ge for m in field.metadata if getattr(m, "ge", None) is not None), 0)
        return f"{key}: must be a whole number >= {least} (got {value!r})"
    return f"{key}: expected {' or '.join(t.__name__ for t in kinds)} (got {value!r})"


@dataclass
class Generated:
    """One generated answer: its token ids (no start, end or padding tokens) and each one's log-probability."""

    ids: np.ndarray
    logprobs: np.ndarray
    finished: bool  # ended with </s>; False when max_new_tokens cut it


@dataclass
class Answer:
    """One answer parsed: the processor's result and, per instance of it, the tokens that wrote it."""

    task: str  # the task token, e.g. "<OD>"
    text: str  # the generated text
    result: Any  # ``processor.post_process_generation(...)[task]``: a dict of lists, or a string
    instances: list[Located] | None  # one per result instance, same order; None when they could not be aligned
    logprobs: np.ndarray
    finished: bool

    def scores(self, method: ScoreMethod = "locations") -> np.ndarray:
        """One confidence per instance (NaN for all when the tokens could not be aligned with the result)."""
        if self.instances is None:
            return np.full(_count(self.result), np.nan, dtype=np.float32)
        return np.array([instance_score(i, self.logprobs, method) for i in self.instances], dtype=np.float32)

    def text_score(self) -> float:
        """The answer text's confidence: geometric mean of its text tokens' probabilities (NaN if none)."""
        if not self.instances:
            return float("nan")
        return geometric_mean(self.logprobs, self.instances[0].label)


def _count(result: Any) -> int:
    """How many instances a parsed result holds (1 for text)."""
    if isinstance(result, dict):
        return sum(len(result[key]) for key in ("bboxes", "quad_boxes", "polygons") if key in result)
    return 1


class Florence2(CheckpointModel):
    """Model type ``florence2``: ``florence-community/Florence-2-base`` (0.23B), ``-large`` (0.77B), their ``-ft``
    variants, or any folder with a checkpoint in transformers' native Florence-2 format."""

    def __init__(self, model: Any, processor: Any, spec: "ModelSpec", device: str, dtype: Any):
        super().__init__(model, processor, spec, device, dtype)
        self._prompt_cache: dict[str, list[int]] = {}

    @classmethod
    def load(cls, spec: "ModelSpec") -> "Florence2":
        import torch  # noqa: F401 — fail here, not mid-run, when torch is missing
        from transformers import AutoConfig, AutoProcessor, Florence2ForConditionalGeneration

        from ..train import lineage, loading  # what `autolabel train` wrote: an adapter, and the lineage of either
        from .pool import pick_device, pick_dtype

        if lineage.is_adapter(spec.id):
            return loading.load_adapter(cls, spec)

        problems = generation_problems(spec.generation)
        if problems:
            raise ModelLoadError(f"model {spec.id!r} (florence2): generation.{problems[0]}")
        raw = config_dict(spec)
        if raw.get("auto_map"):  # before any class is built: transformers would half-load it and fail obscurely
            raise ModelLoadError(remote_code_message(spec, raw, "its config.json has auto_map"))
        config = from_pretrained(AutoConfig, spec)
        if config.model_type != "florence2":
            raise ModelLoadError(wrong_type_message(spec, config.model_type, ("florence2",)))
        device = pick_device(spec.device)
        dtype = pick_dtype(spec.dtype, device)
        try:
            processor = from_pretrained(AutoProcessor, spec)
        except AttributeError as err:  # a tokenizer without the <image> token: the remote-code layout's
            if "image_token" in str(err):
                raise ModelLoadError(remote_code_message(spec, raw, "its tokenizer has no <image> token")) from None
            raise
        if not hasattr(processor, "post_process_generation"):
            raise ModelLoadError(
                f"model {spec.id!r} (florence2): its processor is a {type(processor).__name__}, not a "
                f"Florence2Processor (use a checkpoint in transformers' native format, e.g. "
                f"florence-community/Florence-2-base)"
            )
        quiet_cleanup(processor.tokenizer)
        kwargs: dict[str, Any] = {"config": config, "dtype": dtype, "output_loading_info": True}
        try:
            model, info = from_pretrained(Florence2ForConditionalGeneration, spec, attn_implementation="sdpa", **kwargs)
        except (ValueError, ImportError):  # this build or checkpoint has no SDPA path: the default attention
            model, info = from_pretrained(Florence2ForConditionalGeneration, spec, **kwargs)
        _check_weights(spec, model, sorted(info.get("missing_keys") or []))
        model = model.to(device).eval()
        if spec.compile:
            model.compile()  # in place: generate() calls the compiled forward at every step
        return loading.attach(cls(model, processor, spec, device, dtype))

    # -- prompts
    def region_prompts(self, xyxy: np.ndarray, size: tuple[int, int]) -> list[str]:
        """Boxes ((N, 4) pixels of an image of ``size`` = (W, H)) as the four location tokens region tasks read."""
        import torch

        boxes = torch.as_tensor(np.asarray(xyxy, dtype=np.float32).reshape(-1, 4))
        bins = self.processor.post_processor.quantize(boxes, size).tolist()
        return ["".join(f"<loc_{int(b)}>" for b in row) for row in bins]

    def encoder_ids(self, prompts: Sequence[str]) -> list[list[int]]:
        """Each prompt's encoder input ids: image placeholders, ``<s>``, the task's question, ``</s>``.

        The same ids ``processor(text=..., images=...)`` makes (the processor rewrites task tokens into questions),
        without preprocessing an image per prompt.
        """
        todo = [p for p in dict.fromkeys(prompts) if p not in self._prompt_cache]
        if todo:
            tok = self.processor.tokenizer
            head = [self.processor.image_token_id] * self.processor.num_image_tokens + [tok.bos_token_id]
            for prompt, ids in zip(todo, self.processor(text=todo)["input_ids"]):
                self._prompt_cache[prompt] = head + list(ids) + [tok.eos_token_id]
            if len(self._prompt_cache) > 4096:  # region prompts are one per box: keep the cache bounded
                self._prompt_cache = {p: self._prompt_cache[p] for p in prompts}
        return [self._prompt_cache[p] for p in prompts]

    # -- generation
    def settings(self, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """Generation settings: the defaults, then the model's ``generation:``, then the stage's."""
        return {**GENERATION_DEFAULTS, **self.spec.generation, **(overrides or {})}

    def run(
        self,
        task: str,
        images: Sequence["Image.Image"],
        rows: Sequence[tuple[int, str]] | None = None,
        generation: dict[str, Any] | None = None,
        max_rows: int = MAX_ROWS,
        features: ImageFeatures | None = None,
    ) -> list[Answer]:
        """Ask ``task`` (a task token) once per row ``(image index, text input)``; default: once per image.

        Each answer is parsed in the frame of its image (``image.size``): coordinates are pixels of that image.
        ``features``: the batch's image features (shared with the other stages of a pipeline); default: computed here.
        """
        rows = [(i, "") for i in range(len(images))] if rows is None else list(rows)
        if not rows:
            return []
        shared = {"features": features} if features is not None and accepts(self.generate, "features") else {}
        generated = self.generate(images, [i for i, _ in rows], [task + text for _, text in rows], generation,
                                  max_rows, **shared)
        return [self.answer(task, g, images[i].size) for g, (i, _) in zip(generated, rows)]

    def generate(
        self,
        images: Sequence["Image.Image"],
        image_index: Sequence[int],
        prompts: Sequence[str],
        generation: dict[str, Any] | None = None,
        max_rows: int = MAX_ROWS,
        features: ImageFeatures | None = None,
    ) -> list[Generated]:
        """An answer per row: prompt ``prompts[r]`` about ``images[image_index[r]]``, ``max_rows`` rows at a time.

        The vision tower runs once per image not in ``features`` yet (``max_rows`` images at a time), never per row,
        decoding step or beam: ``generate`` gets the encoder's output, which beam search only expands.
        """
        import torch

        settings = self.settings(generation)
        used = sorted(set(image_index))
        source = features if features is not None else ImageFeatures.direct(self.vision_features)
        per_image = dict(zip(used, source.get(images, used, chunk=max_rows)))
        ids = self.encoder_ids(prompts)
        out: list[Generated] = []
        for start in range(0, len(prompts), max_rows):
            chunk = range(start, min(start + max_rows, len(prompts)))
            rows_features = torch.stack([per_image[image_index[r]] for r in chunk])
            out.extend(self._generate_rows([ids[r] for r in chunk], rows_features, settings))
        return out

    def vision_features(self, images: Sequence["Image.Image"]) -> list[Any]:
        """Per image, what the vision tower and its projection make of it: a (tokens, width) tensor on the model's
        device (577 × 768 for Florence-2-base at 768²). What :mod:`.features` shares between stages."""
        import torch

        with torch.inference_mode():
            return list(self.image_features(images).unbind(0))

    def image_features(self, images: Sequence["Image.Image"]) -> Any:
        """The images' features as one (images, tokens, width) tensor: the model's ``get_image_features``."""
        pixels = self.processor.image_processor(list(images), return_tensors="pt")["pixel_values"]
        return self.model.get_image_features(pixel_values=pixels.to(self.device, self.dtype)).pooler_output

    def encode(self, ids: list[list[int]], features: Any) -> tuple[Any, Any]:
        """Run the text encoder over encoder ids with each row's image features in its placeholders.

        The model's own forward does the same (``get_placeholder_mask`` + ``masked_scatter``); doing it here lets
        rows share an image's features. Returns ``(attention_mask, last_hidden_state)``.
        """
        import torch

        tok = self.processor.tokenizer
        input_ids, mask = _pad(ids, tok.pad_token_id, tok.padding_side, self.device)
        model = self.model
        with torch.inference_mode():
            embeds = model.get_input_embeddings()(input_ids)
            placeholders = model.get_placeholder_mask(input_ids, inputs_embeds=embeds, image_features=features)
            embeds = embeds.masked_scatter(placeholders, features.to(embeds.dtype))
            hidden = model.get_encoder()(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        return mask, hidden

    def _generate_rows(self, ids: list[list[int]], features: Any, settings: dict[str, Any]) -> list[Generated]:
        import torch
        from transformers import LogitsProcessorList
        from transformers.modeling_outputs import BaseModelOutput

        mask, hidden = self.encode(ids, features)
        num_beams = int(settings.get("num_beams", 1))
        recorder = _recorder(k=2 if num_beams == 1 else 2 * num_beams + 1)
        with torch.inference_mode():
            out = self.model.generate(
                encoder_outputs=BaseModelOutput(last_hidden_state=hidden),  # a fresh one: generate expands it in place
                attention_mask=mask,
                logits_processor=LogitsProcessorList([recorder]),
                return_dict_in_generate=True,
                do_sample=False,
                **settings,
            )
        limit = int(settings.get("max_new_tokens") or 10**9)
        return _collect(out.sequences, getattr(out, "beam_indices", None), recorder, self._specials(), limit)

    def _specials(self) -> dict[str, int]:
        tok = self.processor.tokenizer
        return {"eos": tok.eos_token_id, "bos": tok.bos_token_id, "pad": tok.pad_token_id}

    # -- parsing
    def answer(self, task: str, generated: Generated, size: tuple[int, int]) -> Answer:
        """Parse one answer with the processor (for ``size`` = (W, H)) and pair its instances with their tokens."""
        processor = self.processor
        post = processor.post_processor
        ids = generated.ids.tolist()
        text = processor.tokenizer.decode(ids, skip_special_tokens=False)
        result = processor.post_process_generation(text, task=task, image_size=size)[task]
        parse_type = processor.tasks_answer_post_processing_type.get(task, "pure_text")
        span_text, spans = post.decode_with_spans(ids) if ids else ("", [])
        located = locate(
            parse_type, span_text, spans,
            banned=tuple(post.banned_grounding_tokens),
            ocr_pattern=(post.parse_task_config.get("ocr") or {}).get("PATTERN"),
        )
        instances: list[Located] | None = located
        if parse_type != "pure_text":
            coordinates, dequantize = _coordinates(post, parse_type, result, text, size)
            order = align(located, coordinates, dequantize)
            instances = None if order is None else [located[j] for j in order]
            if instances is None:
                log.warning("Florence-2 %s: could not pair the parsed instances with their tokens; scores left empty "
                            "for this answer: %r", task, text[:200])
        return Answer(task, text, result, instances, generated.logprobs, generated.finished)


def _coordinates(post: Any, parse_type: str, result: Any, text: str, size: tuple[int, int]) -> tuple[list, Any]:
    """The result's coordinate lists (per instance) and how a located instance's bins dequantize to the same form."""
    import torch

    def box(bins: list[list[int]]) -> list:
        return post.dequantize(torch.tensor(bins), size=size)[0].tolist()

    def points(bins: list[list[int]]) -> list:
        return [post.dequantize(torch.tensor(b).reshape(-1, 2), size=size).flatten().tolist() for b in bins]

    if parse_type == "ocr":
        return result["quad_boxes"], lambda bins: points(bins)[0]
    if parse_type in ("polygons", "description_with_polygons"):
        return result["polygons"], points
    if parse_type == "description_with_bboxes_or_polygons" and "<poly>" in text:
        return result["polygons"], points
    return result["bboxes"], box


_SIZE = re.compile(r"Florence-2-(base|large)(-ft)?", re.IGNORECASE)


def native_checkpoint(spec: "ModelSpec", raw: dict[str, Any]) -> str:
    """The florence-community checkpoint of the same model: from the id's name, else from the model's width."""
    found = _SIZE.search(spec.id)
    if found:
        return f"florence-community/Florence-2-{found.group(1).lower()}{(found.group(2) or '').lower()}"
    width = (raw.get("text_config") or {}).get("d_model")
    return "florence-community/Florence-2-large" if width == 1024 else "florence-community/Florence-2-base"


def remote_code_message(spec: "ModelSpec", raw: dict[str, Any], why: str) -> str:
    """The one line for a checkpoint in Microsoft's original layout, and the native one to use instead."""
    return (
        f"model {spec.id!r} (florence2): the checkpoint is Florence-2's remote-code layout ({why}), which needs "
        f"trust_remote_code and autolabel never runs it: set id: to the native transformers checkpoint "
        f"{native_checkpoint(spec, raw)} instead"
    )


def quiet_cleanup(tokenizer: Any) -> None:
    """Turn off ``clean_up_tokenization_spaces`` on a BPE tokenizer, where transformers ignores it anyway.

    Florence-2's tokenizer config sets it; transformers 5 skips that cleanup for BPE (it would delete real spaces)
    and says so at the first decode of every run. Setting it off changes no output and silences only that
    warning. A tokenizer forced to clean up (``clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_
    output``) or one that is not BPE is left alone.
    """
    if not getattr(tokenizer, "clean_up_tokenization_spaces", False):
        return
    if getattr(tokenizer, "clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output", False):
        return
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and type(backend.model).__name__ == "BPE":
        tokenizer.clean_up_tokenization_spaces = False


def _check_weights(spec: "ModelSpec", model: Any, missing: list[str]) -> None:
    """A checkpoint in another layout loads with freshly initialised weights: refuse it instead of labeling noise."""
    if not missing:
        return
    total = len(model.state_dict())
    if len(missing) > 0.2 * total:
        raise ModelLoadError(
            f"model {spec.id!r} (florence2): {len(missing)} of {total} weights are missing from the checkpoint "
            f"(e.g. {missing[0]}): it is not in transformers' native Florence-2 format; use a florence-community/"
            f"Florence-2-* checkpoint (the microsoft/ ones need trust_remote_code, which autolabel never runs)"
        )
    log.warning("model %r: %d weights missing from the checkpoint (e.g. %s); they are randomly initialised",
                spec.id, len(missing), missing[0])


def _pad(rows: list[list[int]], pad_id: int, side: str, device: str) -> tuple[Any, Any]:
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        span = slice(width - len(r), width) if side == "left" else slice(0, len(r))
        ids[i, span] = torch.tensor(r, dtype=torch.long)
        mask[i, span] = 1
    return ids.to(device), mask.to(device)


def _recorder(k: int) -> Any:
    """A logits processor that keeps, per step and row, the ``k`` best log-probabilities and their token ids."""
    import torch
    from transformers import LogitsProcessor

    class TopLogprobs(LogitsProcessor):
        def __init__(self) -> None:
            self.values: list[Any] = []
            self.indices: list[Any] = []

        def __call__(self, input_ids: Any, scores: Any) -> Any:
            values, indices = torch.log_softmax(scores.float(), dim=-1).topk(min(k, scores.shape[-1]), dim=-1)
            self.values.append(values)
            self.indices.append(indices)
            return scores

    return TopLogprobs()


def _collect(
    sequences: Any, beam_indices: Any, recorder: Any, special: dict[str, int], max_new_tokens: int
) -> list[Generated]:
    """Per output row: the generated ids up to ``</s>`` and the log-probability each had when it was chosen.

    An answer is *finished* when it ended before ``max_new_tokens`` (at the limit, ``</s>`` is forced).
    """
    import torch

    steps = min(sequences.shape[1] - 1, len(recorder.values))
    rows = sequences.shape[0]
    tokens = sequences[:, 1 : 1 + steps]
    if steps:
        values = torch.stack(recorder.values[:steps], dim=1)  # (source rows, steps, k)
        indices = torch.stack(recorder.indices[:steps], dim=1)
        if beam_indices is None:
            source = torch.arange(rows, device=tokens.device)[:, None].expand(rows, steps)
        else:
            source = beam_indices[:, :steps].clamp(min=0).long().to(tokens.device)
        step = torch.arange(steps, device=tokens.device)[None, :].expand(rows, steps)
        hit = indices[source, step] == tokens[..., None]  # (rows, steps, k)
        logprobs = torch.where(hit, values[source, step], torch.tensor(-float("inf"), device=values.device)).amax(-1)
        logprobs = torch.where(hit.any(-1), logprobs, torch.tensor(float("nan"), device=values.device))
        logprobs = logprobs.double().cpu().numpy()
    else:
        logprobs = np.zeros((rows, 0))
    tokens = tokens.cpu().numpy()
    out = []
    for row, lp in zip(tokens, logprobs):
        ends = np.flatnonzero(row == special["eos"])
        end = int(ends[0]) if len(ends) else len(row)
        ids, lp = row[:end], lp[:end]
        keep = ~np.isin(ids, [special["bos"], special["pad"]])
        out.append(Generated(ids=ids[keep], logprobs=lp[keep], finished=bool(len(ends)) and end + 1 < max_new_tokens))
    return out
