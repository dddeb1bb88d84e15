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

    @classmethod
    def of(cls, image: Image.Image, key: str = "") -> "Item":
        return cls(image=image, labels=Labels(width=image.width, height=image.height), key=key)


class StageParams(BaseModel):
    """Keys every stage accepts. Stage types subclass this with their own (unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid")

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


def check_classes(names: Iterable[str], ontology: Ontology, key: str) -> None:
    """Raise a ConfigError naming ``key`` if any of ``names`` is not an ontology class."""
    unknown = [n for n in names if n not in ontology.prompts]
    if unknown:
        known = ", ".join(ontology.classes) or "the ontology is empty"
        raise ConfigError(f"{key}: unknown class {unknown[0]!r} (known: {known})")
