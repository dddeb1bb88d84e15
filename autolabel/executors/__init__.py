"""Executors decide where the stages run: in this process (``local``) or on a Ray cluster (``ray``).

Both honour one contract, :class:`Executor`: the driver (the runner) hands over the sources and a ``commit``
callback; the executor labels them in batches and calls ``commit`` with each batch's results, which the driver
writes into the store in one transaction. Only ``ray`` imports Ray, and only when a run asks for it.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any, Callable, Protocol

if TYPE_CHECKING:
    from ..config import ExecutorSpec
    from ..intake import Source
    from ..pipeline import Pipeline
    from ..store import Store

#: ``commit(results, stage_outputs, skipped=0)``: write one batch, its stage outputs (:class:`autolabel.cache.Row`
#: rows to write back), and count ``skipped`` already-done images
Commit = Callable[..., None]


class StopRequest(Protocol):
    requested: bool


class Executor(Protocol):
    """Labels sources in batches, committing each batch through the driver's ``commit``."""

    def run(
        self, pipeline: "Pipeline", store: "Store", sources: list["Source"], commit: Commit, stop: StopRequest,
        clock: Counter[str],
    ) -> bool:
        """Label every source; return True when stopped early (``stop.requested``)."""
        ...

    def describe(self) -> dict[str, Any]:
        """What run.json records under ``executor`` (type, and for Ray: address, workers, per-worker timings)."""
        ...


def executor_for(spec: "ExecutorSpec") -> Executor:
    """The executor a pipeline's ``executor:`` asks for."""
    if spec.type == "ray":
        from .ray import RayExecutor  # imports Ray itself only when it runs

        return RayExecutor(spec)
    from .local import LocalExecutor

    return LocalExecutor()


__all__ = ["Commit", "Executor", "StopRequest", "executor_for"]
