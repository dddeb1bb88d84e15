"""``autolabel train`` and ``autolabel refine`` as Python calls, with the CLI's options as keyword arguments.

>>> from autolabel.train.api import train
>>> summary = train("florence-community/Florence-2-base", gt="reviewed/coco.json",      # doctest: +SKIP
...                 images="photos/", output="models/florence-od", epochs=10, lr=2e-4)
>>> summary.output, summary.lineage["result"]["val_ap"]                                # doctest: +SKIP
(PosixPath('models/florence-od'), 0.61)

The trained folder is a model id: ``models: {florence: {type: florence2, id: models/florence-od}}``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import AutolabelError, ExitCode
from . import checkpoint, lineage
from .data import DataError, Dataset

if TYPE_CHECKING:
    from ..ontology import Ontology
    from .loop import OnStep
    from .settings import TrainSettings

REPORT = "train.json"


class OutputError(AutolabelError):
    """The output folder holds something training would overwrite or cannot continue."""

    exit_code = ExitCode.CONFIG


@dataclass
class TrainSummary:
    """What a training did: the folder it wrote, its lineage (also in ``lineage.json``) and report (``train.json``)."""

    output: Path
    lineage: dict[str, Any]
    report: dict[str, Any]
    left_out: list[str] = field(default_factory=list)  # one line per kind of input that could not be used

    @property
    def val_ap(self) -> float | None:
        return self.lineage["result"]["val_ap"]


def _stderr(line: str) -> None:
    print(f"autolabel: train: {line}", file=sys.stderr)


def train(model: str, gt: str | Path, output: str | Path, images: str | Path | None = None, *,
          revision: str | None = None, resume: bool = False, overwrite: bool = False, progress: bool = True,
          on_step: OnStep | None = None, notes: Callable[[str], None] | None = _stderr,
          ontology: Ontology | None = None, **options: Any) -> TrainSummary:
    """Fine-tune Florence-2 ``model`` (a hub id or folder) on the labels in ``gt`` (COCO, YOLO, VOC, ``autolabel
    pull`` output, or a run's output folder) into ``output``; ``options`` are :class:`~.settings.TrainSettings`.

    ``notes`` gets one line per kind of input left out (default: printed to stderr); ``on_step(step, loss)`` is
    called after every optimizer step. ``ontology``: a pipeline's, to map the ground truth's class names.
    """
    from .data import assign_splits, load
    from .settings import parse

    settings = parse(options)
    dataset = load(gt, images, settings.classes, ontology)
    assign_splits(dataset.examples, settings.val_fraction, settings.seed)
    return train_on(model, dataset, output, settings, revision=revision, resume=resume, overwrite=overwrite,
                    progress=progress, on_step=on_step, notes=notes)


def train_on(model: str, dataset: Dataset, output: str | Path, settings: TrainSettings, *,
             revision: str | None = None, resume: bool = False, overwrite: bool = False, progress: bool = True,
             on_step: OnStep | None = None, notes: Callable[[str], None] | None = _stderr,
             round_number: int | None = None) -> TrainSummary:
    """:func:`train` on a dataset already read and split (what ``refine`` builds each round)."""
    from ..lock import RunLock
    from .model import check_transformers

    check_transformers()
    out = Path(output)
    with RunLock(out, "train"):
        _check_output(out, resume, overwrite)
        return _train(model, dataset, out, settings, revision, resume, progress, on_step, notes, round_number)


def _check_output(out: Path, resume: bool, overwrite: bool) -> None:
    if overwrite:  # what an earlier training wrote: an adapter left beside new whole weights would win at loading
        checkpoint.remove(out)
        for pattern in (lineage.LINEAGE_FILE, REPORT, lineage.ADAPTER_CONFIG, "adapter_model*", "model*.safetensors",
                        "model.safetensors.index.json"):
            for stale in out.glob(pattern):
                stale.unlink()
        return
    if resume:
        if not checkpoint.exists(out):
            done = " (it holds a finished training)" if (out / lineage.LINEAGE_FILE).is_file() else ""
            raise OutputError(f"--resume: {out} holds no checkpoint to continue{done}; start without --resume")
        return
    if checkpoint.exists(out):
        raise OutputError(f"--output {out}: holds an unfinished training; pass --resume to continue it, or "
                          "--overwrite to start over")
    if (out / lineage.LINEAGE_FILE).is_file():
        raise OutputError(f"--output {out}: already holds a trained model; choose another folder, or pass "
                          "--overwrite to replace it")


def _train(model_id: str, dataset: Dataset, out: Path, settings: TrainSettings, revision: str | None,
           resume: bool, progress: bool, on_step: OnStep | None, notes: Callable[[str], None] | None,
           round_number: int | None) -> TrainSummary:
    from . import data, loop, samples
    from .model import LoraSettings, load, prepare, save

    if not dataset.examples:
        raise DataError(_nothing(dataset, "no usable image left"))
    if settings.task != "ocr_regions" and not any(len(e.classes) for e in dataset.examples):
        raise DataError(_nothing(dataset, f"no box of the classes {', '.join(dataset.classes)}"))
    florence = load(model_id, revision, settings.device)
    processor = florence.processor
    max_answer, max_prompt = samples.limits(florence.model.config, processor)
    if settings.max_target_tokens is not None:
        if settings.max_target_tokens > max_answer:
            raise DataError(f"--max-target-tokens: this model writes at most {max_answer} answer tokens (got "
                            f"{settings.max_target_tokens})")
        max_answer = settings.max_target_tokens
    train_idx, val_idx = dataset.split("train"), dataset.split("val")
    train_samples = samples.build(dataset, settings.task, processor, max_answer, max_prompt, train_idx)
    val_samples = samples.build(dataset, settings.task, processor, max_answer, max_prompt, val_idx)
    left_out = dataset.tally.lines()
    for line in left_out if notes is not None else ():
        notes(line)
    if not train_samples:
        raise DataError(_nothing(dataset, "no training pair left"))
    validate_on = val_idx or sorted({s.example for s in train_samples})  # nothing held out: the fit on training
    digest = data.digest(settings.task, [(dataset.examples[s.example].split, dataset.examples[s.example].sha256,
                                          dataset.examples[s.example].width, dataset.examples[s.example].height,
                                          s.pair.prompt, s.pair.answer) for s in train_samples + val_samples])
    base = _base(model_id, florence)
    identity = {"settings": settings.identity(), "base": base, "data": digest}
    saved = None
    if resume:
        saved = checkpoint.load(out)
        different = checkpoint.mismatch(saved.settings, identity)
        if different:
            raise checkpoint.ResumeError(f"--resume: the checkpoint in {out} was made with other settings or data: "
                                         f"{different}; run with the same options, or start over with --overwrite")
    lora = LoraSettings(settings.lora_r, settings.lora_alpha, settings.lora_dropout)
    import torch

    torch.manual_seed(settings.seed)  # LoRA's initial weights: the same for the same seed, whatever ran before
    peft_model = prepare(florence.model, settings.mode, settings.train_vision, lora)
    gen = loop.generation(settings.eval_beams, train_samples + val_samples)
    result = loop.fit(florence, dataset, train_samples, validate_on, settings, gen, out, saved, identity,
                      progress=progress, on_step=on_step)
    kept = result.kept or loop.evaluate(florence, dataset, validate_on, settings.task, gen, settings.batch_size)
    weights = save(out, florence.model, peft_model, processor, "adapter" if settings.mode == "lora" and
                   settings.save == "adapter" else "merged")
    record = {
        "version": lineage.VERSION,
        "weights": lineage.files_digest(weights),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "task": settings.task,
        "mode": settings.mode,
        "saved_as": "adapter" if settings.mode == "lora" and settings.save == "adapter" else "merged",
        "base": base,
        "data": {"digest": digest, **dataset.source, "classes": dataset.classes,
                 "images": {"train": len(train_idx), "val": len(val_idx)},
                 "pairs": {"train": len(train_samples), "val": len(val_samples)},
                 "validated_on": "val" if val_idx else "train", "left_out": dataset.tally.as_dict()},
        "settings": settings.model_dump() | {"lr": settings.learning_rate},
        "generation": gen,
        "result": {"epochs": result.loop.epoch, "steps": result.loop.step, "best_epoch": result.loop.best_epoch,
                   "val_ap": kept.ap, "val_ap50": kept.ap50, "per_class": kept.per_class,
                   "stopped_early": result.loop.stopped_early},
        "round": round_number,
        "versions": _versions(),
    }
    report = {"lineage": record, "history": result.loop.history, "seconds": round(result.seconds, 3),
              "left_out": left_out, "predictions": kept.predictions}
    _write_json(out / REPORT, report)
    _write_json(out / lineage.LINEAGE_FILE, record)  # last: a folder with lineage.json is a finished model
    checkpoint.remove(out)
    return TrainSummary(out, record, report, left_out)


def _base(model_id: str, florence: Any) -> dict[str, Any]:
    """The base model as lineage records it: a folder by its absolute path (an adapter must find it again)."""
    folder = Path(model_id).expanduser()
    identifier = str(folder.resolve()) if folder.is_dir() else model_id
    out: dict[str, Any] = {"id": identifier, "revision": florence.revision}
    parent = getattr(florence, "lineage", None)
    if parent:
        out["lineage"] = parent
    return out


def _nothing(dataset: Dataset, what: str) -> str:
    problems = "; ".join(dataset.tally.lines()) or "the ground truth lists no image"
    return f"--gt {dataset.source.get('gt')}: nothing to train on, {what} ({problems})"


def _versions() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    from ..runner import package_versions

    out = package_versions()
    try:
        out["peft"] = version("peft")
    except PackageNotFoundError:
        out["peft"] = None
    return out


def _write_json(path: Path, data: dict[str, Any]) -> None:
    import json

    from ..util import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=1, default=str) + "\n")
