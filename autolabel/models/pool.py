"""Models: loaded once per worker through a :class:`ModelPool`, on the device and dtype the spec asks for."""

from __future__ import annotations

from typing import Any

from ..config import ModelSpec
from ..errors import ModelLoadError
from ..registry import MODEL_GROUP, resolve


def pick_device(requested: str = "auto") -> str:
    """``auto`` → cuda, then mps, then cpu; anything else is passed through (e.g. ``cuda:1``)."""
    if requested != "auto":
        return requested
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(requested: str, device: str) -> Any:
    """``auto`` → float16 on CUDA (bfloat16 where supported), float32 elsewhere."""
    import torch

    if requested != "auto":
        return getattr(torch, requested)
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


class ModelPool:
    """Loads each declared model on first use and keeps it: one instance per model name per pool (worker)."""

    def __init__(self, specs: dict[str, ModelSpec]):
        self.specs = specs
        self._loaded: dict[str, Any] = {}

    def get(self, name: str) -> Any:
        if name not in self._loaded:
            spec = self.specs[name]
            cls = resolve(MODEL_GROUP, spec.type)
            try:
                self._loaded[name] = cls.load(spec)
            except ModelLoadError:
                raise
            except Exception as err:  # a model that cannot load is fatal for the run, with one line
                raise ModelLoadError(f"model {name!r} ({spec.id}): cannot load: {type(err).__name__}: {err}") from err
        return self._loaded[name]

    def versions(self) -> dict[str, dict[str, Any]]:
        """Id and revision of each declared model: the commit it was (or, not loaded yet, would be) read from when
        known (a hub-cache snapshot), else the requested revision; for a folder ``autolabel train`` wrote, the
        digest of its weights and its lineage."""
        from ..train import lineage
        from .hub import snapshot_commit

        out = {}
        for name, spec in self.specs.items():
            loaded = self._loaded.get(name)
            revision = getattr(loaded, "revision", None) if loaded is not None else snapshot_commit(spec)
            out[name] = {"type": spec.type, "id": spec.id, "revision": revision or spec.revision}
            found = lineage.folder_of(spec.id)  # a folder `autolabel train` wrote: what it was trained from
            record = lineage.read(found) if found is not None else None
            if record:
                out[name]["revision"] = record.get("weights") or out[name]["revision"]
                out[name]["lineage"] = lineage.summary(record)
        return out
