"""The training loop: batches, the native loss, gradient accumulation, validation, checkpoints, early stopping.

* **Same order after a resume.** Epoch ``e`` visits the training pairs in the permutation drawn from
  ``(seed, e)``, and the dropout generator is reseeded from ``(seed, step)`` before each optimizer step, so a run
  resumed from a checkpoint takes the very steps an uninterrupted run takes (bit for bit on the CPU).
* **The native loss.** ``labels`` go to the model, which shifts them right itself and computes cross-entropy over
  the ids that are not -100; with gradient accumulation each batch's summed loss is divided by the label tokens of
  the whole accumulation group (``num_items_in_batch``, as ``Trainer`` does), so the step is the mean over tokens,
  not a mean of batch means. The first batch's loss is checked against cross-entropy on the aligned labels.
* **Images once.** Each batch's images go through the vision tower once (rows that share an image share its
  features, as in labeling); a frozen tower's outputs are kept (``feature_cache_mb``) and never recomputed, and the
  encoder's input is built as the model's own forward builds it (placeholders replaced by the image features).
* **Validation** every ``eval_every`` epochs (:mod:`.validate`); the best AP's weights are kept; after ``patience``
  validations without a gain of ``min_delta`` the loop stops (early stopping), and the best weights are the result.
* **Checkpoints** (:mod:`.checkpoint`) at each epoch's end and every ``save_steps`` optimizer steps.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import checkpoint
from .model import TrainError, load_trainable, trainable_state
from .samples import IGNORE, Sample, collate
from .validate import Validation, predict, score

if TYPE_CHECKING:
    from .data import Dataset
    from .settings import TrainSettings

#: ``on_step(step, loss)``: called after each optimizer step (a progress hook for the Python API)
OnStep = Callable[[int, float], None]


@dataclass
class Loop:
    """Where training stands: what a checkpoint saves besides the weights, optimizer and schedule."""

    epoch: int = 0  # epochs finished
    group: int = 0  # optimizer steps taken in the current epoch
    step: int = 0  # optimizer steps taken in all
    best_ap: float | None = None
    best_step: int | None = None
    best_epoch: int | None = None
    stale: int = 0  # validations since the best one
    stopped_early: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)  # this epoch's step losses so far

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass
class Result:
    loop: Loop
    kept: Validation | None  # the validation of the weights kept (the best); None when not at hand (resumed)
    seconds: float


class Features:
    """Image features for the pairs of a batch: each image through the vision tower once, a frozen tower's outputs
    kept up to a memory budget (a trainable tower's are computed with gradients every step)."""

    def __init__(self, model: Any, processor: Any, dataset: Dataset, device: str, frozen: bool, budget_mb: int):
        self.model = model
        self.processor = processor
        self.dataset = dataset
        self.device = device
        self.frozen = frozen
        self.budget = budget_mb * 2**20 if frozen else 0
        self.used = 0
        self.cache: dict[int, Any] = {}

    def pixels(self, indices: list[int]) -> dict[int, Any]:
        """Preprocessed pixels of the images not in the cache (run in the prefetch threads)."""
        from ..intake import decode

        todo = [k for k in dict.fromkeys(indices) if k not in self.cache]
        if not todo:
            return {}
        images = [decode(self.dataset.examples[k].path.read_bytes()) for k in todo]
        values = self.processor.image_processor(images, return_tensors="pt")["pixel_values"]
        return dict(zip(todo, values))

    def vision(self, indices: list[int], pixels: dict[int, Any], dtype: Any) -> Any:
        """The vision tower's output for each of ``indices`` (one per row; repeated images computed once)."""
        import torch

        unique = list(dict.fromkeys(indices))
        missing = [k for k in unique if k not in self.cache and k not in pixels]
        if missing:
            pixels = {**pixels, **self.pixels(missing)}
        todo = [k for k in unique if k not in self.cache]
        computed = {}
        if todo:
            stacked = torch.stack([pixels[k] for k in todo]).to(self.device, dtype)
            tower = self.model.model.vision_tower
            # never inference tensors (validation asks from inside generate's inference mode): training reuses them
            with torch.inference_mode(False), torch.set_grad_enabled(not self.frozen):
                out = tower(stacked).last_hidden_state
            for k, value in zip(todo, out):
                computed[k] = value
                size = value.numel() * value.element_size()
                if self.frozen and self.used + size <= self.budget:
                    self.cache[k] = value.detach()
                    self.used += size
        return torch.stack([self.cache[k] if k in self.cache else computed[k] for k in indices])


def _prefetch(features: Features, batches: list[list[int]], samples: list[Sample], workers: int) -> Iterator[Any]:
    """Each batch's uncached pixels, prepared ``workers`` batches ahead in threads (inline when ``workers`` is 0)."""
    rows = [[samples[i].example for i in batch] for batch in batches]
    if workers <= 0:
        yield from (features.pixels(r) for r in rows)
        return
    from ..intake import prefetch

    yield from prefetch(features.pixels, rows, workers, workers)


def embed(model: Any, input_ids: Any, image_features: Any) -> Any:
    """The encoder's input embeddings with the image placeholders replaced by the features — what the model's own
    forward does with ``pixel_values`` (``get_placeholder_mask`` + ``masked_scatter``)."""
    embeds = model.get_input_embeddings()(input_ids)
    placeholders = model.get_placeholder_mask(input_ids, inputs_embeds=embeds, image_features=image_features)
    return embeds.masked_scatter(placeholders, image_features.to(embeds.dtype))


def check_loss(loss: Any, logits: Any, labels: Any, items: int) -> None:
    """The model's loss must be cross-entropy of its logits against the labels at the same positions (a model that
    shifted the labels a second time would learn the token after next)."""
    import torch
    import torch.nn.functional as F

    aligned = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1).to(logits.device),
                              ignore_index=IGNORE, reduction="sum") / items
    if not torch.allclose(aligned, loss.float(), rtol=1e-3, atol=1e-4):
        import transformers

        raise TrainError(f"transformers {transformers.__version__}: Florence-2's loss ({float(loss):.4f}) is not "
                         f"cross-entropy on its labels ({float(aligned):.4f}): it shifts them twice "
                         "(huggingface/transformers#46897); upgrade transformers to train")


def fit(florence: Any, dataset: Dataset, train: list[Sample], val: list[int], settings: TrainSettings,
        gen: dict[str, Any], out: Path, resume: checkpoint.Saved | None, identity: dict[str, Any],
        progress: bool = True, on_step: OnStep | None = None) -> Result:
    """Train ``florence.model`` (its trainable weights: see :func:`.model.prepare`) on ``train``, validating on the
    examples ``val`` with generation settings ``gen``; leave the best weights in the model. Checkpoints go to
    ``out``; ``identity`` (what decides the weights) is saved with them, for a resume to compare."""
    import torch
    from tqdm import tqdm
    from transformers import get_scheduler

    started = time.time()
    model = florence.model
    device = florence.device
    use_bf16 = settings.precision == "bf16" or (settings.precision == "auto" and str(device).startswith("cuda"))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=settings.weight_decay)
    batches_per_epoch = math.ceil(len(train) / settings.batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / settings.grad_accum)
    total = steps_per_epoch * settings.epochs
    scheduler = get_scheduler("linear", optimizer, num_warmup_steps=math.ceil(settings.warmup * total),
                              num_training_steps=total)
    loop, best = Loop(), None
    if resume is not None:
        load_trainable(model, resume.state["weights"])
        optimizer.load_state_dict(resume.state["optimizer"])
        scheduler.load_state_dict(resume.state["scheduler"])
        loop = Loop(**resume.state["loop"])
        best = resume.best
    frozen = not settings.train_vision
    features = Features(model, florence.processor, dataset, device, frozen, settings.feature_cache_mb)
    tokenizer = florence.processor.tokenizer
    kept: Validation | None = None  # the best validation in this process (its predictions go to the report)
    last: Validation | None = None
    checked = False
    bar = tqdm(total=total, initial=loop.step, unit="step", desc="train", disable=not progress, file=sys.stderr,
               dynamic_ncols=True)

    def set_mode() -> None:
        model.train()
        if frozen:
            model.model.vision_tower.eval()  # no drop-path: a frozen tower's features are fixed (and cacheable)

    def save() -> None:
        state = {"weights": trainable_state(model), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "loop": loop.as_dict()}
        checkpoint.save(out, state, best, identity, loop.best_step)

    try:
        while loop.epoch < settings.epochs and not loop.stopped_early:
            epoch_started = time.time()
            set_mode()
            order = np.random.default_rng([settings.seed, loop.epoch]).permutation(len(train))
            batches = [order[i:i + settings.batch_size].tolist() for i in range(0, len(train), settings.batch_size)]
            groups = [batches[g:g + settings.grad_accum] for g in range(0, len(batches), settings.grad_accum)]
            todo = [b for group in groups[loop.group:] for b in group]
            pixels = _prefetch(features, todo, train, settings.prefetch_workers(device))
            for group in groups[loop.group:]:
                torch.manual_seed(settings.seed * 1_000_003 + loop.step)  # dropout: the same at this step, always
                chunks = [collate([train[i] for i in batch], tokenizer.pad_token_id) for batch in group]
                items = sum(int((c["labels"] != IGNORE).sum()) for c in chunks)
                step_loss = 0.0
                for batch, chunk in zip(group, chunks):
                    rows = [train[i].example for i in batch]
                    with torch.autocast(device_type=str(device).split(":")[0], dtype=torch.bfloat16,
                                        enabled=use_bf16):
                        vision = features.vision(rows, next(pixels), next(model.parameters()).dtype)
                        image_features = model.model.multi_modal_projector(vision)
                        input_ids = chunk["input_ids"].to(device)
                        outputs = model(inputs_embeds=embed(model, input_ids, image_features),
                                        attention_mask=chunk["attention_mask"].to(device),
                                        labels=chunk["labels"].to(device), num_items_in_batch=items)
                    if not checked:
                        check_loss(outputs.loss, outputs.logits, chunk["labels"], items)
                        checked = True
                    outputs.loss.backward()
                    step_loss += float(outputs.loss.detach())
                    del outputs, vision, image_features  # not alive through the next forward: ~0.5 GB at base size
                if settings.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                loop.step += 1
                loop.group += 1
                loop.losses.append(step_loss)
                bar.set_postfix(loss=f"{step_loss:.4f}", epoch=f"{loop.epoch + 1}/{settings.epochs}", refresh=False)
                bar.update(1)
                if on_step is not None:
                    on_step(loop.step, step_loss)
                if settings.save_steps and loop.step % settings.save_steps == 0 and loop.group < len(groups):
                    save()
            entry: dict[str, Any] = {"epoch": loop.epoch + 1, "step": loop.step,
                                     "loss": float(np.mean(loop.losses)) if loop.losses else None,
                                     "lr": scheduler.get_last_lr()[0], "seconds": round(time.time() - epoch_started, 3)}
            loop.epoch += 1
            loop.group = 0
            loop.losses = []
            if loop.epoch % settings.eval_every == 0 or loop.epoch == settings.epochs:
                bar.set_postfix_str("validating", refresh=True)
                last = evaluate(florence, dataset, val, settings.task, gen, settings.batch_size, features)
                entry["val"] = last.as_dict()
                if last.ap is not None and (loop.best_ap is None or last.ap > loop.best_ap + settings.min_delta):
                    loop.best_ap, loop.best_step, loop.best_epoch, loop.stale = last.ap, loop.step, loop.epoch, 0
                    best, kept = trainable_state(model), last
                elif last.ap is not None:
                    loop.stale += 1
                    loop.stopped_early = loop.stale >= settings.patience and loop.epoch < settings.epochs
                set_mode()
            loop.history.append(entry)
            save()
    finally:
        bar.close()
    if best is not None and loop.best_step != loop.step:  # the best weights are the result, not the last ones
        load_trainable(model, best)
    if best is None:
        kept = last  # never a best (no box to score): the last weights, as last validated here (or None)
    model.eval()
    return Result(loop, kept, time.time() - started)


def generation(eval_beams: int, samples: list[Sample]) -> dict[str, Any]:
    """Validation's generation settings: the beams asked for, and room for the longest answer in the data (an
    untrained model would otherwise write 1024 tokens of noise per image)."""
    longest = max((len(s.labels) for s in samples), default=8)
    return {"num_beams": eval_beams, "max_new_tokens": min(1024, longest + 16)}


def evaluate(florence: Any, dataset: Dataset, val: list[int], task: str, gen: dict[str, Any], batch_size: int,
             features: Features | None = None) -> Validation:
    """Validation AP of the model as it is now, on the examples ``val`` (the model is left in eval mode).

    With ``features`` (a frozen tower's), the images' vision outputs are the loop's, kept or computed once.
    """
    import torch

    model = florence.model
    model.eval()
    examples = [dataset.examples[k] for k in val]

    def image_features(positions: list[int]) -> Any:
        with torch.no_grad():
            vision = features.vision([val[p] for p in positions], {}, next(model.parameters()).dtype)
            return model.model.multi_modal_projector(vision)

    labels = predict(florence, task, examples, dataset.ontology, gen, batch_size,
                     image_features if features is not None and features.frozen else None)
    return score(task, examples, labels, dataset.classes)
