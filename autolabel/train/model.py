"""The model being trained: loaded as the pipeline loads it, made trainable (LoRA or full), written back out.

* **Loading** goes through :meth:`autolabel.models.florence2.Florence2.load` (offline first, the remote-code
  layout refused, the commit of the weights recorded), in float32: the weights stay float32 and the forward runs
  in bfloat16 under autocast on CUDA (mixed precision, what ``Trainer(bf16=True)`` does).
* **Which transformers.** Florence-2's native loss shifts the labels once, inside the model. Versions before the
  fix of huggingface/transformers#46897 shifted them a second time and trained the model to predict the token
  after next: they are refused with one line (:func:`check_transformers`), and the loop checks the first batch's
  loss against cross-entropy on aligned labels all the same.
* **LoRA** (peft) on the modules that exist in the native model: the language model's attention projections
  ``q_proj``, ``k_proj``, ``v_proj``, ``out_proj`` and its feed-forward ``fc1``, ``fc2`` (the vision tower's
  ``qkv``, ``proj``, ``fc1``, ``fc2`` with ``train_vision``). The lists written for the remote-code model
  (``o_proj``, ``linear``, ``Conv2d``) match nothing here; these names are checked against the model, and a
  list that matches nothing is an error, not a silent no-op.
* **Full** fine-tuning trains every weight but the vision tower's (frozen by default, as Florence-2's authors and
  most recipes do: it was trained on far more images than any labeling job has).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..errors import AutolabelError, ExitCode

#: the first transformers with Florence-2's labels shifted once (huggingface/transformers#46897; 4.57.6 has the bug)
MIN_TRANSFORMERS = "5.17"
#: LoRA targets in the native language model (full names, so the vision tower's fc1 / fc2 stay out)
LORA_TEXT = (r"model\.language_model\.(encoder|decoder)\.layers\.\d+\."
             r"((self_attn|encoder_attn)\.(q_proj|k_proj|v_proj|out_proj)|fc1|fc2)")
#: LoRA targets in the native vision tower (DaViT: window / channel attention and their feed-forward layers)
LORA_VISION = r"model\.vision_tower\.blocks\.\d+\.\d+\.(spatial_block|channel_block)\.\w+\.(qkv|proj|fc1|fc2)"
#: what the trained folder holds: a LoRA adapter (needs the base to load) or whole weights
Save = Literal["adapter", "merged"]


class TrainError(AutolabelError):
    """Training cannot start or go on (the library is too old, a setting matches nothing, peft is missing)."""

    exit_code = ExitCode.CONFIG


@dataclass(frozen=True)
class LoraSettings:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05


def check_transformers(version: str | None = None) -> None:
    """Refuse transformers older than :data:`MIN_TRANSFORMERS` (its Florence-2 loss learns the wrong token)."""
    from packaging.version import Version

    if version is None:
        import transformers

        version = transformers.__version__
    if Version(version) < Version(MIN_TRANSFORMERS):
        raise TrainError(
            f"transformers {version} trains Florence-2 on labels shifted twice (huggingface/transformers#46897): "
            f"upgrade to transformers>={MIN_TRANSFORMERS} to train (labeling works with this one)"
        )


def load(model_id: str, revision: str | None, device: str) -> Any:
    """The base model as the pipeline would load it (float32 weights, a trained folder's adapter merged)."""
    from ..config import ModelSpec
    from ..models.florence2 import Florence2

    from transformers.utils import logging

    spec = ModelSpec(type="florence2", id=model_id, revision=revision, dtype="float32", device=device)
    shown = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()  # transformers' "Loading weights" bar: the training has its own
    try:
        return Florence2.load(spec)
    finally:
        if shown:
            logging.enable_progress_bar()


def matching(model: Any, pattern: str) -> list[str]:
    """Names of the model's modules that a LoRA target pattern (a full-match regex, as peft reads it) selects."""
    regex = re.compile(pattern)
    return [name for name, _ in model.named_modules() if regex.fullmatch(name)]


def prepare(model: Any, mode: str, train_vision: bool, lora: LoraSettings) -> Any:
    """Freeze what does not train and add LoRA layers (``mode`` lora); return the peft model (None for full).

    The vision tower is frozen (and kept in eval mode by the loop) unless ``train_vision``.
    """
    for parameter in model.parameters():
        parameter.requires_grad_(mode == "full")
    if not train_vision:
        for parameter in model.model.vision_tower.parameters():
            parameter.requires_grad_(False)
    if mode == "full":
        return None
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise TrainError("--lora needs peft: pip install 'autolabel[train]' (or train with --full)") from None
    pattern = f"({LORA_TEXT})|({LORA_VISION})" if train_vision else LORA_TEXT
    if not matching(model, pattern):  # peft would refuse too, in a paragraph: one line here
        raise TrainError("--lora: the LoRA target modules match no module of this model (is it a native "
                         "transformers Florence2ForConditionalGeneration?)")
    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=pattern,
                        bias="none")
    with quiet_peft():
        return get_peft_model(model, config)


@contextmanager
def quiet_peft() -> Iterator[None]:
    """peft asks transformers a deprecated question (``is_gradient_checkpointing``) on every load: not the user's
    concern, so that FutureWarning is silenced around peft's calls."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def trainable_state(model: Any) -> dict[str, Any]:
    """A CPU copy of the weights that train (LoRA's, or all but the frozen ones): what checkpoints hold."""
    return {name: p.detach().to("cpu", copy=True) for name, p in model.named_parameters() if p.requires_grad}


def load_trainable(model: Any, state: dict[str, Any]) -> None:
    """Put saved trainable weights back (names must match: same base, same mode, same LoRA settings)."""
    import torch

    params = dict(model.named_parameters())
    missing = [name for name in state if name not in params]
    if missing:
        raise TrainError(f"the checkpoint names weights this model does not have (e.g. {missing[0]}): resume with "
                         "the same --model, --lora/--full and LoRA settings")
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value.to(params[name].device, params[name].dtype))


def save(folder: Path, model: Any, peft_model: Any, processor: Any, save_as: Save) -> list[Path]:
    """Write the trained model into ``folder``: the LoRA adapter, or whole (merged) weights; and the processor.

    Returns the weight files written (their digest is the trained model's ``revision``).
    """
    folder.mkdir(parents=True, exist_ok=True)
    if peft_model is not None and save_as == "adapter":
        peft_model.save_pretrained(str(folder), save_embedding_layers=False)  # LoRA only: the embeddings are frozen
        weights = sorted(folder.glob("adapter_model*"))
    else:
        whole = peft_model.merge_and_unload() if peft_model is not None else model
        whole.save_pretrained(str(folder))
        weights = sorted(folder.glob("model*.safetensors"))
    processor.save_pretrained(str(folder))
    for stray in ("README.md",):  # peft writes a model card template: not ours to publish
        (folder / stray).unlink(missing_ok=True)
    return weights
