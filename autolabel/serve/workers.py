"""The threads the backend's work runs on: daemon threads only, so that a stop is never held up by one of them.

``concurrent.futures.ThreadPoolExecutor`` (and the ASGI server's own thread pool) join their threads when the
interpreter exits: one fetch stuck in a read, or one model batch, would keep a stopped server alive. Every
blocking call here is bounded by its request's deadline anyway; daemon threads make the stop itself bounded too.

* :class:`Workers` — a fixed set of threads taking calls in priority order (the model's single thread: smart-tool
  clicks before pipeline batches; the request threads);
* :func:`map_parallel` — one request's fetches, a few at a time, on threads of its own (a large batch from one
  caller never queues in front of another caller's store answer), stopping at the first failure.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")
#: priorities of :meth:`Workers.submit` (lower first)
FIRST, NORMAL = 0, 1


class Workers:
    """``count`` daemon threads running submitted calls, lower ``priority`` first, in order within a priority."""

    def __init__(self, count: int, name: str):
        self._queue: queue.PriorityQueue[tuple[int, int, Any]] = queue.PriorityQueue()
        self._order = itertools.count()
        self._closed = False
        self.threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(count)]
        for thread in self.threads:
            thread.start()

    def submit(self, fn: Callable[..., R], *args: Any, priority: int = NORMAL) -> Future[R]:
        future: Future[R] = Future()
        if self._closed:
            future.cancel()
            future.set_running_or_notify_cancel()
            return future
        self._queue.put((priority, next(self._order), (future, fn, args)))
        return future

    def close(self) -> None:
        """Cancel what has not started and let the threads end (a call in progress finishes on its own)."""
        self._closed = True
        while True:
            try:
                _, _, job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job[0].cancel()
                job[0].set_running_or_notify_cancel()
        for _ in self.threads:
            self._queue.put((-1, -1, None))

    def _work(self) -> None:
        while True:
            _, _, job = self._queue.get()
            if job is None:
                return
            future, fn, args = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args)
            except BaseException as err:  # noqa: BLE001 — handed to whoever waits on the future
                future.set_exception(err)
            else:
                future.set_result(result)


def map_parallel(fn: Callable[[T], R], items: Iterable[T], threads: int, name: str) -> list[R]:
    """``[fn(x) for x in items]`` on up to ``threads`` daemon threads; the first exception stops the rest (items
    not started are skipped) and is raised."""
    todo = list(items)
    if threads <= 1 or len(todo) <= 1:
        return [fn(x) for x in todo]
    results: list[Any] = [None] * len(todo)
    errors: list[BaseException] = []
    pending = iter(enumerate(todo))
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                if errors:
                    return
                k, item = next(pending, (-1, None))
            if k < 0:
                return
            try:
                results[k] = fn(item)  # type: ignore[arg-type]
            except BaseException as err:  # noqa: BLE001 — raised in the caller's thread below
                with lock:
                    errors.append(err)
                return

    pool = [threading.Thread(target=work, name=f"{name}-{i}", daemon=True) for i in range(min(threads, len(todo)))]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    if errors:
        raise errors[0]
    return results
