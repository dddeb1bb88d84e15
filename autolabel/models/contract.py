"""What a model type offers the stages that run it: one declared interface per kind of model.

A model type is any class with ``load(spec)``; the stage that runs it calls the methods of one of these protocols
(``Detect`` a :class:`Detector`, ``Segment`` a :class:`Segmenter`, ``Concepts`` a :class:`ConceptModel`, ``Ocr``
an :class:`OcrModel`, ``Florence2Stage`` a :class:`Florence2Model`). A plugin implements them by shape, no base
class needed. When a pipeline is built, each model stage checks that its model's class has every method it will
call (:func:`missing_methods`), so a model without one is a one-line configuration error, not an
``AttributeError`` halfway through a run.

Attributes are read through :func:`declared`: ``id`` and ``revision`` are recorded in each run's provenance; the
others are optional, with the defaults in :data:`OPTIONAL`.

Nothing heavy is imported here: validating a pipeline imports this module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Protocol, Sequence, runtime_checkable

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from ..config import ModelSpec
    from .concepts import ConceptPrompt, Instances
    from .florence2 import Answer
    from .outputs import Boxes, Masks, TextLines
    from .sam3_video import Masklets


@runtime_checkable
class Model(Protocol):
    """What every model type has: a loader, and the ids run.json and provenance record."""

    id: str  # what ``id:`` named (a hub id, a folder, a name)
    revision: str | None  # the commit or version its weights came from, when known

    @classmethod
    def load(cls, spec: "ModelSpec") -> "Model":
        """Build the model from its ``models:`` entry; raise ModelLoadError with one line when it cannot."""
        ...


@runtime_checkable
class Detector(Model, Protocol):
    """Open-vocabulary detection (stage ``detect``): scored boxes for text prompts."""

    default_box_threshold: ClassVar[float]  # optional (0.3): the box score floor when the stage sets none
    #: optional (None): a per-token score floor; None says the model has one score per box (no text_threshold)
    default_text_threshold: ClassVar[float | None]

    def detect(
        self, images: Sequence["Image.Image"], prompts: Sequence[str], box_threshold: float | None = None,
        text_threshold: float | None = None,
    ) -> list["Boxes"]:
        """One :class:`~.outputs.Boxes` per image, pixels of that image; ``labels`` index ``prompts``."""
        ...


@runtime_checkable
class Segmenter(Model, Protocol):
    """Box-prompted segmentation (stage ``segment``): one mask per box."""

    def segment(
        self, images: Sequence["Image.Image"], boxes: Sequence["np.ndarray"], multimask: bool = False,
        max_boxes_per_call: int = 64,
    ) -> list["Masks"]:
        """One :class:`~.outputs.Masks` per image, in the order of its ``boxes`` ((N, 4) xyxy pixels).

        ``max_boxes_per_call`` is passed only to a ``segment`` that takes it (it bounds memory, not results);
        ``features`` (the batch's shared image embeddings, :mod:`.features`) only to a model with
        ``vision_features`` whose ``segment`` takes it.
        """
        ...


@runtime_checkable
class ConceptModel(Model, Protocol):
    """Promptable concept segmentation (stage ``concepts``): every instance of a noun phrase and/or example boxes."""

    default_threshold: ClassVar[float]  # optional (0.5): the score floor when the stage sets none
    max_prompt_tokens: ClassVar[int | None]  # optional (None): the longest prompt, in tokens, the model reads

    def segment_concepts(
        self, images: Sequence["Image.Image"], prompts: Sequence[Sequence["ConceptPrompt"]],
        threshold: float | None = None, mask_threshold: float = 0.5, max_instances: int | None = None,
        rows_per_call: int = 8,
    ) -> list["Instances"]:
        """One :class:`~.concepts.Instances` per image (pixels of that image); ``prompts[i]`` are image ``i``'s and
        each instance's ``prompts`` value indexes them."""
        ...


@runtime_checkable
class OcrModel(Model, Protocol):
    """Text detection and recognition (stage ``ocr``): quads, strings and scores per image."""

    def read(
        self, images: Sequence["Image.Image"], min_score: float = 0.5, box_threshold: float = 0.5,
        unclip_ratio: float = 1.6,
    ) -> list["TextLines"]:
        """One :class:`~.outputs.TextLines` per image, quads in pixels of that image."""
        ...


@runtime_checkable
class Florence2Model(Model, Protocol):
    """A Florence-2 style sequence model (stage ``florence2``): task tokens in, parsed answers out."""

    def settings(self, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """The generation settings a run uses (recorded in provenance): defaults, the model's, the stage's."""
        ...

    def run(
        self, task: str, images: Sequence["Image.Image"], rows: Sequence[tuple[int, str]] | None = None,
        generation: dict[str, Any] | None = None, max_rows: int = 64,
    ) -> list["Answer"]:
        """One :class:`~.florence2.Answer` per row ``(image index, text input)`` (default: one per image).

        ``features`` (the batch's shared image features, :mod:`.features`) is passed only to a model with
        ``vision_features`` whose ``run`` takes it.
        """
        ...

    def region_prompts(self, xyxy: "np.ndarray", size: tuple[int, int]) -> list[str]:
        """Boxes ((N, 4) pixels of an image of ``size`` = (W, H)) as the location tokens region tasks read."""
        ...


@runtime_checkable
class ConceptTracker(Model, Protocol):
    """Concepts tracked through a clip (stage ``track``): every prompt's objects on each frame, with object ids."""

    def track_concepts(
        self, frames: Sequence["Image.Image"], prompts: Sequence[str], threshold: float | None = None,
        new_object_threshold: float | None = None,
    ) -> list["Masklets"]:
        """One :class:`~.sam3_video.Masklets` per frame (consecutive frames of one clip); ids are this call's."""
        ...


@runtime_checkable
class BoxTracker(Model, Protocol):
    """Boxes propagated through a clip (stage ``track_boxes``): a session stepped frame by frame."""

    def box_tracking(self, frames: Sequence["Image.Image"]) -> Any:
        """A session with ``step(frame, new) -> Masklets`` (see :class:`~.sam3_video.BoxTracking`)."""
        ...


#: attributes a model may leave out, and what the stages assume then
OPTIONAL: dict[str, Any] = {
    "id": None,
    "revision": None,
    "task": None,  # the model's own name for what it does; default: the stage's
    "lineage": None,  # a trained model's lineage summary (autolabel.train.lineage): recorded in provenance
    "default_box_threshold": 0.3,
    "default_text_threshold": None,
    "default_threshold": 0.5,
    "max_prompt_tokens": None,
}


def declared(model: Any, name: str) -> Any:
    """A model's (or model class's) attribute ``name``, or its default from :data:`OPTIONAL`."""
    return getattr(model, name, OPTIONAL[name])


def methods(protocol: type) -> list[str]:
    """The methods ``protocol`` declares (its own and its bases'), in declaration order.

    >>> methods(Detector)
    ['load', 'detect']
    """
    out: list[str] = []
    for klass in reversed(protocol.__mro__):
        if not getattr(klass, "_is_protocol", False) or klass is Protocol:
            continue
        for name, value in vars(klass).items():
            if not name.startswith("_") and (callable(value) or isinstance(value, (classmethod, staticmethod))):
                out.append(name)
    return list(dict.fromkeys(out))


def missing_methods(cls: type, protocol: type) -> list[str]:
    """The methods of ``protocol`` that ``cls`` (a model class) does not have, or has as non-callables."""
    return [name for name in methods(protocol) if not callable(getattr(cls, name, None))]


def accepts(function: Any, name: str) -> bool:
    """Whether ``function`` takes a keyword ``name`` (or any keyword): an optional parameter of an interface.

    >>> accepts(lambda images, boxes, multimask=False: None, "max_boxes_per_call")
    False
    """
    import inspect

    try:
        params = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
