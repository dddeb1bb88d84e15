"""Executors decide where the stages run: in this process (``local``) or on a Ray cluster (``ray``).

Both honour one contract, :class:`~.contract.Executor`: the driver (the runner) hands over the sources and a ``commit``
callback; the executor labels them in batches and calls ``commit`` with each batch's results, which the driver
writes into the store in one transaction. Only ``ray`` imports Ray, and only when a run asks for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .contract import Commit, Executor, StopRequest

if TYPE_CHECKING:
    from ..config import ExecutorSpec


def executor_for(spec: "ExecutorSpec") -> Executor:
    """The executor a pipeline's ``executor:`` asks for."""
    if spec.type == "ray":
        from .ray import RayExecutor  # imports Ray itself only when it runs

        return RayExecutor(spec)
    from .local import LocalExecutor

    return LocalExecutor()


__all__ = ["Commit", "Executor", "StopRequest", "executor_for"]
