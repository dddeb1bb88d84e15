"""``autolabel refine``: the data engine's refinement loop (Florence-2's FLD-5B, arXiv 2311.06242 §4.2.3).

Round 0 labels the images with the pipeline as it is. Each round N after it:

1. **train** — the pipeline's Florence-2 model (from its base weights, each round) on the reviewed labels'
   training images, plus — unless ``pseudo_labels=False`` — the merged labels of round N-1 on every image nobody
   reviewed (:mod:`.api`; validation on the reviewed labels' held-out images only, never on pseudo-labels);
2. **relabel** — the pipeline again, its model replaced by round N's (``OUT/round-N/run``);
3. **merge** — round N-1's merged labels and round N's, per image (:mod:`.merge`: fusion or agreement, each label
   keeping the round that made it), into ``OUT/round-N/merged`` (a run store: ``eval``, ``export``, ``push`` read
   it);
4. **eval** — before (round N-1's merged labels) and after (round N's), per class, on the reviewed validation
   images (autolabel's ``eval``). A round that does not raise AP by more than ``min_gain`` ends the loop, and the
   previous round's labels are the result.

Review: between invocations. ``refine --rounds 1``, push ``OUT/round-1/merged`` to Label Studio, review, ``pull``,
then ``refine --gt PULLED --rounds 2`` continues with the next round (the rounds done are kept in
``OUT/refine.json`` and not redone).
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..util import atomic_write_text
from .merge import IOU, Rule

STATE = "refine.json"
#: the tasks whose labels are boxes to merge
BOX_TASKS = ("od", "ovd", "grounding")


@dataclass
class RefineSummary:
    output: Path
    rounds: list[dict[str, Any]]
    best_round: int
    stopped: str

    @property
    def best(self) -> Path:
        """The merged labels of the best round (round 0: its run)."""
        entry = self.rounds[self.best_round]
        return Path(entry["merged"])

    def lines(self) -> list[str]:
        out = []
        for entry in self.rounds:
            ap = entry["eval"]["ap"]
            before = entry.get("before")
            gain = "" if before is None or before["ap"] is None or ap is None else f" ({ap - before['ap']:+.3f})"
            out.append(f"round {entry['round']}: validation AP {_f(ap)}{gain}; labels in {entry['merged']}")
        out.append(f"{self.stopped}; best: round {self.best_round} ({self.best})")
        return out


def refine(pipeline: str | Path, gt: str | Path, output: str | Path, images: str | Path | None = None,
           input: str | Path | list[str] | None = None, *, model_name: str | None = None,  # noqa: A002
           rounds: int | None = None, merge: Rule | None = None, merge_iou: float | None = None,
           min_gain: float | None = None, pseudo_labels: bool | None = None, progress: bool = True,
           **options: Any) -> RefineSummary:
    """Run rounds of train → relabel → merge until validation AP stops improving (see the module docstring).

    ``options`` are :func:`autolabel.train.api.train`'s (epochs, lr, batch_size, mode, ...), for every round.
    """
    from ..lock import RunLock
    from ..pipeline import Pipeline
    from .settings import parse

    rounds = 3 if rounds is None else rounds
    rule: Rule = merge or "fusion"
    iou = IOU if merge_iou is None else merge_iou
    gain = 0.0 if min_gain is None else min_gain
    if not 1 <= rounds <= 100:
        raise ConfigError(f"--rounds: between 1 and 100 (got {rounds})")
    if not 0.0 < iou <= 1.0:
        raise ConfigError(f"--merge-iou: between 0 and 1 (got {iou})")
    if not 0.0 <= gain < 1.0:
        raise ConfigError(f"--min-gain: between 0 and 1 (got {gain})")
    base = Pipeline.from_yaml(pipeline)
    name, task = _model_and_task(base, model_name, options.get("task"))
    options = {**options, "task": task}
    if not options.get("classes"):
        options["classes"] = base.spec.ontology.classes or None
    settings = parse(options)
    sources = input if input is not None else images
    if sources is None:
        raise ConfigError("--input: none given (pass --input, or --images for the reviewed images' folder)")
    out = Path(output)
    with RunLock(out, "refine"):
        return _rounds(pipeline, base, name, settings, Path(gt), images, sources, out, rounds, rule, iou, gain,
                       pseudo_labels is not False, progress)


def _model_and_task(pipeline: Any, model_name: str | None, task: str | None) -> tuple[str, str]:
    """The Florence-2 model to refine and the task to teach it (the pipeline's stage that runs it, by default)."""
    florence = [n for n, spec in pipeline.config.models.items() if spec.type == "florence2"]
    if model_name is None:
        if len(florence) != 1:
            raise ConfigError(f"--model-name: the pipeline declares {len(florence)} florence2 models "
                              f"({', '.join(florence) or 'none'}); name the one to refine")
        model_name = florence[0]
    elif model_name not in florence:
        raise ConfigError(f"--model-name: {model_name!r} is not a florence2 model of the pipeline (its florence2 "
                          f"models: {', '.join(florence) or 'none'})")
    if task is None:
        asked = [s.params.task for s in pipeline.stages
                 if getattr(s.params, "model", None) == model_name and getattr(s.params, "task", None) in BOX_TASKS]
        if not asked:
            raise ConfigError(f"--task: no stage of the pipeline asks {model_name!r} for boxes (od, ovd, grounding); "
                              "name the task")
        task = asked[0]
    if task not in BOX_TASKS:
        raise ConfigError(f"--task: refine merges boxes ({', '.join(BOX_TASKS)}), not {task}; use autolabel train")
    return model_name, task


def _rounds(pipeline_file: str | Path, base: Any, name: str, settings: Any, gt: Path, images: Any, sources: Any,
            out: Path, rounds: int, rule: Rule, iou: float, gain: float, pseudo: bool, progress: bool) -> RefineSummary:
    from ..quality.gt import load_ground_truth
    from ..store import DB_NAME
    from . import checkpoint
    from .api import train_on
    from .data import assign_splits, load
    from .lineage import LINEAGE_FILE

    state = _state(out)
    spec = base.config.models[name]
    reviewed = load(gt, images, settings.classes, base.spec.ontology)
    assign_splits(reviewed.examples, settings.val_fraction, settings.seed)
    val = {e.name for e in reviewed.examples if e.split == "val"} or {e.name for e in reviewed.examples}
    truth = load_ground_truth(gt) if not (gt / DB_NAME).is_file() else None
    done = state.setdefault("rounds", [])
    if not done:
        run0 = out / "round-0" / "run"
        _run(pipeline_file, [], sources, run0, progress)
        done.append({"round": 0, "run": str(run0), "merged": str(run0),
                     "eval": _evaluate(run0, gt, truth, val, base.spec.ontology)})
        _save(out, state)
    while len(done) <= rounds and done[-1].get("improved") is not False:
        number = len(done)
        previous = done[-1]
        folder = out / f"round-{number}"
        dataset = _training_set(reviewed, Path(previous["merged"]), settings, base.spec.ontology, pseudo)
        model_dir = folder / "model"
        if not (model_dir / LINEAGE_FILE).is_file():  # a refine killed after this round's training keeps it
            train_on(spec.id, dataset, model_dir, settings, revision=spec.revision,
                     resume=checkpoint.exists(model_dir), progress=progress, round_number=number)
        run_dir = folder / "run"
        _run(pipeline_file, [(f"models.{name}.id", str(model_dir.resolve()))], sources, run_dir, progress)
        merged = folder / "merged"
        _merge_stores(Path(previous["merged"]), run_dir, merged, number, rule, iou)
        after = _evaluate(merged, gt, truth, val, base.spec.ontology)
        before = previous["eval"]
        improved = after["ap"] is None or before["ap"] is None or after["ap"] > before["ap"] + gain
        done.append({"round": number, "model": str(model_dir), "run": str(run_dir), "merged": str(merged),
                     "eval": after, "before": before, "improved": improved, "rule": rule, "pseudo_labels": pseudo,
                     "per_class": _per_class(before, after)})
        _save(out, state)
    if done[-1].get("improved") is False:
        stopped = f"round {done[-1]['round']} did not raise validation AP by more than {gain}"
    else:
        stopped = f"stopped after {len(done) - 1} rounds (--rounds {rounds})"
    best = _best(done)
    state["best_round"] = best
    state["stopped"] = stopped
    _save(out, state)
    return RefineSummary(out, done, best, stopped)


def _best(done: list[dict[str, Any]]) -> int:
    """The last round that improved on the one before it (round 0 when none did)."""
    best = 0
    for entry in done[1:]:
        if entry.get("improved"):
            best = entry["round"]
        else:
            break
    return best


def _training_set(reviewed: Any, merged: Path, settings: Any, ontology: Any, pseudo: bool) -> Any:
    """The reviewed examples (their own split), and with ``pseudo`` the merged labels of every other image (train)."""
    from .data import Dataset, Tally, load

    examples = list(reviewed.examples)
    tally = Tally(Counter(reviewed.tally.counts), {k: list(v) for k, v in reviewed.tally.examples.items()})
    if pseudo:
        seen = {e.sha256 for e in examples}
        others = load(merged, None, settings.classes, ontology)
        for kind, n in others.tally.counts.items():  # what the round before labeled but cannot be learned
            tally.add(kind, n, (others.tally.examples.get(kind) or [None])[0])
        for example in others.examples:
            if example.sha256 not in seen:
                example.split = "train"
                examples.append(example)
                seen.add(example.sha256)
    return Dataset(examples, reviewed.ontology, dict(reviewed.source) | {"pseudo_labels": str(merged) if pseudo
                                                                          else None}, tally)


def _run(pipeline_file: str | Path, overrides: list[tuple[str, Any]], sources: Any, output: Path,
         progress: bool) -> None:
    """The pipeline over the images into ``output`` (its store resumes what a killed refine left); no push."""
    from ..pipeline import Pipeline

    pipeline = Pipeline.from_yaml(pipeline_file, [*overrides, ("push", None)])
    pipeline.run(input=sources, output=output, progress=progress)


def _merge_stores(old: Path, new: Path, output: Path, number: int, rule: Rule, iou: float) -> None:
    """Every image of ``new``'s store merged with its labels in ``old``'s (round ``number``), into a fresh store."""
    from ..errors import RunStatus
    from ..records import from_record, to_record
    from ..store import ImageResult, Store
    from .merge import merge, tag

    shutil.rmtree(output, ignore_errors=True)
    with Store(old) as before:
        previous = {row["sha256"]: row["labels"] for row in before.images() if row["labels"]}
    with Store(new) as after, Store(output) as store:
        spec = after.last_pipeline() or {}
        run_id = store.begin_run(_hash(spec, number), spec)
        results = []
        for row in after.images():
            labels = tag(from_record(row["labels"]), number)
            if row["sha256"] in previous:
                earlier = from_record(previous[row["sha256"]])
                labels = merge(tag(earlier, number - 1), labels, rule, iou)  # round 0's run: tagged here
            results.append(ImageResult(row["path"], row["rel_path"], row["sha256"], "done", row["width"],
                                       row["height"], labels=to_record(labels)))
            if len(results) >= 256:
                store.commit(results, run_id, _hash(spec, number))
                results = []
        store.commit(results, run_id, _hash(spec, number))
        store.end_run(run_id, RunStatus.OK, {"merged": {"old": str(old), "new": str(new), "round": number,
                                                         "rule": rule, "iou": iou}})


def _hash(spec: dict[str, Any], number: int) -> str:
    import hashlib

    from ..cache import canonical_json

    return hashlib.sha256(canonical_json({"merged": number, "pipeline": spec})).hexdigest()[:16]


def _evaluate(folder: Path, gt: Path, truth: Any, val: set[str], ontology: Any) -> dict[str, Any]:
    """AP per class of a store's labels on the reviewed validation images (autolabel's eval)."""
    from ..quality.data import pair
    from ..quality.eval import evaluate
    from ..quality.gt import GroundTruth
    from ..store import Store

    if truth is None:  # reviewed labels given as a run folder: read them as ground truth
        truth = _run_as_truth(gt)
    subset = GroundTruth(truth.path, truth.format, [im for im in truth.images if im.name in val], truth.classes)
    with Store(folder) as store:
        result = evaluate(pair(store, ontology, subset))
    return {"ap": result["overall"]["ap"], "ap50": result["overall"]["ap50"],
            "per_class": {c: v["ap"] for c, v in result["per_class"].items()}, "images": result["images"]["matched"]}


def _run_as_truth(folder: Path) -> Any:
    from ..quality.gt import GroundTruth, GtImage
    from .data import load

    dataset = load(folder)
    images = [GtImage(e.name, e.width, e.height, e.xyxy, e.classes, file=e.path) for e in dataset.examples]
    return GroundTruth(str(folder), "run", images, dataset.classes)


def _per_class(before: dict[str, Any], after: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """Per class: AP before, after, and the change."""
    out = {}
    for cls in dict.fromkeys([*before["per_class"], *after["per_class"]]):
        b, a = before["per_class"].get(cls), after["per_class"].get(cls)
        out[cls] = {"before": b, "after": a, "change": None if a is None or b is None else a - b}
    return out


def _state(out: Path) -> dict[str, Any]:
    try:
        data = json.loads((out / STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _save(out: Path, state: dict[str, Any]) -> None:
    atomic_write_text(out / STATE, json.dumps(state, indent=1, default=str) + "\n")


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
