"""Pipeline files: parse, override, validate — before anything heavy loads.

Every problem is reported as ``key.path: problem`` (e.g. ``stages[2].model: unknown model 'florenc' (known:
florence)``), all problems at once, as a :class:`~autolabel.errors.ConfigError`.
"""

from __future__ import annotations

import hashlib
import re
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from . import bounded_yaml
from .cache import canonical_json, stage_keys
from .errors import ConfigError
from .intake import MAX_FILE_BYTES
from .ontology import Ontology
from .overrides import apply_overrides
from .registry import BUILTIN_MODELS, MODEL_GROUP, STAGE_GROUP, UnknownType, check, resolve
from .stage import ModelStageParams, StageParams, by_contract
from .video.spec import VideoSpec


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSpec(_Strict):
    """A model declared once under ``models:`` and referenced by name from stages."""

    type: str = "florence2"
    id: str = Field(min_length=1)  # hub id or local folder
    revision: str | None = None
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"  # auto: fp16 on CUDA, fp32 elsewhere
    device: str = "auto"  # auto: cuda, then mps, then cpu
    generation: dict[str, Any] = Field(default_factory=dict)  # e.g. max_new_tokens, num_beams
    compile: bool = False  # torch.compile the model
    options: dict[str, Any] = Field(default_factory=dict)  # model-type specific

    def identity(self) -> dict[str, Any]:
        """What of a model decides its outputs: everything but where and how fast it runs (device, compile).

        A folder ``autolabel train`` wrote adds the digest of its weights: training into the same folder again
        relabels, instead of serving the old model's labels from the cache.
        """
        from .train.lineage import weights_digest

        out = self.model_dump(exclude={"device", "compile"})
        digest = weights_digest(self.id)
        if digest:
            out["weights"] = digest
        return out


_SPLITS = ("train", "val", "test")


class ExportSpec(_Strict):
    """An export written at the end of each run (and by ``autolabel export``): the keys every format takes.

    Each format's options are the fields of its own model (:class:`CocoExport`, …) and a pipeline's ``exports:``
    is their union, told apart by ``format`` (:data:`Export`): an option of another format is an unknown key of
    this one (worded "option of format …" by :func:`format_errors`), never silently ignored. In code,
    ``ExportSpec(format="yolo", task="segment")`` builds the format's own model.
    """

    format: Literal["coco", "coco-results", "yolo", "labelstudio", "mot", "cvat-video", "labelstudio-video", "ytvis"]
    path: str | None = None  # relative to the output folder; default per format
    min_score: float = Field(default=0.0, ge=0.0, le=1.0)  # boxes scored below are left out (unknown scores pass)
    flagged: Literal["include", "exclude"] = "include"  # boxes a quality check flagged for review

    def __new__(cls, *args: Any, **data: Any) -> "ExportSpec":
        """``ExportSpec(format=...)`` is the format's model (validated by its ``__init__``, which runs next)."""
        if cls is ExportSpec and data.get("format") in EXPORT_FORMATS:
            cls = EXPORT_FORMATS[data["format"]]
        return super().__new__(cls)

    @model_validator(mode="before")
    @classmethod
    def _null_is_default(cls, data: Any) -> Any:
        """A format option written as ``null`` takes the format's default (as an option left out does)."""
        if isinstance(data, dict):
            common = ExportSpec.model_fields
            return {k: v for k, v in data.items() if v is not None or k in common}
        return data

    @classmethod
    def options(cls) -> list[str]:
        """The options this format takes beyond the keys every format takes."""
        return [key for key in cls.model_fields if key not in ExportSpec.model_fields]

    def option(self, key: str) -> Any:
        """The value of a format option: as given, else the format's default."""
        return getattr(self, key)


class CocoExport(ExportSpec):
    """``format: coco`` — a COCO file (and the COCO-captions file beside it)."""

    format: Literal["coco"]
    segmentation: Literal["polygon", "rle"] = "polygon"
    captions: bool = True  # write the COCO-captions file beside the COCO file


class CocoResultsExport(ExportSpec):
    """``format: coco-results`` — detections as a COCO results list."""

    format: Literal["coco-results"]
    segmentation: Literal["polygon", "rle"] = "polygon"


class YoloExport(ExportSpec):
    """``format: yolo`` — a YOLO dataset (Ultralytics layout)."""

    format: Literal["yolo"]
    task: Literal["detect", "segment"] = "detect"
    split: dict[str, float] = Field(default_factory=lambda: {"train": 0.8, "val": 0.2})
    seed: int = 0
    images: Literal["symlink", "copy"] = "symlink"

    @field_validator("split")
    @classmethod
    def _split_fractions(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = [k for k in value if k not in _SPLITS]
        if unknown:
            raise _invalid(f"unknown split {unknown[0]!r} (known: {', '.join(_SPLITS)})")
        if "train" not in value:
            raise _invalid("needs a train fraction, e.g. {train: 0.8, val: 0.2}")
        if any(not 0.0 < f <= 1.0 for f in value.values()):
            raise _invalid("fractions must be in (0, 1]")
        if abs(sum(value.values()) - 1.0) > 1e-6:
            raise _invalid(f"fractions must sum to 1 (got {sum(value.values()):g})")
        return {k: float(value[k]) for k in _SPLITS if k in value}  # fixed order: the split is deterministic


class LabelStudioExport(ExportSpec):
    """``format: labelstudio`` — Label Studio tasks and labeling config."""

    format: Literal["labelstudio"]
    image_root: str = "/data/local-files/?d="  # prefix of image references: local-files, URL or s3://bucket/prefix
    model_version: str | None = None  # default: the pipeline's name, else autolabel-<hash>
    task_score: Literal["min", "mean"] = "min"
    masks: Literal["brush", "polygon", "none"] = "brush"


class MotExport(ExportSpec):
    """``format: mot`` — clips' tracks as MOT 1.1 sequences (``<clip>/gt/gt.txt``, ``gt/labels.txt``)."""

    format: Literal["mot"]


class CvatVideoExport(ExportSpec):
    """``format: cvat-video`` — clips' tracks as CVAT for video 1.1 XML (``<clip>/annotations.xml``)."""

    format: Literal["cvat-video"]


class LabelStudioVideoExport(ExportSpec):
    """``format: labelstudio-video`` — one Label Studio video task per clip (``videorectangle`` tracks)."""

    format: Literal["labelstudio-video"]
    video_root: str = "/data/local-files/?d="  # prefix of video references: local-files, URL or s3://bucket/prefix
    model_version: str | None = None  # default: the pipeline's name, else autolabel-<hash>
    task_score: Literal["min", "mean"] = "min"
    keyframe_tolerance: float = Field(default=1.0, ge=0.0)  # pixels interpolation may miss a box by


class YtvisExport(ExportSpec):
    """``format: ytvis`` — clips' tracks as YouTube-VIS style JSON with per-frame RLE masks."""

    format: Literal["ytvis"]


#: export format → its model (one table: the formats, their options and defaults)
EXPORT_FORMATS: dict[str, type[ExportSpec]] = {
    "coco": CocoExport, "coco-results": CocoResultsExport, "yolo": YoloExport, "labelstudio": LabelStudioExport,
    "mot": MotExport, "cvat-video": CvatVideoExport, "labelstudio-video": LabelStudioVideoExport,
    "ytvis": YtvisExport,
}
#: an export of any format, told apart by ``format``: what ``exports:`` holds
Export = Annotated[
    CocoExport | CocoResultsExport | YoloExport | LabelStudioExport | MotExport | CvatVideoExport
    | LabelStudioVideoExport | YtvisExport,
    Field(discriminator="format"),
]
EXPORT_ADAPTER: TypeAdapter[ExportSpec] = TypeAdapter(Export)


def export_keys() -> list[str]:
    """Every key an export may have (the keys all formats take, then each format's options)."""
    keys = list(ExportSpec.model_fields)
    for model in EXPORT_FORMATS.values():
        keys += [k for k in model.options() if k not in keys]
    return keys


class PushSpec(_Strict):
    """``push:`` — send the run's labels to a Label Studio project at the end of each run (autolabel.labelstudio).

    The API key is read from ``LABEL_STUDIO_API_KEY`` only, never from the pipeline file.
    """

    url: str = Field(min_length=1)  # http(s)://host:port of the Label Studio server
    project: str | int  # an id, or a title (created when no project has it)
    images: Literal["local-files", "upload", "url"] = "local-files"
    image_root: str | None = None  # images: url — prefix of the references (https://..., s3://...)
    document_root: str | None = None  # images: local-files — the server's document root (default: asked)
    batch_size: int = Field(default=500, ge=1, le=10_000)  # tasks per import request
    model_version: str | None = None  # default: the pipeline's name, else autolabel-<hash>
    task_score: Literal["min", "mean"] = "min"
    masks: Literal["brush", "polygon", "none"] = "brush"
    min_score: float = Field(default=0.0, ge=0.0, le=1.0)
    flagged: Literal["include", "exclude"] = "include"
    timeout: float = Field(default=60.0, gt=0)  # seconds per request
    retry_for: float = Field(default=120.0, ge=0)  # seconds to keep retrying a failing server
    media: Literal["auto", "images", "videos"] = "auto"  # a project holds one kind; auto: what the store holds
    keyframe_tolerance: float = Field(default=1.0, ge=0.0)  # videos: pixels interpolation may miss a box by

    @field_validator("url")
    @classmethod
    def _no_credentials(cls, url: str) -> str:
        """``user:pass@`` in the URL would be sent instead of the API key, and stored in run.json with the URL."""
        if "@" in urlsplit(url.strip()).netloc:
            raise _invalid("credentials in the URL are not used: remove them and put the token in "
                           "LABEL_STUDIO_API_KEY")
        return url


def _invalid(message: str) -> PydanticCustomError:
    """A validation error whose message is exactly ``message`` (no "Value error," prefix)."""
    return PydanticCustomError("invalid", message)  # no context given: braces in ``message`` stay as they are


class ExecutorSpec(_Strict):
    """Where the stages run (``executor:``; or ``autolabel run --executor ray``). Not part of the pipeline hash:
    labels do not depend on where they were computed."""

    type: Literal["local", "ray"] = "local"
    address: str | None = None  # ray: None → a local Ray on this machine; "auto", "host:6379": an existing cluster
    workers: int = Field(default=1, ge=1, le=10_000)  # ray: actors, each with its own copy of the models
    cpus_per_worker: float = Field(default=1.0, gt=0)
    gpus_per_worker: float = Field(default=0.0, ge=0)


class PipelineConfig(_Strict):
    """The whole pipeline file."""

    version: Literal[1] = 1
    name: str | None = None
    input: str | list[str] | None = None
    output: str | None = None
    batch_size: int = Field(default=8, ge=1, le=4096)
    decode_workers: int = Field(default=4, ge=1, le=64)
    max_image_pixels: int = Field(default=89_478_485, ge=1)  # Pillow's decompression-bomb threshold
    max_file_bytes: int = Field(default=MAX_FILE_BYTES, ge=1)  # larger input files are refused unread
    models: dict[str, ModelSpec] = Field(default_factory=dict)
    ontology: dict[str, str | list[str] | None] | list[str] = Field(default_factory=dict)
    stages: list[dict[str, Any]] = Field(min_length=1)
    exports: list[Export] = Field(default_factory=list)
    push: PushSpec | None = None  # Label Studio push after each run
    executor: ExecutorSpec = Field(default_factory=ExecutorSpec)
    #: compute each image's vision features once per model and batch, shared by every stage of that model (False:
    #: each stage computes its own, as before: the same labels, slower). Not part of the pipeline hash
    share_vision_features: bool = True
    video: VideoSpec = Field(default_factory=VideoSpec)  # clips: sampling, chunks, limits (autolabel.video)

    @field_validator("ontology")
    @classmethod
    def _prompts_nonempty(cls, value: Any) -> Any:
        items = value.items() if isinstance(value, dict) else ((v, v) for v in value)
        for name, prompts in items:
            if not str(name).strip():
                raise ValueError("class names must not be empty")
            empty = not prompts or not all(isinstance(p, str) and p.strip() for p in prompts)
            if isinstance(prompts, list) and empty:
                raise ValueError(f"class {name!r}: prompts must be a non-empty list of non-empty strings")
        return value


class PipelineSpec:
    """A validated pipeline: the config, each stage's class and parameters, and the ontology."""

    def __init__(self, config: PipelineConfig, stages: list[tuple[str, type, StageParams]], raw: dict[str, Any]):
        self.config = config
        self.stages = stages  # (name, stage class, params)
        self.raw = raw
        self.ontology = Ontology.from_config(config.ontology)

    @cached_property
    def hash(self) -> str:
        """What decides the labels (models, ontology, stages): when it changes, images are labeled again.

        Built from validated values, so spelling out a default changes nothing; device and compile do not count.
        """
        keep = {
            "models": {n: m.identity() for n, m in self.config.models.items()},
            "ontology": self.ontology.canonical(),  # the normalised form: `[person]` and `{person: null}` agree
            "stages": [p.model_dump() for _, _, p in self.stages],
        }
        return hashlib.sha256(canonical_json(keep)).hexdigest()[:16]

    @cached_property
    def stage_keys(self) -> list[str | None]:
        """Per stage, the key of its cached output, or None for stages that are not cached (see autolabel.cache)."""
        return stage_keys(self)


def load_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML pipeline file into a dict, with one-line errors for a missing, oversized or non-regular file,
    syntax errors and aliases that expand past the limit (:mod:`autolabel.bounded_yaml`)."""
    path = Path(path)
    data = bounded_yaml.loads(bounded_yaml.read_text(path, "pipeline file"), str(path))
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: expected a mapping of keys (models, ontology, stages, ...), got {type(data).__name__}"
        )
    return data


def parse(data: dict[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> PipelineSpec:
    """Validate a pipeline dict (after ``--set`` overrides) into a ready-to-build spec, or raise ConfigError."""
    data = apply_overrides(data, list(overrides))
    try:
        config = PipelineConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_errors(err, PipelineConfig)) from None

    problems: list[str] = []
    for name, spec in config.models.items():
        try:
            check(MODEL_GROUP, spec.type)  # the model's code is imported when it loads, not here
        except UnknownType as err:
            problems.append(f"models.{name}.type: {err}")

    stages: list[tuple[str, type, StageParams]] = []
    names: set[str] = set()
    for i, raw in enumerate(config.stages):
        where = f"stages[{i}]"
        if not isinstance(raw, dict):
            problems.append(f"{where}: expected a mapping with a 'type' key, got {type(raw).__name__}")
            continue
        if "type" not in raw:
            problems.append(f"{where}.type: missing (every stage needs a type, e.g. type: florence2)")
            continue
        try:
            cls = resolve(STAGE_GROUP, str(raw["type"]))
        except UnknownType as err:
            problems.append(f"{where}.type: {err}")
            continue
        try:
            params = cls.Params.model_validate(raw)
        except ValidationError as err:
            problems.extend(format_errors(err, cls.Params, prefix=where))
            continue
        name = params.name or str(raw["type"])
        if name in names:
            problems.append(f"{where}.name: duplicate stage name {name!r} (give each stage a distinct name)")
        names.add(name)
        if isinstance(params, ModelStageParams):
            if params.model not in config.models:
                known = ", ".join(config.models) or "none declared under models:"
                problems.append(f"{where}.model: unknown model {params.model!r} (known: {known})")
            elif (mtype := config.models[params.model].type) not in cls.model_types and cls.model_types and not (
                by_contract(cls) and mtype not in BUILTIN_MODELS
            ):  # a plugin model type runs under any stage whose model_protocol it implements (checked at build)
                problems.append(
                    f"{where}.model: model {params.model!r} is a {mtype!r}; stage type {raw['type']!r} "
                    f"runs {', '.join(repr(t) for t in cls.model_types)}"
                )
        stages.append((name, cls, params))
    if problems:
        raise ConfigError(problems)
    return PipelineSpec(config, stages, data)


def format_errors(err: ValidationError, schema: type[BaseModel], prefix: str = "") -> list[str]:
    """One line per pydantic error: ``key.path: problem``, with the accepted keys for unknown ones."""
    lines = []
    for e in err.errors():
        loc = [p for p in e["loc"] if not (isinstance(p, str) and (p.startswith("function-") or p in _UNION_TAGS))]
        loc, fmt = _export_format(schema, loc)
        path = _path(prefix, loc)
        if e["type"] in ("union_tag_invalid", "union_tag_not_found"):  # exports: no format, or an unknown one
            key = _path(path, [e["ctx"]["discriminator"].strip("'")])
            if e["type"] == "union_tag_not_found":
                lines.append(f"{key}: missing required key")
            else:
                lines.append(f"{key}: input should be {_one_of(list(EXPORT_FORMATS))} (got {e['ctx']['tag']!r})")
        elif e["type"] == "extra_forbidden" and fmt is not None and loc[-1] in export_keys():
            owners = [f for f, model in EXPORT_FORMATS.items() if loc[-1] in model.options()]
            takes = ", ".join(EXPORT_FORMATS[fmt].options()) or "no format options"
            lines.append(f"{path}: option of format {' / '.join(owners)}, not {fmt} ({fmt} takes: {takes})"
                         f"{_shown(e.get('input'))}")
        elif e["type"] == "extra_forbidden":
            known = _accepted_keys(schema, loc[:-1])
            lines.append(f"{path}: unknown key" + (f" (known: {', '.join(known)})" if known else ""))
        elif e["type"] == "missing":
            lines.append(f"{path}: missing required key")
        else:
            msg = e["msg"][0].lower() + e["msg"][1:]
            lines.append(f"{path}: {msg}{_shown(e.get('input'))}")
    return list(dict.fromkeys(lines))  # union types repeat the same complaint


_URL_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]*@")


def _shown(value: Any) -> str:
    """`` (got 'x')`` for a value worth repeating in a message (not a whole mapping or list; a URL's credentials
    masked)."""
    if isinstance(value, str):
        value = _URL_CREDENTIALS.sub("***@", value)
    return "" if isinstance(value, (dict, list)) or value is None else f" (got {value!r})"


def _one_of(values: list[str]) -> str:
    """``'a', 'b' or 'c'``: pydantic's wording for a choice."""
    quoted = [repr(v) for v in values]
    return ", ".join(quoted[:-1]) + f" or {quoted[-1]}" if len(quoted) > 1 else quoted[0]


def _export_format(schema: Any, loc: list[Any]) -> tuple[list[Any], str | None]:
    """An export's location without its format (pydantic puts the union member's tag in it: ``exports.0.yolo.task``),
    and that format."""
    at = 2 if schema is PipelineConfig and loc[:1] == ["exports"] else 0 if schema is ExportSpec else None
    if at is not None and len(loc) > at and loc[at] in EXPORT_FORMATS:
        return loc[:at] + loc[at + 1:], loc[at]
    return loc, None


# pydantic names union members in error locations; they are not keys of the file
_UNION_TAGS = {"str", "list[str]", "dict[str,union[str,list[str],none]]", "none", "int", "float", "bool"}


def _path(prefix: str, loc: list[Any]) -> str:
    out = prefix
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top>"


def _accepted_keys(schema: type[BaseModel], parent: list[Any]) -> list[str]:
    """The keys the schema accepts in the mapping at ``parent`` (for 'unknown key' messages)."""
    if (schema is PipelineConfig and parent[:1] == ["exports"] and len(parent) == 2) or schema is ExportSpec:
        return export_keys()
    if schema is PipelineConfig and len(parent) == 2:
        schema = {"models": ModelSpec}.get(parent[0])  # type: ignore[assignment]
    elif schema is PipelineConfig and parent == ["push"]:
        schema = PushSpec
    elif schema is PipelineConfig and parent == ["executor"]:
        schema = ExecutorSpec
    elif schema is PipelineConfig and parent == ["video"]:
        schema = VideoSpec
    elif parent:
        return []
    return list(schema.model_fields) if schema is not None else []
