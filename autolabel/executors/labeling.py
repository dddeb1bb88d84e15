"""One batch of decoded images through the stages: what every executor runs, in-process or in a Ray actor.

Kept free of I/O (the cache lookup is a function passed in) so that the local loop and a remote worker share it
and produce the same results and the same stage outputs to cache.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING, Any, Callable

from ..pipeline import StageError
from ..records import from_record, to_record
from ..stage import Item
from ..store import ImageResult

if TYPE_CHECKING:
    from ..intake import Decoded
    from ..pipeline import Pipeline

#: ``cached(sha256, keys)`` → the cached stage outputs of this content among ``keys`` (key → labels record)
CacheLookup = Callable[[str, list[str]], dict[str, dict[str, Any]]]
#: (sha256, stage key, labels record) to write into ``stage_outputs``
CacheRow = tuple[str, str, dict[str, Any]]


def label_batch(
    pipeline: "Pipeline", batch: list["Decoded"], cached: CacheLookup, clock: Counter[str]
) -> tuple[list[ImageResult], list[CacheRow]]:
    """Run the stages over a batch, each image from its last cached model output on.

    If the batch raises, retry image by image so one bad image costs one image. Returns the results and the
    stage outputs to cache. Frees each image's pixels once its labels are out.
    """
    t0 = time.perf_counter()
    keys = pipeline.spec.stage_keys
    wanted = [k for k in keys if k is not None]
    starts, restored = [], []
    for d in batch:
        hits = cached(d.sha256 or "", wanted) if wanted else {}
        last = max((j for j, k in enumerate(keys) if k in hits), default=-1)
        starts.append(last + 1)
        restored.append(hits[keys[last]] if last >= 0 else None)
    clock["cache lookup"] += time.perf_counter() - t0

    def items_for(indexes: list[int]) -> list[Item]:
        out = []
        for k in indexes:
            item = Item.of(batch[k].image, batch[k].source.path)
            if restored[k] is not None:
                item.labels = from_record(restored[k])  # a fresh copy each try: a failed try may have changed it
            out.append(item)
        return out

    t0 = time.perf_counter()
    results: list[ImageResult] = []
    cache: list[CacheRow] = []
    groups = [list(range(len(batch)))]
    try:
        runs = [pipeline.run_batch(items_for(groups[0]), [starts[k] for k in groups[0]])]
    except StageError:
        groups, runs = [], []
        for k in range(len(batch)):
            try:
                runs.append(pipeline.run_batch(items_for([k]), [starts[k]]))
                groups.append([k])
            except StageError as err:
                results.append(failed(batch[k], str(err)))
    for group, (items, snapshots) in zip(groups, runs):
        for k, item, snaps in zip(group, items, snapshots):
            results.append(done(batch[k], item))
            cache.extend((batch[k].sha256 or "", keys[j], record) for j, record in snaps)
    clock["stages"] += time.perf_counter() - t0
    for d in batch:
        d.image = None  # free the pixels now that the labels are out
    return results, cache


def done(d: "Decoded", item: Item) -> ImageResult:
    return ImageResult(
        path=d.source.path, rel_path=d.source.rel_path, sha256=d.sha256, status="done",
        width=item.labels.width, height=item.labels.height, labels=to_record(item.labels),
    )


def failed(d: "Decoded", reason: str) -> ImageResult:
    return ImageResult(path=d.source.path, rel_path=d.source.rel_path, sha256=d.sha256, status="failed", reason=reason)
