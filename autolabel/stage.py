"""The one contract every stage honours: a named, configured callable over a batch of items.

A stage gets its parameters (a validated pydantic model) and a :class:`StageContext` (the ontology and the
pipeline's model pool) when built, and is then called with batches of :class:`Item`. It returns the items, with
labels added or decided on. Nothing is global: a worker that builds the stages (in-process, or in a Ray actor)
owns its models, which its pool loads once on first use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterable

from PIL import Image
from pydantic import BaseModel, ConfigDict

from .errors import ConfigError
from .labels import Labels
from .ontology import Ontology


@dataclass
class Item:
    """One image on its way through the stages: the decoded RGB image (displayed frame) and what is known of it."""

    image: Image.Image
    labels: Labels
    key: str = ""  # where it came from (a path), for messages
    frame: Any = None  # a video frame's place in its clip (autolabel.video.loop.FrameRef); None for an image

    @classmethod
    def of(cls, image: Image.Image, key: str = "") -> "Item":
        return cls(image=image, labels=Labels(width=image.width, height=image.height), key=key)


class StageParams(BaseModel):
    """Keys every stage accepts. Stage types subclass this with their own (unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid")
    #: keys whose values name earlier stages (a name, a list, or a mapping keyed by names); the pipeline checks
    #: them once, when it is built (:func:`stage_ref_problems`)
    stage_refs: ClassVar[tuple[str, ...]] = ()

    type: str
    name: str | None = None


class ModelStageParams(StageParams):
    """Keys of a stage that runs a model declared under ``models:``."""

    model: str


@dataclass
class StageContext:
    """What a stage may use beyond its parameters."""

    ontology: Ontology
    models: Any = None  # a ModelPool; typed loosely so filter stages need not import it
    extra: dict[str, Any] = field(default_factory=dict)


class Stage:
    """Base class of stages. Subclasses set ``Params`` and implement ``__call__``."""

    Params: ClassVar[type[StageParams]] = StageParams
    #: model types (``models.<name>.type``) this stage can run; empty for stages without a model
    model_types: ClassVar[tuple[str, ...]] = ()
    #: True: called with a whole chunk of a clip's consecutive frames at once (a tracker), never split in batches;
    #: an image comes alone, as a clip of one frame
    temporal: ClassVar[bool] = False
    #: True: decides over whole tracks once a clip's frames are all labeled (autolabel.filters.tracks); such
    #: stages come after every other stage, and leave images as they are
    over_clip: ClassVar[bool] = False

    def __init__(self, name: str, params: StageParams, context: StageContext):
        self.name = name
        self.params = params
        self.context = context

    def __call__(self, items: list[Item]) -> list[Item]:
        raise NotImplementedError

    @property
    def model(self) -> Any:
        """The loaded model this stage names (loaded on first use, shared with other stages naming it)."""
        return self.context.models.get(self.params.model)  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class ModelStage(Stage):
    """A stage that runs one declared model through the interface ``model_protocol`` declares.

    Built, it checks that the model type's class has every method of ``model_protocol`` (a ConfigError naming
    the missing one, before anything runs); running, it records the model in :meth:`provenance`.
    """

    Params: ClassVar[type[StageParams]] = ModelStageParams
    params: ModelStageParams
    #: what the stage calls on its model (a Protocol of :mod:`autolabel.models.contract`); None: not checked
    model_protocol: ClassVar[type | None] = None

    def __init__(self, name: str, params: StageParams, context: StageContext):
        super().__init__(name, params, context)
        self._check_model()

    @property
    def model_spec(self) -> Any:
        """The ``models:`` entry this stage names (None when the pool declares none, as in unit tests)."""
        return (getattr(self.context.models, "specs", None) or {}).get(self.params.model)

    @property
    def model_type(self) -> str | None:
        """The model's ``type``; without a spec, the one type this stage runs (None when it runs several)."""
        spec = self.model_spec
        if spec is not None:
            return spec.type
        return self.model_types[0] if len(self.model_types) == 1 else None

    def model_class(self) -> type | None:
        """The class that loads this stage's model (None when unknown: config validation reports that)."""
        from .registry import MODEL_GROUP, UnknownType, resolve

        if self.model_spec is None:
            return None
        try:
            return resolve(MODEL_GROUP, self.model_spec.type)
        except UnknownType:
            return None

    def _check_model(self) -> None:
        from .models.contract import methods, missing_methods

        protocol, cls = self.model_protocol, self.model_class()
        if protocol is None or cls is None:
            return
        missing = missing_methods(cls, protocol)
        if missing:
            raise ConfigError(
                f"model: model {self.params.model!r} (type {self.model_type}: {cls.__module__}.{cls.__qualname__}) "
                f"has no method {missing[0]}(), which stage type {self.params.type!r} calls (interface "
                f"{protocol.__name__}: {', '.join(methods(protocol))}; see README, Your own models and stages)"
            )

    def provenance(self, model: Any, task: str, **fields: Any) -> dict[str, Any]:
        """What labels record of the model that made them: id, revision, type and task (and, for a model trained
        by ``autolabel train``, its lineage), then the stage's fields.

        ``task``: what the stage asked, unless the model names its own ``task``.
        """
        from .models.contract import declared

        lineage = declared(model, "lineage")  # a model `autolabel train` made: its base, data, round
        return {
            "model": declared(model, "id"),
            "revision": declared(model, "revision"),
            "model_type": self.model_type,
            "task": declared(model, "task") or task,
            **({"lineage": lineage} if lineage else {}),
            **fields,
        }


def stage_ref_problems(params: StageParams, earlier: list[str]) -> list[str]:
    """One line per stage name in ``params.stage_refs`` keys that is not among ``earlier`` (``key: problem``).

    >>> class P(StageParams):
    ...     stage_refs = ("from_stages",)
    ...     from_stages: list[str] | None = None
    >>> stage_ref_problems(P(type="t", from_stages=["a", "c"]), ["a", "b"])
    ["from_stages: 'c' is not an earlier stage (earlier stages: a, b)"]
    """
    problems = []
    for key in params.stage_refs:
        value: Any = params
        for part in key.split("."):  # a dotted key names a field of a nested mapping (exemplars.from_stages)
            value = getattr(value, part, None)
        names = [value] if isinstance(value, str) else list(value or ())
        problems += [f"{key}: {name!r} is not an earlier stage (earlier stages: {', '.join(earlier) or 'none'})"
                     for name in names if name not in earlier]
    return problems


def check_classes(names: Iterable[str], ontology: Ontology, key: str) -> None:
    """Raise a ConfigError naming ``key`` if any of ``names`` is not an ontology class."""
    unknown = [n for n in names if n not in ontology.prompts]
    if unknown:
        known = ", ".join(ontology.classes) or "the ontology is empty"
        raise ConfigError(f"{key}: unknown class {unknown[0]!r} (known: {known})")


def by_contract(cls: type) -> bool:
    """Whether stage class ``cls`` accepts any model type that implements its ``model_protocol``."""
    return isinstance(cls, type) and issubclass(cls, ModelStage) and cls.model_protocol is not None
