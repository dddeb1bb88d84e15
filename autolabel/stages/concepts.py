"""Stage ``concepts``: SAM 3's promptable concept segmentation — every instance of every class, box, mask and score.

Each ontology class's prompts (or ``prompts:``) are noun phrases; SAM 3 answers each with every instance it
finds in the image, as rows: box (clipped to the image), mask, class, the prompt that found it (``phrase``), and a
score = ``query_score`` × ``presence_score``, both parts kept as columns (the presence score says whether the
concept is in the image at all, once per image and prompt; filters, calibration and the report can use it).

Exemplars (``exemplars:``) are example boxes: rows of earlier stages (kept rows are positive examples of their
class; with ``negatives: dropped``, the rows a filter dropped are counter-examples) and/or a JSON file per image.
With ``text: true`` a class's exemplars join its text prompts (SAM 3's text + exemplar prompt); with ``text: false``
they are the whole prompt ("click one, get all"), and classes without a positive exemplar in an image are not
looked for there.

Bounds: prompts longer than SAM 3's 32-token window are refused when the pipeline is validated (when the model's
tokenizer is on this machine; else at its first batch, before any image is labeled); at most
``exemplars.max_boxes`` boxes per class and image, an exemplar file at most :data:`MAX_EXEMPLAR_FILE` bytes;
``prompts_per_call`` bounds the head's activations, and masks are post-processed as :mod:`autolabel.models.concepts`
says (the kept masks as bool, plus one bounded chunk).

Each image goes through SAM 3's vision backbone once per batch, for every ``concepts`` stage of the model and for a
``segment`` stage whose ``sam3_tracker`` is loaded from the same checkpoint (:mod:`autolabel.models.features`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import supervision as sv
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from ..errors import ConfigError
from ..labels import DROPPED, Labels
from ..models.concepts import ConceptPrompt
from ..models.contract import ConceptModel, declared
from ..models.features import StageFeatures, shared
from ..models.outputs import clip_boxes
from ..stage import Item, ModelStage, ModelStageParams, StageContext

#: bytes an exemplar file may have (a few thousand boxes); a larger one fails its image, naming the limit
MAX_EXEMPLAR_FILE = 1 << 20
#: the text window of SAM 3 when the model type declares none
MAX_PROMPT_TOKENS = 32


class ExemplarsParams(BaseModel):
    """``exemplars:`` — example boxes that define (or refine) what each class looks like."""

    model_config = ConfigDict(extra="forbid")

    #: earlier stages whose rows are exemplars: rows not dropped are positive examples of their class
    from_stages: list[str] | None = Field(default=None, min_length=1)
    #: "dropped": rows of those stages that a filter dropped are negative examples of their class
    negatives: Literal["none", "dropped"] = "none"
    #: a folder of one JSON file per image (``<image name without extension>.json``): a list of
    #: ``{"class": name, "box": [x1, y1, x2, y2], "positive": true}`` in the image's pixels
    folder: str | None = None
    #: true: a class's exemplars join its text prompts; false: exemplars alone (classes without a positive one in
    #: an image are not looked for there)
    text: bool = True
    #: exemplar boxes per class and image (positives first, then negatives, in source order)
    max_boxes: int = Field(default=16, ge=1, le=256)

    @model_validator(mode="after")
    def _has_source(self) -> "ExemplarsParams":
        if not self.from_stages and self.folder is None:
            raise PydanticCustomError("invalid", "needs from_stages (earlier stages whose rows are exemplars) or "
                                      "folder (a JSON file per image), or both")
        return self


class ConceptsParams(ModelStageParams):
    stage_refs = ("exemplars.from_stages",)
    #: noun phrases to look for, each mapped to its ontology class; default: every prompt of the ontology
    prompts: list[str] | None = None
    #: minimum score (query × presence); default per model type (SAM 3: 0.5, Meta's own predictor's)
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    #: mask probability above which a pixel is in the mask (transformers' default)
    mask_threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    #: at most this many instances per prompt and image (the best-scoring); default: every query that passes
    max_instances: int | None = Field(default=None, ge=1, le=10_000)
    #: (image, prompt) rows per forward of the detector head: memory, not results
    prompts_per_call: int = Field(default=8, ge=1, le=256)
    exemplars: ExemplarsParams | None = None


class Concepts(ModelStage):
    """Every instance of each class, by text and/or example boxes; the image encoded once for all its prompts."""

    Params = ConceptsParams
    params: ConceptsParams
    model_types = ("sam3",)
    model_protocol = ConceptModel

    def __init__(self, name: str, params: ConceptsParams, context: StageContext):
        super().__init__(name, params, context)
        ontology = context.ontology
        if params.prompts is not None:
            bad = [p for p in params.prompts if not isinstance(p, str) or not p.strip()]
            if bad or not params.prompts:
                raise ConfigError("prompts: must be a non-empty list of non-empty strings (or left out: the "
                                  "ontology's)")
            prompts = list(dict.fromkeys(" ".join(p.split()) for p in params.prompts))
            unmapped = [p for p in prompts if ontology.class_of(p) is None]
            if unmapped:
                known = ", ".join(ontology.classes) or "the ontology is empty"
                raise ConfigError(f"prompts: {unmapped[0]!r} names no ontology class (known: {known}); every "
                                  "prompt of a concepts stage labels a class (add it to a class's prompts)")
        else:
            prompts = ontology.all_prompts()
            if not prompts:
                raise ConfigError("prompts: none to look for (the ontology is empty: add classes, or set prompts:)")
        self.prompts: list[str] = prompts
        self.classes: list[str] = [ontology.class_of(p) or "" for p in prompts]
        self.folder = self._exemplar_folder()
        self._checked = self._check_prompt_lengths(self._local_tokenizer())

    # -- validation ----------------------------------------------------------------------------------------------
    def _exemplar_folder(self) -> Path | None:
        ex = self.params.exemplars
        if ex is None or ex.folder is None:
            return None
        folder = Path(ex.folder).expanduser()
        if not folder.is_dir():
            raise ConfigError(f"exemplars.folder: {ex.folder!r} is not a folder (it holds one JSON file of example "
                              "boxes per image: create it, or remove the key)")
        return folder

    def _local_tokenizer(self) -> Callable[[str], int] | None:
        """A token counter of the model's tokenizer when its files are on this machine (a folder, or the hub
        cache), else None: validating a pipeline downloads nothing, and reads the hub's tokenizer.json with the
        ``tokenizers`` library alone (no torch, no transformers) when there is one."""
        spec = self.model_spec
        if spec is None:
            return None
        from ..models.hub import looks_like_path

        folder = Path(spec.id).expanduser()
        try:
            if folder.is_dir():
                found = folder / "tokenizer.json"
                file = str(found) if found.is_file() else None
            elif looks_like_path(spec.id):
                return None
            else:
                from huggingface_hub import try_to_load_from_cache

                cached = try_to_load_from_cache(spec.id, "tokenizer.json", revision=spec.revision)
                file = cached if isinstance(cached, str) else None
                if file is None:
                    config = try_to_load_from_cache(spec.id, "tokenizer_config.json", revision=spec.revision)
                    folder = Path(config).parent if isinstance(config, str) else None
            if file is not None:
                from tokenizers import Tokenizer

                tokenizer = Tokenizer.from_file(file)
                return lambda text: len(tokenizer.encode(text).ids)
            if folder is not None and (folder / "tokenizer_config.json").is_file():
                from transformers import AutoTokenizer

                slow = AutoTokenizer.from_pretrained(str(folder))
                return lambda text: len(slow(text)["input_ids"])
        except Exception:  # noqa: BLE001 — unreadable here: the same check runs when the model has loaded
            return None
        return None

    def _check_prompt_lengths(self, count: Callable[[str], int] | None) -> bool:
        """A ConfigError naming the class of the first prompt SAM 3 cannot read whole; False when not checkable."""
        if count is None:
            return False
        cls = self.model_class()
        limit = declared(cls, "max_prompt_tokens") if cls is not None else MAX_PROMPT_TOKENS
        if limit is None:
            return True
        for prompt, name in zip(self.prompts, self.classes):
            n = count(prompt)
            if n > limit:
                raise ConfigError(
                    f"prompts: class {name!r}: prompt {prompt!r} is {n} tokens; {self.model_type or 'the model'} "
                    f"reads at most {limit} (start and end tokens included): shorten it"
                )
        return True

    # -- running -------------------------------------------------------------------------------------------------
    def __call__(self, items: list[Item], features: StageFeatures | None = None) -> list[Item]:
        """``features``: the batch's image features, shared with the pipeline's other stages of this model (and with
        a segmenter whose vision tower is the same weights: SAM 3's tracker from the same checkpoint)."""
        model: ConceptModel = self.model
        if not self._checked:  # the tokenizer was not on this machine when the pipeline was built
            tokenizer = getattr(getattr(model, "processor", None), "tokenizer", None)
            self._checked = self._check_prompt_lengths(
                (lambda text: len(tokenizer(text)["input_ids"])) if tokenizer is not None else None)
        threshold = self.params.threshold
        if threshold is None:
            threshold = declared(model, "default_threshold")
        prompts = [self.image_prompts(item) for item in items]
        found = model.segment_concepts(
            [item.image for item in items], [[p for p, _ in ps] for ps in prompts], threshold=threshold,
            mask_threshold=self.params.mask_threshold, max_instances=self.params.max_instances,
            rows_per_call=self.params.prompts_per_call,
            **shared(features, self.params.model, model, model.segment_concepts),
        )
        ex = self.params.exemplars
        provenance = self.provenance(
            model, "concept_segmentation", prompts=list(self.prompts), score="query_score*presence_score",
            threshold=threshold, mask_threshold=self.params.mask_threshold, max_instances=self.params.max_instances,
            exemplars=ex.model_dump() if ex is not None else None,
        )
        for item, image_prompts, instances in zip(items, prompts, found):
            item.labels.add(self.detections(item, image_prompts, instances), stage=self.name, provenance=provenance)
        return items

    def detections(self, item: Item, prompts: list[tuple[ConceptPrompt, str]], instances: Any) -> sv.Detections:
        """One row per instance: clipped box, mask, class, prompt text, score and its two parts."""
        which = np.asarray(instances.prompts, np.int64)
        classes = np.array([prompts[k][1] for k in which], dtype=object)
        phrases = np.array([prompts[k][0].text or "" for k in which], dtype=object)
        exemplars = np.array([len(prompts[k][0].boxes) for k in which], dtype=np.int64)
        return sv.Detections(
            xyxy=clip_boxes(instances.xyxy, item.image.width, item.image.height),
            mask=instances.masks,
            confidence=np.asarray(instances.scores, np.float32),
            data={"class_name": classes, "phrase": phrases, "has_mask": np.ones(len(which), bool),
                  "query_score": np.asarray(instances.query_scores, np.float32),
                  "presence_score": np.asarray(instances.presence_scores, np.float32),
                  "exemplars": exemplars},
        )

    def image_prompts(self, item: Item) -> list[tuple[ConceptPrompt, str]]:
        """The (prompt, class) pairs asked of one image: text prompts, joined or replaced by its exemplars."""
        ex = self.params.exemplars
        boxes = self.exemplars(item) if ex is not None else {}
        out: list[tuple[ConceptPrompt, str]] = []
        if ex is not None and not ex.text:  # boxes alone: a class needs one example of what it is, at least
            for name, (xyxy, positive) in boxes.items():
                if positive.any():
                    out.append((ConceptPrompt(None, xyxy, positive), name))
            return out
        for prompt, name in zip(self.prompts, self.classes):
            xyxy, positive = boxes.get(name, (np.zeros((0, 4), np.float32), np.zeros(0, bool)))
            out.append((ConceptPrompt(prompt, xyxy, positive), name))
        return out

    def exemplars(self, item: Item) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per class with examples in this image: (boxes (K, 4), positive (K,)), at most ``max_boxes`` of them."""
        ex = self.params.exemplars
        assert ex is not None
        found: list[tuple[str, np.ndarray, bool]] = []
        if ex.from_stages:
            found += rows_exemplars(item.labels, ex.from_stages, ex.negatives == "dropped")
        if self.folder is not None:
            found += file_exemplars(self.folder / f"{Path(item.key).stem}.json", self.context.ontology.classes,
                                    item.image.width, item.image.height)
        out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for name in dict.fromkeys(name for name, _, _ in found):
            mine = [(box, positive) for n, box, positive in found if n == name]
            mine = ([m for m in mine if m[1]] + [m for m in mine if not m[1]])[: ex.max_boxes]
            out[name] = (np.stack([box for box, _ in mine]).astype(np.float32), np.array([p for _, p in mine]))
        return out


def rows_exemplars(labels: Labels, stages: list[str], negatives: bool) -> list[tuple[str, np.ndarray, bool]]:
    """(class, box, positive) of the rows of ``stages``: kept/flagged rows positive, dropped ones negative when
    ``negatives``; rows of no class are not examples of anything."""
    det = labels.detections
    data = det.data
    pick = np.isin(data["stage"].astype(str), stages) & (data["class_name"].astype(str) != "")
    dropped = data["status"] == DROPPED
    if not negatives:
        pick &= ~dropped
    return [(str(data["class_name"][i]), det.xyxy[i], not bool(dropped[i])) for i in np.flatnonzero(pick)]


def file_exemplars(path: Path, classes: list[str], width: int, height: int) -> list[tuple[str, np.ndarray, bool]]:
    """(class, box, positive) from one image's exemplar file; none when it does not exist; a one-line ValueError
    (the image fails, the others go on) when it is too large or malformed."""
    if not path.is_file():
        return []
    size = path.stat().st_size
    if size > MAX_EXEMPLAR_FILE:
        raise ValueError(f"exemplar file {path}: {size} bytes, more than the {MAX_EXEMPLAR_FILE} allowed (keep a "
                         f"few example boxes per class)")
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"exemplar file {path}: not JSON ({err}); expected a list of "
                         '{"class": ..., "box": [x1, y1, x2, y2], "positive": true}') from None
    if not isinstance(entries, list):
        raise ValueError(f"exemplar file {path}: expected a list of example boxes, got {type(entries).__name__}")
    out = []
    for k, entry in enumerate(entries):
        where = f"exemplar file {path}: entry {k}"
        if not isinstance(entry, dict) or set(entry) - {"class", "box", "positive"}:
            raise ValueError(f"{where}: expected an object with keys class, box and (optionally) positive")
        name, box, positive = entry.get("class"), entry.get("box"), entry.get("positive", True)
        if name not in classes:
            raise ValueError(f"{where}: unknown class {name!r} (known: {', '.join(classes)})")
        if (not isinstance(box, list) or len(box) != 4
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in box)):
            raise ValueError(f"{where}: box must be four numbers [x1, y1, x2, y2] in pixels (got {box!r})")
        x1, y1, x2, y2 = (float(v) for v in box)
        if not (0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
            raise ValueError(f"{where}: box {box} is empty or outside the {width}x{height} image (x1 < x2, y1 < y2, "
                             "in the image's pixels)")
        if not isinstance(positive, bool):
            raise ValueError(f"{where}: positive must be true or false (got {positive!r})")
        out.append((name, np.array([x1, y1, x2, y2], np.float32), positive))
    return out
