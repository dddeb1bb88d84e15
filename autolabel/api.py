"""The Python API's :class:`Pipeline`: the batch loop of :mod:`autolabel.pipeline` plus :meth:`Pipeline.run`.

``run`` hands the pipeline to the runner, which sits above the batch loop (the executors run the loop, the runner
runs the executors), so it is added here, at the top, rather than on the loop itself.

>>> from autolabel import Pipeline
>>> pipeline = Pipeline.from_yaml("pipelines/ocr.yaml")                      # doctest: +SKIP
>>> summary = pipeline.run(input="examples/images", output="runs/example")  # doctest: +SKIP
>>> summary.counts                                                           # doctest: +SKIP
{'seen': 3, 'labeled': 3, 'skipped': 0, 'failed': 0}
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from . import pipeline
from .runner import RunSummary, run


class Pipeline(pipeline.Pipeline):
    """Named stages in order, built from a pipeline file; ``pipeline(items)`` labels one batch, :meth:`run` a run."""

    def run(
        self,
        input: str | Path | Iterable[str | Path] | None = None,  # noqa: A002 — mirrors the CLI's --input
        output: str | Path | None = None,
        *,
        progress: bool = False,
    ) -> RunSummary:
        """Label every image of ``input`` into the output folder (resuming what is done) and write the exports."""
        return run(self, input=input, output=output, progress=progress)


__all__ = ["Pipeline"]
