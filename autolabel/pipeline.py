"""The Python API: named stages in order and one loop over a batch, like torchvision's ``Compose``.

``pipeline(items)`` runs the stages over one batch; :meth:`Pipeline.run` hands the pipeline to the runner
(:mod:`autolabel.runner`), which owns a run: images, batches, the store, exports, run.json.

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
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from .cache import WriteBack
from .config import PipelineSpec, load_file, parse
from .errors import ConfigError, StageError  # StageError: still importable from here, for plugins
from .models.contract import accepts
from .models.features import BatchFeatures, VisionCount
from .models.pool import ModelPool
from .stage import Item, Stage, StageContext, stage_ref_problems

if TYPE_CHECKING:
    from .config import PipelineConfig
    from .labels import Labels
    from .runner import RunSummary

__all__ = ["AfterStage", "Pipeline", "StageError"]

#: ``after(stage index, item index, labels)``: called as each stage labels each item (the cache's write-back)
AfterStage = Callable[[int, int, "Labels"], None]


class Pipeline:
    """Named stages in order, built from a pipeline file. Models load lazily, once per Pipeline instance."""

    def __init__(self, spec: PipelineSpec, source: str | None = None, models: ModelPool | None = None):
        """``models``: a pool to share (its already-loaded weights) when it declares exactly these models."""
        self.spec = spec
        self.source = source  # the pipeline file, for messages and run.json
        same = models is not None and models.specs == spec.config.models
        self.models = models if same else ModelPool(spec.config.models)
        self.timings: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)  # images each stage processed
        self.vision: dict[str, VisionCount] = {}  # per model: its vision passes (run.json's vision_passes)
        self.stages = self._build_stages()
        #: stages that take the batch's shared image features (a plugin stage's ``__call__`` may not)
        self._shares = [accepts(stage.__call__, "features") for stage in self.stages]

    def _build_stages(self) -> list[Stage]:
        """Construct every stage (cheap: models load on first use); a stage's ConfigError gets its key path.

        Then the stages each one names (``from_stages``, ``caption_from``, ...: its params' ``stage_refs``) must
        come before it: checked here, once, for every stage type.
        """
        names = [name for name, _, _ in self.spec.stages]
        context = StageContext(ontology=self.spec.ontology, models=self.models)
        stages, problems = [], []
        for i, (name, cls, params) in enumerate(self.spec.stages):
            try:
                stages.append(cls(name, params, context))
            except ConfigError as err:
                problems.extend(f"stages[{i}].{p}" for p in err.problems)
                continue
            problems.extend(f"stages[{i}].{p}" for p in stage_ref_problems(params, names[:i]))
        problems.extend(_clip_stage_problems(stages))
        if problems:
            raise ConfigError(problems)
        return stages

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: Sequence[str] = (), models: ModelPool | None = None) -> "Pipeline":
        """Load and validate a pipeline file; ``overrides`` are ``dotted.key=value`` strings like ``--set``."""
        return cls(parse(load_file(path), overrides), source=str(path), models=models)

    @classmethod
    def from_dict(cls, data: dict[str, Any], overrides: Sequence[str] = ()) -> "Pipeline":
        return cls(parse(data, overrides))

    @property
    def config(self) -> PipelineConfig:
        return self.spec.config

    @property
    def names(self) -> list[str]:
        """The stages' names, in order."""
        return [stage.name for stage in self.stages]

    def __getitem__(self, key: int | str) -> Stage:
        """A stage by position or by name (``pipeline["detect"]``)."""
        if isinstance(key, str):
            for stage in self.stages:
                if stage.name == key:
                    return stage
            raise KeyError(f"no stage named {key!r} (stages: {', '.join(self.names)})")
        return self.stages[key]

    def __len__(self) -> int:
        return len(self.stages)

    def __call__(
        self, items: list[Item], starts: list[int] | None = None, after: AfterStage | None = None,
        keys: Sequence[str | None] | None = None,
        end: int | None = None,
    ) -> list[Item]:
        """Run every stage over one batch, in order; time each stage; name the stage in any error.

        ``starts[k]``: the first stage item ``k`` goes through (its earlier ones restored from the cache, see
        :mod:`autolabel.cache`). ``after(j, k, labels)`` is called once stage ``j`` has labeled item ``k``.
        ``keys[k]``: what identifies item ``k``'s image (its content's sha256; default: its place in the batch):
        each model's vision features of an image are computed once for the batch and shared by its stages
        (:mod:`autolabel.models.features`), then dropped when this call returns.
        ``end``: stop before that stage (a clip's chunks run its stages one at a time: :mod:`autolabel.video.loop`).
        """
        items = list(items)
        starts = starts or [0] * len(items)
        features = BatchFeatures([key or f"#{k}" for k, key in enumerate(keys or [None] * len(items))],
                                 share=self.config.share_vision_features)
        try:
            for j, stage in enumerate(self.stages[:end]):
                todo = [k for k, start in enumerate(starts) if start <= j]
                if todo:
                    shared = {"features": features.for_stage(todo)} if self._shares[j] else {}
                    for k, item in zip(todo, self._run_stage(stage, [items[k] for k in todo], shared)):
                        items[k] = item
                        if after is not None:
                            after(j, k, item.labels)
        finally:
            features.clear()  # a failed try's traceback would otherwise keep them
            for name, count in features.counts().items():  # every try's passes are work done
                self.vision[name] = self.vision.get(name, VisionCount()) + count
        return items

    def _run_stage(self, stage: Stage, batch: list[Item], shared: dict[str, Any]) -> list[Item]:
        """One stage over its items, timed and counted; any error names the stage."""
        t0 = time.perf_counter()
        try:
            out = stage(batch, **shared)
        except Exception as err:
            if getattr(err, "exit_code", None) is not None:  # AutolabelError: fatal, not per image
                raise
            raise StageError(stage.name, err) from err
        if not isinstance(out, list) or len(out) != len(batch):
            got = len(out) if isinstance(out, list) else type(out).__name__
            raise StageError(stage.name, RuntimeError(f"returned {got} items for {len(batch)}"))
        self.timings[stage.name] += time.perf_counter() - t0
        self.calls[stage.name] += len(batch)
        return out

    def run_batch(
        self, items: list[Item], starts: list[int] | None = None
    ) -> tuple[list[Item], list[list[tuple[int, dict[str, Any]]]]]:
        """``pipeline(items, starts)``, and per item the labels after each cached stage: ``(stage index, record)``.

        Kept for callers that write the cache themselves; executors use :class:`autolabel.cache.WriteBack`.
        """
        write_back = WriteBack(self.spec.stage_keys, [None] * len(items))
        return self(items, starts, after=write_back), write_back.per_item

    def run(
        self,
        input: str | Path | Iterable[str | Path] | None = None,  # noqa: A002 — mirrors the CLI's --input
        output: str | Path | None = None,
        *,
        progress: bool = False,
    ) -> RunSummary:
        """Label every image of ``input`` into the output folder (resuming what is done) and write the exports."""
        from .runner import run

        return run(self, input=input, output=output, progress=progress)


def _clip_stage_problems(stages: list[Stage]) -> list[str]:
    """Track filters decide once all of a clip's frames are labeled, so they come after every frame stage.

    >>> class Track(Stage):
    ...     over_clip = True
    >>> _clip_stage_problems([Track("t", None, None), Stage("s", None, None)])
    ["stages[1]: stage 's' comes after the track filter 't'; track filters decide over whole clips, so they come last"]
    """
    first = next((i for i, s in enumerate(stages) if s.over_clip), None)
    if first is None:
        return []
    return [f"stages[{i}]: stage {s.name!r} comes after the track filter {stages[first].name!r}; track filters "
            "decide over whole clips, so they come last" for i, s in enumerate(stages) if i > first and not s.over_clip]
