"""Pipeline files: parse, override, validate — before anything heavy loads.

Every problem is reported as ``key.path: problem`` (e.g. ``stages[2].model: unknown model 'florenc' (known:
florence)``), all problems at once, as a :class:`~autolabel.errors.ConfigError`.
"""

from __future__ import annotations

import hashlib
import json
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from .errors import ConfigError, one_line
from .ontology import Ontology
from .overrides import apply_overrides
from .registry import BUILTIN_MODELS, MODEL_GROUP, STAGE_GROUP, UnknownType, check, resolve
from .stage import ModelStageParams, StageParams, by_contract


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


#: Options each export format takes, with their defaults (keys of ExportSpec beyond format, path, min_score, flagged).
EXPORT_OPTIONS: dict[str, dict[str, Any]] = {
    "coco": {"segmentation": "polygon", "captions": True},
    "coco-results": {"segmentation": "polygon"},
    "yolo": {"task": "detect", "split": {"train": 0.8, "val": 0.2}, "seed": 0, "images": "symlink"},
    "labelstudio": {
        "image_root": "/data/local-files/?d=", "model_version": None, "task_score": "min", "masks": "brush",
    },
}
_SPLITS = ("train", "val", "test")


class ExportSpec(_Strict):
    """An export written at the end of each run (and by ``autolabel export``).

    Format-specific options default to ``None`` here and are read through :meth:`option`, so that an option given
    to a format that does not take it is an error naming the key (not silently ignored).
    """

    format: Literal["coco", "coco-results", "yolo", "labelstudio"]
    path: str | None = None  # relative to the output folder; default per format
    min_score: float = Field(default=0.0, ge=0.0, le=1.0)  # boxes scored below are left out (unknown scores pass)
    flagged: Literal["include", "exclude"] = "include"  # boxes a quality check flagged for review
    # coco
    segmentation: Literal["polygon", "rle"] | None = None
    captions: bool | None = None  # write the COCO-captions file beside the COCO file
    # yolo
    task: Literal["detect", "segment"] | None = None
    split: dict[str, float] | None = None  # e.g. {train: 0.8, val: 0.2}
    seed: int | None = None
    images: Literal["symlink", "copy"] | None = None
    # labelstudio
    image_root: str | None = None  # prefix of image references: local-files, URL or s3://bucket/prefix
    model_version: str | None = None
    task_score: Literal["min", "mean"] | None = None
    masks: Literal["brush", "polygon", "none"] | None = None

    @field_validator("segmentation", "captions", "task", "split", "seed", "images", "image_root", "model_version",
                     "task_score", "masks", mode="before")
    @classmethod
    def _option_of_format(cls, value: Any, info: ValidationInfo) -> Any:
        fmt = info.data.get("format")
        if fmt is not None and info.field_name not in EXPORT_OPTIONS[fmt]:
            owners = [f for f, opts in EXPORT_OPTIONS.items() if info.field_name in opts]
            takes = ", ".join(EXPORT_OPTIONS[fmt]) or "no format options"
            raise _invalid(f"option of format {' / '.join(owners)}, not {fmt} ({fmt} takes: {takes})")
        return value

    @field_validator("split")
    @classmethod
    def _split_fractions(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is None:
            return value
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

    def option(self, key: str) -> Any:
        """The value of a format option: as given, else the format's default."""
        value = getattr(self, key)
        return EXPORT_OPTIONS[self.format][key] if value is None else value


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
    models: dict[str, ModelSpec] = Field(default_factory=dict)
    ontology: dict[str, str | list[str] | None] | list[str] = Field(default_factory=dict)
    stages: list[dict[str, Any]] = Field(min_length=1)
    exports: list[ExportSpec] = Field(default_factory=list)
    push: PushSpec | None = None  # Label Studio push after each run
    executor: ExecutorSpec = Field(default_factory=ExecutorSpec)

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
            "models": {n: _model_identity(m) for n, m in self.config.models.items()},
            "ontology": self.ontology.canonical(),  # the normalised form: `[person]` and `{person: null}` agree
            "stages": [p.model_dump() for _, _, p in self.stages],
        }
        return hashlib.sha256(_canonical_json(keep)).hexdigest()[:16]

    @cached_property
    def stage_keys(self) -> list[str | None]:
        """Per stage, the key of its cached output, or None for stages that are not cached.

        Stages that run a model (their params name one) are cached, keyed by everything their output depends
        on: their own params, their model (id, revision, dtype, generation…), and every stage before them. So a
        changed model stage re-runs itself and what follows; a changed filter after it re-runs no model at all.
        """
        keys: list[str | None] = []
        chain = hashlib.sha256(_canonical_json(self.ontology.canonical()))
        for _, _, params in self.stages:
            chain.update(_canonical_json(params.model_dump()))
            model = getattr(params, "model", None) if isinstance(params, ModelStageParams) else None
            if model is not None and model in self.config.models:
                chain.update(_canonical_json(_model_identity(self.config.models[model])))
                keys.append(chain.hexdigest()[:24])
            else:
                keys.append(None)
        return keys


def _model_identity(spec: ModelSpec) -> dict[str, Any]:
    """What of a model decides its outputs: everything but where and how fast it runs (device, compile)."""
    return spec.model_dump(exclude={"device", "compile"})


def _canonical_json(value: Any) -> bytes:
    """The bytes every hash is taken of: keys sorted, so the order a file lists them in changes nothing."""
    return json.dumps(value, sort_keys=True, default=str).encode()


def load_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML pipeline file into a dict, with one-line errors for missing files and syntax errors."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such pipeline file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(f"{path}: {where}invalid YAML: {err.problem or err}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: invalid YAML: {one_line(err)}") from None
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
        path = _path(prefix, loc)
        if e["type"] == "extra_forbidden":
            known = _accepted_keys(schema, loc[:-1])
            lines.append(f"{path}: unknown key" + (f" (known: {', '.join(known)})" if known else ""))
        elif e["type"] == "missing":
            lines.append(f"{path}: missing required key")
        else:
            msg = e["msg"][0].lower() + e["msg"][1:]
            got = e.get("input")
            shown = "" if isinstance(got, (dict, list)) or got is None else f" (got {got!r})"
            lines.append(f"{path}: {msg}{shown}")
    return list(dict.fromkeys(lines))  # union types repeat the same complaint


# pydantic names union members in error locations; they are not keys of the file
_UNION_TAGS = {"str", "list[str]", "dict[str,union[str,list[str],none]]", "none", "int", "float", "bool"}


def _path(prefix: str, loc: list[Any]) -> str:
    out = prefix
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top>"


def _accepted_keys(schema: type[BaseModel], parent: list[Any]) -> list[str]:
    """The keys the schema accepts in the mapping at ``parent`` (for 'unknown key' messages)."""
    if schema is PipelineConfig and len(parent) == 2:
        schema = {"models": ModelSpec, "exports": ExportSpec}.get(parent[0])  # type: ignore[assignment]
    elif schema is PipelineConfig and parent == ["push"]:
        schema = PushSpec
    elif schema is PipelineConfig and parent == ["executor"]:
        schema = ExecutorSpec
    elif parent:
        return []
    return list(schema.model_fields) if schema is not None else []
