"""The Python API: a validated pipeline that labels batches and runs over image sets.

>>> from autolabel import Pipeline
>>> pipeline = Pipeline.from_yaml("pipelines/ocr.yaml")                      # doctest: +SKIP
>>> summary = pipeline.run(input="examples/images", output="runs/example")  # doctest: +SKIP
>>> summary.counts                                                           # doctest: +SKIP
{'seen': 3, 'labeled': 3, 'skipped': 0, 'failed': 0}
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Sequence

from .config import PipelineSpec, load_file, parse
from .errors import ConfigError
from .models.pool import ModelPool
from .stage import Item, Stage, StageContext


class StageError(Exception):
    """An error raised inside a stage, carrying the stage's name for the failure reason."""

    def __init__(self, stage: str, error: BaseException):
        self.stage = stage
        self.error = error
        message = " ".join(str(error).split()) or type(error).__name__
        super().__init__(f"stage {stage!r}: {type(error).__name__}: {message}")


class Pipeline:
    """Named stages in order, built from a pipeline file. Models load lazily, once per Pipeline instance."""

    def __init__(self, spec: PipelineSpec, source: str | None = None):
        self.spec = spec
        self.source = source  # the pipeline file, for messages and run.json
        self.models = ModelPool(spec.config.models)
        self.timings: dict[str, float] = defaultdict(float)
        self.stages = self._build_stages()

    def _build_stages(self) -> list[Stage]:
        """Construct every stage (cheap: models load on first use); a stage's ConfigError gets its key path."""
        context = StageContext(ontology=self.spec.ontology, models=self.models)
        stages, problems = [], []
        for i, (name, cls, params) in enumerate(self.spec.stages):
            try:
                stages.append(cls(name, params, context))
            except ConfigError as err:
                problems.extend(f"stages[{i}].{p}" for p in err.problems)
        if problems:
            raise ConfigError(problems)
        return stages

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: Sequence[str] = ()) -> "Pipeline":
        """Load and validate a pipeline file; ``overrides`` are ``dotted.key=value`` strings like ``--set``."""
        return cls(parse(load_file(path), overrides), source=str(path))

    @classmethod
    def from_dict(cls, data: dict[str, Any], overrides: Sequence[str] = ()) -> "Pipeline":
        return cls(parse(data, overrides))

    @property
    def config(self):  # noqa: ANN201 — PipelineConfig
        return self.spec.config

    def __call__(self, items: list[Item]) -> list[Item]:
        """Run every stage over one batch, in order; time each stage; name the stage in any error."""
        for stage in self.stages:
            start = time.perf_counter()
            try:
                out = stage(items)
            except Exception as err:  # noqa: BLE001 — re-raised with the stage's name
                if getattr(err, "exit_code", None) is not None:  # AutolabelError: fatal, not per image
                    raise
                raise StageError(stage.name, err) from err
            if not isinstance(out, list) or len(out) != len(items):
                got = len(out) if isinstance(out, list) else type(out).__name__
                raise StageError(stage.name, RuntimeError(f"returned {got} items for {len(items)}"))
            items = out
            self.timings[stage.name] += time.perf_counter() - start
        return items

    def run(
        self,
        input: str | Path | Iterable[str | Path] | None = None,  # noqa: A002 — mirrors the CLI's --input
        output: str | Path | None = None,
        *,
        progress: bool = False,
    ):  # noqa: ANN201 — RunSummary
        """Label every image of ``input`` into the output folder (resuming what is done) and write the exports."""
        from .runner import run

        return run(self, input=input, output=output, progress=progress)
