"""What a trained model folder says about itself: ``lineage.json``, read without torch.

``autolabel train`` writes it beside the weights (or the LoRA adapter): the base model and the commit its weights
came from, the data it learned (a digest of every image and target, the ground truth's path and format), the task,
the settings, the result (validation AP per epoch), the round of ``autolabel refine`` that made it, and the
lineage of the base when the base was itself trained here. Loading such a folder gives the model a ``lineage``
(the :func:`summary` of this file) that every label it makes records in its provenance, and that ``run.json``
lists with the model's id; its ``revision`` is the digest of the trained weights.

Nothing heavy is imported here: the pipeline's hash reads :func:`weights_digest` when a model's ``id`` is a trained
folder, so that retraining into the same folder relabels (a changed model is never served from the cache).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

LINEAGE_FILE = "lineage.json"
ADAPTER_CONFIG = "adapter_config.json"  # peft's: a LoRA adapter folder
VERSION = 1
#: the lineage keys that labels carry in their provenance (the rest stays in the folder's lineage.json)
SUMMARY_KEYS = ("weights", "base", "base_revision", "task", "mode", "data_digest", "round", "created")


def folder_of(model_id: str) -> Path | None:
    """``model_id`` as a local folder holding a ``lineage.json``, else None (hub ids, plain checkpoints)."""
    try:
        folder = Path(model_id).expanduser()
        return folder if (folder / LINEAGE_FILE).is_file() else None
    except (OSError, ValueError):  # a name too long or odd for the file system is no folder of ours
        return None


def read(folder: str | Path) -> dict[str, Any] | None:
    """The folder's lineage, or None when it has none (or it does not parse: such a folder is a plain checkpoint)."""
    try:
        data = json.loads((Path(folder) / LINEAGE_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def weights_digest(model_id: str) -> str | None:
    """The digest of the trained weights a folder holds (from its lineage.json), or None for any other model."""
    folder = folder_of(model_id)
    if folder is None:
        return None
    data = read(folder) or {}
    digest = data.get("weights")
    return str(digest) if digest else None


def summary(lineage: dict[str, Any]) -> dict[str, Any]:
    """The part of a lineage that each label's provenance carries: small, and enough to find the rest.

    >>> summary({"weights": "ab12", "base": {"id": "florence-community/Florence-2-base", "revision": "c0ffee"},
    ...          "task": "od", "mode": "lora", "data": {"digest": "9f"}, "round": 2, "settings": {"lr": 1e-4}})
    {'weights': 'ab12', 'base': 'florence-community/Florence-2-base', 'base_revision': 'c0ffee', 'task': 'od', \
'mode': 'lora', 'data_digest': '9f', 'round': 2}
    """
    base = lineage.get("base") or {}
    flat = {
        "weights": lineage.get("weights"), "base": base.get("id"), "base_revision": base.get("revision"),
        "task": lineage.get("task"), "mode": lineage.get("mode"),
        "data_digest": (lineage.get("data") or {}).get("digest"),
        "round": lineage.get("round"), "created": lineage.get("created"),
    }
    return {key: flat[key] for key in SUMMARY_KEYS if flat.get(key) is not None}


def is_adapter(folder: str | Path) -> bool:
    """Whether a folder holds a LoRA adapter (peft's ``adapter_config.json``) rather than whole weights."""
    try:
        return (Path(folder).expanduser() / ADAPTER_CONFIG).is_file()
    except (OSError, ValueError):
        return False


def files_digest(paths: list[Path]) -> str:
    """sha256 over the named files' bytes, in the order given (16 hex digits: what ``revision`` shows)."""
    h = hashlib.sha256()
    for path in paths:
        h.update(path.name.encode() + b"\0")
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]
