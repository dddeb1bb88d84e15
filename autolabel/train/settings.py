"""The options of ``autolabel train`` (and of each round of ``refine``): one validated model, the CLI's and the API's.

Every option has a stated range; a value outside it is one line naming the flag (``--lr: must be > 0 (got -1)``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import ConfigError
from .targets import TRAIN_TASKS

#: learning rates when none is given: LoRA's usual, and a small one for updating every weight
DEFAULT_LR = {"lora": 2e-4, "full": 1e-5}


class TrainSettings(BaseModel):
    """How to train. Fields are the CLI's flags (``batch_size`` is ``--batch-size``)."""

    model_config = ConfigDict(extra="forbid")

    task: Literal[tuple(TRAIN_TASKS)] = "od"  # type: ignore[valid-type]
    epochs: int = Field(default=10, ge=1, le=10_000)
    lr: float | None = Field(default=None, gt=0.0, le=1.0)  # default: DEFAULT_LR of the mode
    batch_size: int = Field(default=8, ge=1, le=4096)
    grad_accum: int = Field(default=1, ge=1, le=4096)  # batches per optimizer step
    mode: Literal["lora", "full"] = "lora"
    save: Literal["adapter", "merged"] = "adapter"  # lora: the adapter alone, or merged into whole weights
    lora_r: int = Field(default=16, ge=1, le=1024)
    lora_alpha: int = Field(default=32, ge=1, le=4096)
    lora_dropout: float = Field(default=0.05, ge=0.0, lt=1.0)
    train_vision: bool = False  # the vision tower is frozen unless this is set
    val_fraction: float = Field(default=0.1, ge=0.0, le=0.9)
    patience: int = Field(default=3, ge=1, le=10_000)  # validations without improvement before stopping
    min_delta: float = Field(default=0.0, ge=0.0, le=1.0)  # the least AP gain that counts as an improvement
    eval_every: int = Field(default=1, ge=1, le=10_000)  # epochs between validations
    eval_beams: int = Field(default=3, ge=1, le=16)  # num_beams of validation (the pipeline's default: 3)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    max_target_tokens: int | None = Field(default=None, ge=1, le=100_000)  # default: the model's maximum
    warmup: float = Field(default=0.05, ge=0.0, lt=1.0)  # fraction of the steps the learning rate warms up over
    weight_decay: float = Field(default=0.0, ge=0.0, le=1.0)
    max_grad_norm: float = Field(default=1.0, ge=0.0)  # 0: no clipping
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on CUDA, fp32 elsewhere
    device: str = "auto"
    save_steps: int = Field(default=0, ge=0)  # also checkpoint every N optimizer steps (0: at each epoch's end)
    feature_cache_mb: int = Field(default=2048, ge=0)  # frozen vision tower: keep its outputs up to this size
    #: threads reading and preprocessing images ahead of the model; default: 2 on a GPU, 0 (inline) on the CPU,
    #: where they would take cores from the model
    workers: int | None = Field(default=None, ge=0, le=64)
    classes: list[str] | None = None  # the ontology; default: the ground truth's classes

    def prefetch_workers(self, device: str) -> int:
        return self.workers if self.workers is not None else (2 if str(device).startswith("cuda") else 0)

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.mode]

    def identity(self) -> dict[str, Any]:
        """What decides the trained weights (a checkpoint made with others cannot be resumed)."""
        return self.model_dump(exclude={"device", "workers", "feature_cache_mb", "save"}) | {"lr": self.learning_rate}


def parse(options: dict[str, Any]) -> TrainSettings:
    """Validate options (None values mean "default"); errors name the flags."""
    given = {k: v for k, v in options.items() if v is not None}
    try:
        return TrainSettings.model_validate(given)
    except ValidationError as err:
        lines = []
        for e in err.errors():
            key = str(e["loc"][0]) if e["loc"] else "options"
            flag = "--" + key.replace("_", "-")
            if e["type"] == "extra_forbidden":
                lines.append(f"{key}: unknown option (known: {', '.join(TrainSettings.model_fields)})")
            else:
                lines.append(f"{flag}: {e['msg'][0].lower() + e['msg'][1:]} (got {e.get('input')!r})")
        raise ConfigError(list(dict.fromkeys(lines))) from None
