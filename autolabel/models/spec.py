"""A model as the pipeline file declares it under ``models:`` (:class:`ModelSpec`): what every adapter loads from.

It lives with the models, below the pipeline file's other keys (:mod:`autolabel.config` validates it as one of
them), so that adapters read their spec without depending on the pipeline file as a whole.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ModelSpec(BaseModel):
    """A model declared once under ``models:`` and referenced by name from stages."""

    model_config = ConfigDict(extra="forbid")

    type: str = "florence2"
    id: str = Field(min_length=1)  # hub id or local folder
    revision: str | None = None
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"  # auto: fp16 on CUDA, fp32 elsewhere
    device: str = "auto"  # auto: cuda, then mps, then cpu
    generation: dict[str, Any] = Field(default_factory=dict)  # e.g. max_new_tokens, num_beams
    compile: bool = False  # torch.compile the model
    options: dict[str, Any] = Field(default_factory=dict)  # model-type specific

    def identity(self) -> dict[str, Any]:
        """What of a model decides its outputs: everything but where and how fast it runs (device, compile).

        A folder ``autolabel train`` wrote adds the digest of its weights: training into the same folder again
        relabels, instead of serving the old model's labels from the cache.
        """
        from .lineage import weights_digest

        out = self.model_dump(exclude={"device", "compile"})
        digest = weights_digest(self.id)
        if digest:
            out["weights"] = digest
        return out
