"""Loading Hugging Face checkpoints the way a labeling job needs: cache first, then the hub, else one clear line.

``transformers``' own ``from_pretrained`` retries an unreachable hub for minutes and then raises a generic
``OSError``. Here a hub id is looked up in the local cache first (no network at all), the hub is only asked when
the cache misses and the machine is online, and a miss that cannot be fixed here raises a
:class:`~autolabel.errors.ModelLoadError` that names the model and the two fixes: download it on a machine with
network, or point ``id:`` at a local folder.

Nothing heavy is imported at module level: model types import this module when a pipeline is validated.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlparse

from ..errors import ModelLoadError

if TYPE_CHECKING:
    from ..config import ModelSpec

T = TypeVar("T")

_TRUE = {"1", "on", "yes", "true"}


def offline() -> bool:
    """Whether the user asked for no network (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``), read now."""
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return env.strip().lower() in _TRUE or bool(constants.HF_HUB_OFFLINE)


def hub_reachable(timeout: float = 3.0) -> bool:
    """A TCP connection to the hub endpoint opens within ``timeout`` s (assumed True behind a proxy we cannot probe)."""
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout).close()
    except OSError:
        return False
    return True


def looks_like_path(model_id: str) -> bool:
    """True for ids that can only be folders (``./x``, ``/x``, ``~/x``, ``a/b/c``, ``C:\\x``), never hub ids."""
    return model_id.startswith((".", "/", "~", "\\")) or model_id.count("/") > 1 or "\\" in model_id or ":" in model_id


def missing_message(spec: "ModelSpec", why: str) -> str:
    """The one line a user sees when a hub model is neither cached nor downloadable here."""
    from huggingface_hub import constants

    rev = f" --revision {spec.revision}" if spec.revision else ""
    return (
        f"model {spec.id!r} ({spec.type}) is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}) and {why}: "
        f"on a machine with network {gated_step(spec)}run `hf download {spec.id}{rev}` (older clients: "
        f"`huggingface-cli download {spec.id}{rev}`) and copy that cache here (or set HF_HOME), or set the model's "
        f"id: to a local folder holding the checkpoint"
    )


def gated_step(spec: "ModelSpec") -> str:
    """For a model type whose hub checkpoints are gated (:data:`~.catalog.GATED`): the step before ``hf download``.

    >>> from autolabel.config import ModelSpec
    >>> gated_step(ModelSpec(type="sam3", id="facebook/sam3"))  # doctest: +NORMALIZE_WHITESPACE
    'accept the SAM License on https://huggingface.co/facebook/sam3 (the checkpoint is gated),
     log in with `hf auth login`, then '
    """
    from huggingface_hub import constants

    from .catalog import GATED

    licence = GATED.get(spec.type)
    if not licence:
        return ""
    return (f"accept the {licence} on {constants.ENDPOINT.rstrip('/')}/{spec.id} (the checkpoint is gated), log in "
            f"with `hf auth login`, then ")


def from_pretrained(cls: type[T] | Any, spec: "ModelSpec", **kwargs: Any) -> T:
    """``cls.from_pretrained(spec.id, revision=spec.revision, **kwargs)``, offline-first, with one-line errors.

    ``cls`` is anything with a transformers-style ``from_pretrained`` (a model class, ``AutoProcessor``,
    ``AutoConfig``, ...). ``spec.id`` may be a local folder (used as is; ``revision`` does not apply) or a hub id:
    the local cache is tried first without network; the hub only when the cache misses, ``HF_HUB_OFFLINE`` is not
    set and the hub answers. Raises :class:`ModelLoadError` when the files cannot be had.
    """
    source = spec.id
    folder = Path(source).expanduser()
    if folder.is_dir():
        try:
            return cls.from_pretrained(str(folder), **kwargs)
        except (OSError, ValueError) as err:  # missing files; a config.json without a model_type
            raise ModelLoadError(
                f"model folder {source!r} ({spec.type}): {_one_line(err)} (it should hold the files that "
                f"save_pretrained writes: config.json, the weights, the processor's files)"
            ) from None
    if looks_like_path(source):
        raise ModelLoadError(
            f"model {source!r} ({spec.type}): no such folder (set id: to an existing folder holding the "
            f"checkpoint, or to a hub id like owner/name)"
        )
    try:
        return cls.from_pretrained(source, revision=spec.revision, local_files_only=True, **kwargs)
    except OSError:
        pass  # not (fully) cached: the hub may still have it
    if offline():
        raise ModelLoadError(missing_message(spec, "HF_HUB_OFFLINE is set"))
    if not hub_reachable():
        raise ModelLoadError(missing_message(spec, "the hub cannot be reached from this machine"))
    try:
        return cls.from_pretrained(source, revision=spec.revision, **kwargs)
    except OSError as err:
        gate = gated_step(spec).removesuffix(", then ")
        raise ModelLoadError(
            f"model {source!r} ({spec.type}): cannot download: {_one_line(err)} (check the id and revision, "
            + (f"{gate}, " if gate else "log in with `hf auth login` for gated models, ")
            + "or set id: to a local folder)"
        ) from None


_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def snapshot_commit(spec: "ModelSpec") -> str | None:
    """The commit of the hub-cache snapshot ``spec`` loads from (``models--owner--name/snapshots/<commit>/``), or None.

    transformers 5 no longer sets ``config._commit_hash``, so the cache layout is read instead: for a hub id,
    huggingface_hub resolves ``revision`` (default ``main``, through ``refs/``) to the snapshot holding its
    ``config.json``; a local folder counts when it is itself such a snapshot. No network either way.
    """
    folder = Path(spec.id).expanduser()
    if folder.is_dir():
        resolved = folder.resolve()
        if resolved.parent.name == "snapshots" and resolved.parent.parent.name.startswith("models--"):
            return resolved.name if _COMMIT.match(resolved.name) else None
        return None
    if looks_like_path(spec.id):
        return None
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(spec.id, "config.json", revision=spec.revision)
    except Exception:  # noqa: BLE001 — a malformed id or cache must not fail a run that has already loaded the model
        return None
    if isinstance(found, str):
        commit = Path(found).parent.name
        return commit if _COMMIT.match(commit) else None
    return None


def revision_of(obj: Any, spec: "ModelSpec") -> str | None:
    """The commit a checkpoint was loaded from (hub cache snapshot), else the requested revision (None for folders)."""
    config = getattr(obj, "config", obj)
    return snapshot_commit(spec) or getattr(config, "_commit_hash", None) or spec.revision


def load_checkpoint(
    spec: "ModelSpec", model_cls: Any, processor_cls: Any, model_types: tuple[str, ...]
) -> tuple[Any, Any, str, Any]:
    """Load a transformers checkpoint of one of ``model_types`` with its processor: (model, processor, device, dtype).

    The config is read first, so that a checkpoint of another family (a SAM folder given to a detector) is an
    error naming both and the model type that loads it, instead of a model silently built with random weights.
    ``model_cls.from_pretrained`` gets that config (a wrapper may turn it into the one its model takes: the image
    model of a video checkpoint). The model is put on the spec's device and dtype (auto: cuda → mps → cpu; fp16/bf16
    on CUDA, fp32 elsewhere), in eval mode, compiled when ``spec.compile``.
    """
    import torch
    from transformers import AutoConfig

    from .pool import pick_device, pick_dtype

    config = from_pretrained(AutoConfig, spec)
    if config.model_type not in model_types:
        raise ModelLoadError(wrong_type_message(spec, config.model_type, model_types))
    device = pick_device(spec.device)
    dtype = pick_dtype(spec.dtype, device)
    processor = from_pretrained(processor_cls, spec)
    model = from_pretrained(model_cls, spec, config=config, dtype=dtype)
    model = model.to(device).eval()
    if spec.compile:
        model = torch.compile(model)
    return model, processor, device, dtype


def to_device(batch: Any, device: str, dtype: Any) -> dict[str, Any]:
    """Move a processor's output to ``device``; floating tensors (pixels, boxes) also to the model's ``dtype``."""
    import torch

    out = {}
    for key, value in dict(batch).items():
        if isinstance(value, torch.Tensor):
            value = value.to(device, dtype=dtype) if value.is_floating_point() else value.to(device)
        out[key] = value
    return out


class _ConfigDict:
    """``from_pretrained`` that returns a checkpoint's ``config.json`` as a plain dict (nothing is instantiated)."""

    @staticmethod
    def from_pretrained(source: str, **kwargs: Any) -> dict[str, Any]:
        from transformers import PretrainedConfig

        config, _ = PretrainedConfig.get_config_dict(source, **kwargs)
        return config


def config_dict(spec: "ModelSpec") -> dict[str, Any]:
    """The checkpoint's ``config.json`` as written (keys that a config class would drop, such as ``auto_map``, kept)."""
    return from_pretrained(_ConfigDict, spec)


def wrong_type_message(spec: "ModelSpec", found: str, accepted: tuple[str, ...]) -> str:
    """The one line for a checkpoint of another family: what it is, and the model type that does load it."""
    from .catalog import CHECKPOINT_TYPES

    loads = ", ".join(repr(t) for t in accepted)
    right = CHECKPOINT_TYPES.get(found)
    fix = (f"set the model's type: {right}, or point id: at a {spec.type} checkpoint" if right
           else f"no built-in model type loads it; point id: at a {spec.type} checkpoint")
    return (f"model {spec.id!r}: the checkpoint is a {found!r} model; model type {spec.type!r} loads {loads} "
            f"checkpoints ({fix})")


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


class CheckpointModel:
    """What every transformers-backed model type holds: model, processor, where it runs, the ids run.json records."""

    def __init__(self, model: Any, processor: Any, spec: "ModelSpec", device: str, dtype: Any):
        self.model = model
        self.processor = processor
        self.spec = spec
        self.device = device
        self.dtype = dtype
        self.id = spec.id
        self.revision = revision_of(model, spec)
