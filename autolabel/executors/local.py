"""The in-process executor: decode in background threads, stages in batches, in this process."""

from __future__ import annotations

import time
from collections import Counter
from functools import partial
from typing import TYPE_CHECKING, Any

from ..intake import Decoded, load, prefetch
from ..store import ImageResult
from .labeling import failed, label_batch

if TYPE_CHECKING:
    from ..intake import Source
    from ..pipeline import Pipeline
    from ..store import Store
    from . import Commit, StopRequest


class LocalExecutor:
    """Decoding threads feed batches of ``batch_size`` to the stages, one batch at a time."""

    def run(
        self, pipeline: "Pipeline", store: "Store", sources: list["Source"], commit: "Commit", stop: "StopRequest",
        clock: Counter[str],
    ) -> bool:
        config, phash = pipeline.config, pipeline.spec.hash
        loader = partial(load, max_pixels=config.max_image_pixels, max_bytes=config.max_file_bytes,
                         known=lambda s, sha: store.is_done(s.path, sha, phash))
        ahead = config.batch_size * 2 + config.decode_workers
        batch: list[Decoded] = []
        pending: list[ImageResult] = []  # failures waiting to be committed with the next batch

        def flush() -> None:
            labeled, cache = label_batch(pipeline, batch, store, clock) if batch else ([], [])
            commit(pending + labeled, cache)
            pending.clear()
            batch.clear()

        # a stop is seen while decoding is awaited too: a read that never returns does not hold the run up
        decoded_iter = prefetch(loader, sources, workers=config.decode_workers, ahead=ahead,
                                stop=lambda: stop.requested)
        while True:
            t0 = time.perf_counter()
            decoded = next(decoded_iter, None)
            clock["waiting for decode"] += time.perf_counter() - t0
            if decoded is None and stop.requested:
                batch.clear()  # not started: left for the resume
                flush()
                return True
            if decoded is None:
                break
            if decoded.skipped:
                commit([], [], skipped=1)
            elif decoded.ok:
                batch.append(decoded)
            else:
                pending.append(failed(decoded, decoded.reason or "unreadable"))
            if len(batch) >= config.batch_size or len(pending) >= config.batch_size:
                flush()
            if stop.requested:
                batch.clear()  # not started: left for the resume
                flush()
                decoded_iter.close()
                return True
        if batch or pending:
            flush()
        return False

    def describe(self) -> dict[str, Any]:
        return {"type": "local"}

