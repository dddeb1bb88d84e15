"""The incremental cache: what a key is made of, where an image restarts, and the rows written back.

A model stage's output (the image's labels right after it) is kept per image content (sha256) under a key made of
everything that output depends on, so a later run re-runs only what changed:

* **keys** (a spec's ``stage_keys``, made by :func:`autolabel.identity.stage_keys`): one per model stage, chained
  over the normalised ontology and every stage up to it (its params, and its model's identity). A changed model
  stage re-runs itself and what follows; a changed filter after it re-runs no model at all.
* **restore** (:func:`restore`): the last cached output of an image's content among the pipeline's keys, and the
  stage to start from. The outputs come from the store (:meth:`autolabel.store.Store.cached`) or, on a Ray worker,
  from one read of the driver's store per batch (:class:`Prefetched`).
* **write-back** (:class:`WriteBack`): while the stages run, the labels after each cached stage, as the
  ``(sha256, key, record)`` stage outputs the driver commits into the store's ``stage_outputs`` with the batch.

The store holds the rows (SQL only); this module decides what they are. Keys are stable: stores written before
are still read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Protocol

from .identity import KEY_LENGTH, canonical_json
from .records import from_record, to_record
from .stage import Item

if TYPE_CHECKING:
    from .labels import Labels

__all__ = ["KEY_LENGTH", "Outputs", "Prefetched", "Restored", "StageOutput", "WriteBack", "canonical_json", "prefetch",
           "restore"]  # KEY_LENGTH and canonical_json: the label identity's (autolabel.identity), read here as before

#: a stage output to cache, as the store's ``stage_outputs`` holds it: (content sha256, stage key, labels record)
StageOutput = tuple[str, str, dict[str, Any]]


class Outputs(Protocol):
    """Where cached outputs are read from: the store, or a batch's :class:`Prefetched` outputs."""

    def cached(self, sha256: str, keys: list[str]) -> dict[str, dict[str, Any]]:
        """The cached outputs of this content among ``keys`` (key → labels record)."""
        ...


@dataclass(frozen=True)
class Restored:
    """Where an image restarts: the first stage to run, and the labels it starts with (None: from scratch)."""

    start: int = 0
    record: dict[str, Any] | None = None

    def item(self, image: Any, key: str = "") -> Item:
        """A fresh item for a try at the stages: its own copy of the restored labels (a failed try may change it)."""
        item = Item.of(image, key)
        if self.record is not None:
            item.labels = from_record(self.record)
        return item


def restore(outputs: Outputs, sha256: str, keys: list[str | None]) -> Restored:
    """The last cached output of this content among ``keys`` (a pipeline's stage keys), and the stage after.

    >>> restore(Prefetched({"c0ffee": {"k2": {"boxes": "..."}}}), "c0ffee", [None, "k1", "k2", None])
    Restored(start=3, record={'boxes': '...'})
    >>> restore(Prefetched({}), "c0ffee", [None, "k1"])
    Restored(start=0, record=None)
    """
    wanted = [k for k in keys if k is not None]
    hits = outputs.cached(sha256, wanted) if wanted else {}
    last = max((j for j, k in enumerate(keys) if k is not None and k in hits), default=-1)
    return Restored(last + 1, hits[keys[last]]) if last >= 0 else Restored()  # type: ignore[index]


@dataclass
class Prefetched:
    """The cached outputs of a batch's images, read in one call (a Ray worker asks the driver's store once)."""

    hits: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # sha256 → key → labels record

    def cached(self, sha256: str, keys: list[str]) -> dict[str, dict[str, Any]]:
        found = self.hits.get(sha256, {})
        return {k: found[k] for k in keys if k in found}


def prefetch(outputs: Outputs, shas: Iterable[str], keys: list[str | None]) -> Prefetched:
    """Read the cached outputs of these contents among ``keys`` at once (nothing is read when none is cached)."""
    wanted = [k for k in keys if k is not None]
    return Prefetched({sha: outputs.cached(sha, wanted) for sha in shas} if wanted else {})


class WriteBack:
    """The rows to write back from one try at a batch: each image's labels right after each cached stage.

    Passed to the pipeline as its ``after`` hook; a try that fails is dropped with its rows.
    """

    def __init__(self, keys: list[str | None], shas: list[str | None]):
        self.keys, self.shas = keys, shas
        self.per_item: list[list[tuple[int, dict[str, Any]]]] = [[] for _ in shas]  # (stage index, labels record)

    def __call__(self, stage: int, k: int, labels: Labels) -> None:
        """Stage ``stage`` has labeled item ``k``: keep a snapshot when that stage is cached."""
        if self.keys[stage] is not None:
            self.per_item[k].append((stage, to_record(labels)))

    @property
    def rows(self) -> list[StageOutput]:
        """What to commit into ``stage_outputs``, image by image."""
        return [(sha or "", self.keys[j], record)  # type: ignore[misc]
                for sha, snaps in zip(self.shas, self.per_item) for j, record in snaps]
