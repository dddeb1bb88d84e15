"""One batch of decoded images through the stages: what every executor runs, in-process or in a Ray actor.

Kept free of I/O (cached outputs are read through what is passed in: the store, or a Ray worker's prefetched
outputs; see :mod:`autolabel.cache`) so that the local loop and a remote worker share it
and produce the same results and the same stage outputs to cache.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING

from .. import cache
from ..pipeline import StageError
from ..records import to_record
from ..stage import Item
from ..store import ImageResult

if TYPE_CHECKING:
    from ..intake import Decoded
    from ..pipeline import Pipeline


def label_batch(
    pipeline: "Pipeline", batch: list["Decoded"], outputs: cache.Outputs, clock: Counter[str]
) -> tuple[list[ImageResult], list[cache.Row]]:
    """Run the stages over a batch, each image from its last cached model output on (read from ``outputs``).

    If the batch raises, retry image by image so one bad image costs one image. Returns the results and the
    stage outputs to write back. Frees each image's pixels once its labels are out.
    """
    t0 = time.perf_counter()
    keys = pipeline.spec.stage_keys
    restored = [cache.restore(outputs, d.sha256 or "", keys) for d in batch]
    clock["cache lookup"] += time.perf_counter() - t0

    def attempt(group: list[int]) -> tuple[list[Item], list[cache.Row]]:
        shas = [batch[k].sha256 for k in group]
        write_back = cache.WriteBack(keys, shas)
        items = [restored[k].item(batch[k].image, batch[k].source.path) for k in group]
        starts = [restored[k].start for k in group]
        # an image's vision features are computed once per model for the batch, found by its content
        return pipeline(items, starts, after=write_back, keys=shas), write_back.rows

    t0 = time.perf_counter()
    results: list[ImageResult] = []
    rows: list[cache.Row] = []
    groups = [list(range(len(batch)))]
    try:
        runs = [attempt(groups[0])]
    except StageError:
        groups, runs = [], []
        for k in range(len(batch)):
            try:
                runs.append(attempt([k]))
                groups.append([k])
            except StageError as err:
                results.append(failed(batch[k], str(err)))
    for group, (items, written) in zip(groups, runs):
        results.extend(done(batch[k], item) for k, item in zip(group, items))
        rows.extend(written)
    clock["stages"] += time.perf_counter() - t0
    for d in batch:
        d.image = None  # free the pixels now that the labels are out
    return results, rows


def done(d: "Decoded", item: Item) -> ImageResult:
    return ImageResult(
        path=d.source.path, rel_path=d.source.rel_path, sha256=d.sha256, status="done",
        width=item.labels.width, height=item.labels.height, labels=to_record(item.labels),
    )


def failed(d: "Decoded", reason: str) -> ImageResult:
    return ImageResult(path=d.source.path, rel_path=d.source.rel_path, sha256=d.sha256, status="failed", reason=reason)
