"""The executor contract: what the runner hands an executor and what it calls back (see :mod:`autolabel.executors`).

Its own module so that each executor imports the contract, not the package that picks among them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Protocol

if TYPE_CHECKING:
    from ..accounting import Account
    from ..intake import Source
    from ..pipeline import Pipeline
    from ..store import Store

#: ``commit(results, stage_outputs, skipped=0)``: write one batch, its stage outputs to write back
#: (:data:`autolabel.cache.StageOutput`), and count ``skipped`` already-done images
Commit = Callable[..., None]


class StopRequest(Protocol):
    requested: bool


class Executor(Protocol):
    """Labels sources in batches, committing each batch through the driver's ``commit``."""

    def run(
        self, pipeline: "Pipeline", store: "Store", sources: list["Source"], commit: Commit, stop: StopRequest,
        account: "Account",
    ) -> bool:
        """Label every source, counting the work into the run's ``account``; True when stopped early
        (``stop.requested``)."""
        ...

    def describe(self) -> dict[str, Any]:
        """What run.json records under ``executor`` (type, and for Ray: address, workers, per-worker timings)."""
        ...
