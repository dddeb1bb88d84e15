"""Vision features shared by the stages of a batch: each image's features computed once per model.

A vision tower is most of the cost of a short answer (Florence-2's DaViT at 768², SAM's image encoder), and a
pipeline asks one model about one image many times: ``pipelines/fld5b.yaml`` runs seven Florence-2 stages. So the
pipeline gives each call over a batch a :class:`BatchFeatures` (per model name and image key, owned by that call,
dropped when it returns: memory is bounded by the batch). A stage that takes ``features`` gets its items' view of
it (:class:`StageFeatures`) and hands the model an :class:`ImageFeatures`; the model asks it for the images it
needs, and only those not computed yet run through the tower (:meth:`VisionModel.vision_features`).

A model type opts in with two things (see ``docs/vision-sharing.md``):

* ``vision_features(images) -> list``: one entry per image, anything (a tensor, a tuple of tensors, a dataclass),
  depending on the image and the model only, never on a stage's options;
* a ``features`` keyword on the method its stage calls, read with ``features.get(images, indices)``; called
  without one (outside a pipeline), it computes them itself: :meth:`ImageFeatures.direct`.

Each model's passes are counted (:class:`VisionCount`, run.json's ``vision_passes``): with sharing, one per image;
without (``share_vision_features: false``, the escape hatch), one per stage and image, as before.

Two model *entries* share too when their towers are one computation (:class:`SharedTower`): SAM 3's detector and
tracker loaded from one checkpoint run the same backbone weights on the same pixels. A model says what its features
are made by, short of the weights (``vision_family``: architecture, config, preprocessing, dtype, device; cheap), and
digests its weights (``vision_weights``, asked only when two models of one family meet in a batch, so a model alone
never pays for it); equal family and equal digest, and one model's features stand in for the other's. The digest is
of the tensors themselves, not of where they were read from: different weights never share.

Nothing heavy is imported here: validating a pipeline imports this module.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence, runtime_checkable

if TYPE_CHECKING:
    from PIL import Image

#: ``compute(images)``: one features entry per image, in order (a model's ``vision_features``)
Compute = Callable[[Sequence["Image.Image"]], Sequence[Any]]


@runtime_checkable
class VisionModel(Protocol):
    """A model whose image features a batch can share: what :meth:`StageFeatures.of` looks for."""

    def vision_features(self, images: Sequence["Image.Image"]) -> Sequence[Any]:
        """One entry per image (in order), a function of the image and the model only."""
        ...


@runtime_checkable
class SharedTower(Protocol):
    """A model whose ``vision_features`` another model entry can compute for it (:meth:`BatchFeatures.group`).

    Both methods must be true of ``vision_features`` as a whole: equal families and equal weights mean equal features
    for every image, in the same form, whichever of the two models computes them.
    """

    def vision_family(self) -> str:
        """What computes the features, short of the weights: the tower's class and config, the image preprocessing,
        dtype and device. Cheap (asked once per batch)."""
        ...

    def vision_weights(self) -> str:
        """A digest of the tower's weights (every parameter and buffer it reads): asked only when another model of
        the same family is in the batch; compute it once per loaded model."""
        ...


@dataclass
class VisionCount:
    """What one model's vision tower did (run.json's ``vision_passes``, summed over batches and tries).

    ``images``: distinct images a stage asked this model's features for; ``passes``: images run through the tower
    (equal to ``images`` when shared); ``requests``: (stage, image) asks; ``seconds``: time in the tower.
    """

    images: int = 0
    passes: int = 0
    requests: int = 0
    seconds: float = 0.0

    def __add__(self, other: "VisionCount") -> "VisionCount":
        return VisionCount(self.images + other.images, self.passes + other.passes, self.requests + other.requests,
                           self.seconds + other.seconds)

    def __sub__(self, other: "VisionCount") -> "VisionCount":
        """What was done since ``other`` (a Ray worker reports each batch's share of its running totals)."""
        return VisionCount(self.images - other.images, self.passes - other.passes, self.requests - other.requests,
                           self.seconds - other.seconds)

    def summary(self) -> dict[str, Any]:
        """What run.json records: the counts, ``per_image`` (passes / images: 1.0 when shared) and the seconds.

        >>> VisionCount(images=4, passes=28, requests=28, seconds=7.123456).summary()
        {'images': 4, 'passes': 28, 'per_image': 7.0, 'requests': 28, 'seconds': 7.1235}
        """
        per_image = round(self.passes / self.images, 3) if self.images else 0.0
        return {"images": self.images, "passes": self.passes, "per_image": per_image, "requests": self.requests,
                "seconds": round(self.seconds, 4)}


class ImageFeatures:
    """One model's features for the images of one call: those already computed are reused, the rest computed.

    Built by a batch (:meth:`StageFeatures.of`: kept and counted there) or by :meth:`direct` (nothing kept).
    """

    def __init__(self, compute: Compute, keys: Sequence[str] | None = None, kept: dict[str, Any] | None = None,
                 count: VisionCount | None = None, asked: set[str] | None = None):
        self.compute = compute
        self.keys = keys  # per image of the call: its key in the batch (None: direct, nothing shared)
        self.kept = kept  # image key → features (None: not shared; each ask computes)
        self.count = count
        self.asked = asked

    @classmethod
    def direct(cls, compute: Compute) -> "ImageFeatures":
        """Features computed on every ask and kept nowhere: a model called outside a pipeline.

        >>> ImageFeatures.direct(lambda images: [len(i) for i in images]).get(["ab", "c", "def"], [2, 0])
        [3, 2]
        """
        return cls(compute)

    def get(self, images: Sequence["Image.Image"], indices: Sequence[int], chunk: int | None = None) -> list[Any]:
        """The features of ``images[i]`` for each ``i`` of ``indices``, in that order.

        Those not kept are computed with one ``compute`` call per ``chunk`` images (default: all at once); with
        sharing, an image asked twice (or two images of one content) is computed once.
        """
        indices = list(indices)
        keys = [self.keys[i] for i in indices] if self.keys is not None else None
        if keys is not None and self.count is not None and self.asked is not None:
            self.count.requests += len(indices)
            self.asked.update(keys)
        if self.kept is None or keys is None:
            return self._compute(images, indices, chunk)
        missing = list(dict.fromkeys(k for k in keys if k not in self.kept))
        first = {k: i for i, k in reversed(list(zip(indices, keys)))}  # an image of each missing key
        computed = self._compute(images, [first[k] for k in missing], chunk)
        self.kept.update(zip(missing, computed))
        return [self.kept[k] for k in keys]

    def _compute(self, images: Sequence["Image.Image"], indices: list[int], chunk: int | None = None) -> list[Any]:
        if not indices:
            return []
        step = chunk or len(indices)
        t0 = time.perf_counter()
        out: list[Any] = []
        for start in range(0, len(indices), step):
            part = [images[i] for i in indices[start : start + step]]
            found = list(self.compute(part))
            if len(found) != len(part):
                raise RuntimeError(f"vision_features returned {len(found)} entries for {len(part)} images")
            out.extend(found)
        _synchronize()  # on a GPU the tower's kernels are asynchronous: count the time they took, not their launch
        if self.count is not None:
            self.count.passes += len(indices)
            self.count.seconds += time.perf_counter() - t0
        return out


class BatchFeatures:
    """The vision features of one batch, per model name (or shared tower, :meth:`group`) and image key: owned by one
    pipeline call over a batch. Passes are counted per model name, against the model that ran them.

    ``keys``: per batch position, what identifies its image (its content's sha256, or its position when the caller
    knows none); ``share``: keep features for later stages (False: every stage computes its own, counted alike).
    """

    def __init__(self, keys: Sequence[str], share: bool = True):
        self.keys = list(keys)
        self.share = share
        self._kept: dict[str, dict[str, Any]] = {}  # group (see :meth:`group`) → image key → features
        self._asked: dict[str, set[str]] = {}
        self._counts: dict[str, VisionCount] = {}
        self._groups: dict[str, str] = {}  # model name → the group whose kept features it reads and fills
        self._families: dict[str, list[tuple[str, Any]]] = {}  # vision family → (name, model) of each group

    def for_stage(self, positions: Sequence[int]) -> "StageFeatures":
        """The view a stage gets: its items are the batch's ``positions``, in order."""
        return StageFeatures(self, [self.keys[p] for p in positions])

    def counts(self) -> dict[str, VisionCount]:
        """Per model name, what its tower did for this batch so far (``images``: distinct images asked)."""
        return {name: VisionCount(len(self._asked[name]), c.passes, c.requests, c.seconds)
                for name, c in self._counts.items()}

    def clear(self) -> None:
        """Drop every feature (the batch is done); the counts stay."""
        self._kept.clear()

    def group(self, name: str, model: Any) -> str:
        """The name of the model whose kept features model ``name`` shares: its own, unless an earlier model of the
        batch has the same :meth:`SharedTower.vision_family` and equal :meth:`SharedTower.vision_weights`.

        >>> class Tower:
        ...     def __init__(self, weights): self.weights = weights
        ...     def vision_features(self, images): return list(images)
        ...     def vision_family(self): return "toy tower, 8 px"
        ...     def vision_weights(self): return self.weights
        >>> batch = BatchFeatures(["a"])
        >>> [batch.group(n, Tower(w)) for n, w in (("det", "w1"), ("tracker", "w1"), ("tuned", "w2"))]
        ['det', 'det', 'tuned']
        """
        if name in self._groups:
            return self._groups[name]
        group = name
        family = _family(model)
        if family is not None:
            leaders = self._families.setdefault(family, [])  # one model per group of this family
            for other_name, other in leaders:
                if other is model or other.vision_weights() == model.vision_weights():
                    group = other_name
                    break
            else:
                leaders.append((name, model))
        self._groups[name] = group
        return group

    def _view(self, name: str, compute: Compute, keys: list[str], model: Any = None) -> ImageFeatures:
        count = self._counts.setdefault(name, VisionCount())
        asked = self._asked.setdefault(name, set())
        kept = self._kept.setdefault(self.group(name, model), {}) if self.share else None
        return ImageFeatures(compute, keys, kept, count, asked)


@dataclass
class StageFeatures:
    """A stage's view of its batch's features: its items' keys, in the order of the items it was given."""

    batch: BatchFeatures
    keys: list[str] = field(default_factory=list)

    def of(self, name: str, model: Any) -> ImageFeatures | None:
        """The features of model ``name`` (``model``, as the pool loaded it) for this stage's items; None when the
        model has no ``vision_features`` (it then computes its own)."""
        if not callable(getattr(model, "vision_features", None)):
            return None
        return self.batch._view(name, model.vision_features, self.keys, model)


def shared(features: StageFeatures | None, name: str, model: Any, method: Callable[..., Any]) -> dict[str, Any]:
    """Keyword arguments for ``method`` of ``model``: ``{"features": ...}`` when all three take part, else ``{}``.

    A stage calls ``model.method(..., **shared(features, self.params.model, model, model.method))``: a model without
    ``vision_features``, or whose method takes no ``features`` (a plugin written before), runs as it always did.
    """
    from .contract import accepts

    if features is None or not accepts(method, "features"):
        return {}
    view = features.of(name, model)
    return {} if view is None else {"features": view}


def _family(model: Any) -> str | None:
    """``model.vision_family()`` when the model shares its tower across entries (both methods present), else None."""
    if not (callable(getattr(model, "vision_family", None)) and callable(getattr(model, "vision_weights", None))):
        return None
    return str(model.vision_family())


def _synchronize() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
