"""Pipeline files: parse, override, validate — before anything heavy loads.

Every problem is reported as ``key.path: problem`` (e.g. ``stages[2].model: unknown model 'florenc' (known:
florence)``), all problems at once, as a :class:`~autolabel.errors.ConfigError`.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union, get_args
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from . import bounded_yaml
from .errors import ConfigError
from .identity import pipeline_hash, stage_keys
from .intake import MAX_FILE_BYTES
from .models.spec import ModelSpec
from .ontology import Ontology
from .overrides import apply_overrides
from .registry import BUILTIN_MODELS, MODEL_GROUP, UnknownType, check
from .stage import ModelStageParams, StageParams, by_contract, stage_type
from .validation import error_line, invalid, key_path, location, one_of, shown
from .video.spec import VideoSpec


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


_SPLITS = ("train", "val", "test")


class ExportSpec(_Strict):
    """An export written at the end of each run (and by ``autolabel export``): the keys every format takes.

    Each format's options are the fields of its own model (:class:`CocoExport`, …) and a pipeline's ``exports:``
    is their union, told apart by ``format`` (:data:`Export`): an option of another format is an unknown key of
    this one (worded "option of format …" by :func:`format_errors`), never silently ignored. In code,
    ``ExportSpec(format="yolo", task="segment")`` builds the format's own model.

    A format's model is all there is to know of it: its name (the ``format`` literal), its options with their
    defaults and descriptions (the CLI's flags and their help are made from them), the file or folder it writes by
    default, and the function that writes it. :data:`EXPORT_FORMATS`, the ``exports:`` union, ``autolabel export``'s
    choices and flags and the docs' checks are all derived from :data:`EXPORT_MODELS`.
    """

    #: where the format writes by default, relative to the output folder
    default_path: ClassVar[str] = ""
    #: ``module:function`` writing it: ``function(store, spec: PipelineSpec, export, path) -> paths written``
    writer: ClassVar[str] = ""

    format: str  # one of EXPORT_FORMATS (each format's model narrows it to its own name)
    path: str | None = Field(default=None, description="file or folder to write, relative to the output folder "
                                                       "(default: per format)")
    min_score: float = Field(default=0.0, ge=0.0, le=1.0, description="leave out boxes scored below this (unknown "
                                                                      "scores pass)")
    flagged: Literal["include", "exclude"] = Field(default="include", description="boxes flagged for review")

    def __new__(cls, *args: Any, **data: Any) -> "ExportSpec":
        """``ExportSpec(format=...)`` is the format's model (validated by its ``__init__``, which runs next)."""
        if cls is ExportSpec and data.get("format") in EXPORT_FORMATS:
            cls = EXPORT_FORMATS[data["format"]]
        return super().__new__(cls)

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value not in EXPORT_FORMATS:
            raise invalid(f"Input should be {one_of(list(EXPORT_FORMATS))}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _null_is_default(cls, data: Any) -> Any:
        """A format option written as ``null`` takes the format's default (as an option left out does)."""
        if isinstance(data, dict):
            common = ExportSpec.model_fields
            return {k: v for k, v in data.items() if v is not None or k in common}
        return data

    @classmethod
    def name(cls) -> str:
        """The format's name: its ``format`` literal."""
        return get_args(cls.model_fields["format"].annotation)[0]

    @classmethod
    def options(cls) -> list[str]:
        """The options this format takes beyond the keys every format takes."""
        return [key for key in cls.model_fields if key not in ExportSpec.model_fields]

    def option(self, key: str) -> Any:
        """The value of a format option: as given, else the format's default."""
        return getattr(self, key)


class CocoExport(ExportSpec):
    """``format: coco`` — a COCO file (and the COCO-captions file beside it)."""

    default_path: ClassVar[str] = "coco.json"
    writer: ClassVar[str] = "autolabel.exports.coco:export_coco"
    format: Literal["coco"]
    segmentation: Literal["polygon", "rle"] = Field(default="polygon", description="mask encoding")
    captions: bool = Field(default=True, description="write the COCO-captions file beside the COCO file")


class CocoResultsExport(ExportSpec):
    """``format: coco-results`` — detections as a COCO results list."""

    default_path: ClassVar[str] = "coco_results.json"
    writer: ClassVar[str] = "autolabel.exports.coco:export_coco_results"
    format: Literal["coco-results"]
    segmentation: Literal["polygon", "rle"] = Field(default="polygon", description="mask encoding")


class YoloExport(ExportSpec):
    """``format: yolo`` — a YOLO dataset (Ultralytics layout)."""

    default_path: ClassVar[str] = "yolo"
    writer: ClassVar[str] = "autolabel.exports.yolo:export_yolo"
    format: Literal["yolo"]
    task: Literal["detect", "segment"] = Field(default="detect", description="label lines")
    split: dict[str, float] = Field(default_factory=lambda: {"train": 0.8, "val": 0.2},
                                    description="fractions per split, by content hash, e.g. train=0.8,val=0.2")
    seed: int = Field(default=0, description="seed of the content-hash split")
    images: Literal["symlink", "copy"] = Field(default="symlink", description="how images are placed")

    @field_validator("split")
    @classmethod
    def _split_fractions(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = [k for k in value if k not in _SPLITS]
        if unknown:
            raise invalid(f"unknown split {unknown[0]!r} (known: {', '.join(_SPLITS)})")
        if "train" not in value:
            raise invalid("needs a train fraction, e.g. {train: 0.8, val: 0.2}")
        if any(not 0.0 < f <= 1.0 for f in value.values()):
            raise invalid("fractions must be in (0, 1]")
        if abs(sum(value.values()) - 1.0) > 1e-6:
            raise invalid(f"fractions must sum to 1 (got {sum(value.values()):g})")
        return {k: float(value[k]) for k in _SPLITS if k in value}  # fixed order: the split is deterministic


class LabelStudioExport(ExportSpec):
    """``format: labelstudio`` — Label Studio tasks and labeling config."""

    default_path: ClassVar[str] = "labelstudio_tasks.json"
    writer: ClassVar[str] = "autolabel.exports.labelstudio:export_labelstudio"
    format: Literal["labelstudio"]
    image_root: str = Field(default="/data/local-files/?d=", description="prefix of image references: local-files, "
                                                                         "URL or s3://bucket/prefix")
    model_version: str | None = Field(default=None, description="predictions' model_version (default: the "
                                                                "pipeline's name, else autolabel-<hash>)")
    task_score: Literal["min", "mean"] = Field(default="min", description="task score from box confidences")
    masks: Literal["brush", "polygon", "none"] = Field(default="brush", description="masks as regions")


class MotExport(ExportSpec):
    """``format: mot`` — clips' tracks as MOT 1.1 sequences (``<clip>/gt/gt.txt``, ``gt/labels.txt``)."""

    default_path: ClassVar[str] = "mot"
    writer: ClassVar[str] = "autolabel.exports.mot:export_mot"
    format: Literal["mot"]


class CvatVideoExport(ExportSpec):
    """``format: cvat-video`` — clips' tracks as CVAT for video 1.1 XML (``<clip>/annotations.xml``)."""

    default_path: ClassVar[str] = "cvat_video"
    writer: ClassVar[str] = "autolabel.exports.cvat_video:export_cvat_video"
    format: Literal["cvat-video"]


class LabelStudioVideoExport(ExportSpec):
    """``format: labelstudio-video`` — one Label Studio video task per clip (``videorectangle`` tracks)."""

    default_path: ClassVar[str] = "labelstudio_video_tasks.json"
    writer: ClassVar[str] = "autolabel.exports.labelstudio_video:export_labelstudio_video"
    format: Literal["labelstudio-video"]
    video_root: str = Field(default="/data/local-files/?d=", description="prefix of video references: local-files, "
                                                                         "URL or s3://bucket/prefix")
    model_version: str | None = Field(default=None, description="predictions' model_version (default: the "
                                                                "pipeline's name, else autolabel-<hash>)")
    task_score: Literal["min", "mean"] = Field(default="min", description="task score from box confidences")
    keyframe_tolerance: float = Field(default=1.0, ge=0.0, description="pixels interpolation between keyframes may "
                                                                       "miss a box by")


class YtvisExport(ExportSpec):
    """``format: ytvis`` — clips' tracks as YouTube-VIS style JSON with per-frame RLE masks."""

    default_path: ClassVar[str] = "ytvis.json"
    writer: ClassVar[str] = "autolabel.exports.ytvis:export_ytvis"
    format: Literal["ytvis"]


#: every export format's model, in the order they are listed (help, errors, docs): the one table of formats
EXPORT_MODELS: tuple[type[ExportSpec], ...] = (
    CocoExport, CocoResultsExport, YoloExport, LabelStudioExport, MotExport, CvatVideoExport, LabelStudioVideoExport,
    YtvisExport,
)
#: export format → its model
EXPORT_FORMATS: dict[str, type[ExportSpec]] = {model.name(): model for model in EXPORT_MODELS}
#: an export of any format, told apart by ``format``: what ``exports:`` holds
Export = Annotated[Union[EXPORT_MODELS], Field(discriminator="format")]  # noqa: UP007 — a union made from the table
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
            raise invalid("credentials in the URL are not used: remove them and put the token in "
                           "LABEL_STUDIO_API_KEY")
        return url


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
        return pipeline_hash({n: m.identity() for n, m in self.config.models.items()},
                             self.ontology.canonical(),  # normalised: `[person]` and `{person: null}` agree
                             [p.model_dump() for _, _, p in self.stages])

    @cached_property
    def stage_keys(self) -> list[str | None]:
        """Per stage, the key of its cached output, or None for stages that are not cached (see autolabel.cache).

        Each key covers the ontology (its normalised form) and every stage up to this one: their params, and for
        this one its model (id, revision, dtype, generation…; not the device).
        """
        models = self.config.models

        def model_of(params: StageParams) -> dict[str, Any] | None:
            name = params.model if isinstance(params, ModelStageParams) else None
            return models[name].identity() if name is not None and name in models else None

        return stage_keys(self.ontology.canonical(), [(p.model_dump(), model_of(p)) for _, _, p in self.stages])


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
            cls = stage_type(str(raw["type"]))
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
    """One line per pydantic error: ``key.path: problem``, with the accepted keys for unknown ones, and an export's
    options worded by format (:mod:`autolabel.validation` words the rest)."""
    lines = []
    for e in err.errors():
        loc, fmt = _export_format(schema, location(e))
        path = key_path(prefix, loc)
        if e["type"] in ("union_tag_invalid", "union_tag_not_found"):  # exports: no format, or an unknown one
            key = key_path(path, [e["ctx"]["discriminator"].strip("'")])
            if e["type"] == "union_tag_not_found":
                lines.append(f"{key}: missing required key")
            else:
                lines.append(f"{key}: input should be {one_of(list(EXPORT_FORMATS))} (got {e['ctx']['tag']!r})")
        elif e["type"] == "extra_forbidden" and fmt is not None and loc[-1] in export_keys():
            owners = [f for f, model in EXPORT_FORMATS.items() if loc[-1] in model.options()]
            takes = ", ".join(EXPORT_FORMATS[fmt].options()) or "no format options"
            lines.append(f"{path}: option of format {' / '.join(owners)}, not {fmt} ({fmt} takes: {takes})"
                         f"{shown(e.get('input'))}")
        else:
            lines.append(error_line(e, path, _accepted_keys(schema, loc[:-1])))
    return list(dict.fromkeys(lines))  # union types repeat the same complaint


def _export_format(schema: Any, loc: list[Any]) -> tuple[list[Any], str | None]:
    """An export's location without its format (pydantic puts the union member's tag in it: ``exports.0.yolo.task``),
    and that format."""
    at = 2 if schema is PipelineConfig and loc[:1] == ["exports"] else 0 if schema is ExportSpec else None
    if at is not None and len(loc) > at and loc[at] in EXPORT_FORMATS:
        return loc[:at] + loc[at + 1:], loc[at]
    return loc, None


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
