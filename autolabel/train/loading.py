"""Loading what ``autolabel train`` wrote, as a pipeline's ``models.<name>.id``: whole weights or a LoRA adapter.

A folder of whole weights (``--full``, or ``--lora --save merged``) is a native checkpoint like any other; an
adapter folder (``--lora``, the default ``--save adapter``) holds only the LoRA weights and names its base model
(and the commit it was trained from) in ``lineage.json``: the base is loaded the usual way (offline first, from
that commit), the adapter is applied with peft and merged into the weights, so that labeling runs at the base
model's speed. Either way the model gets the folder's ``lineage`` (its labels' provenance records it) and a
``revision`` that is the digest of the trained weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import ModelLoadError
from . import lineage
from .model import quiet_peft


def load_adapter(cls: Any, spec: Any) -> Any:
    """Load the base an adapter folder names with ``cls.load``, apply the adapter, merge it; attach the lineage."""
    folder = Path(spec.id).expanduser()
    record = lineage.read(folder) or {}
    base = record.get("base") or {}
    base_id = base.get("id")
    if not base_id:
        try:
            base_id = json.loads((folder / lineage.ADAPTER_CONFIG).read_text())["base_model_name_or_path"]
        except (OSError, ValueError, KeyError, TypeError):
            raise ModelLoadError(f"model {spec.id!r} (florence2): a LoRA adapter that names no base model "
                                 "(lineage.json and adapter_config.json say none)") from None
    try:
        from peft import PeftModel
    except ImportError:
        raise ModelLoadError(f"model {spec.id!r} (florence2): a LoRA adapter; loading it needs peft: pip install "
                             "'autolabel[train]' (or train with --save merged)") from None
    base_spec = spec.model_copy(update={"id": str(base_id), "revision": base.get("revision"), "compile": False})
    try:
        loaded = cls.load(base_spec)
    except ModelLoadError as err:
        raise ModelLoadError(f"model {spec.id!r} (florence2): its LoRA adapter's base model cannot be loaded: {err} "
                             "(put the base back where lineage.json says, or train with --save merged)") from None
    with quiet_peft():
        model = PeftModel.from_pretrained(loaded.model, str(folder)).merge_and_unload().eval()
    if spec.compile:
        model.compile()
    out = cls(model, loaded.processor, spec, loaded.device, loaded.dtype)
    return attach(out, folder)


def attach(model: Any, folder: str | Path | None = None) -> Any:
    """Give a loaded model its folder's lineage (``model.lineage``, the summary) and the trained weights' digest
    as its ``revision``; a model from a folder without lineage.json is left as it is."""
    found = lineage.folder_of(str(folder if folder is not None else model.spec.id))
    record = lineage.read(found) if found is not None else None
    if record:
        model.lineage = lineage.summary(record)
        model.revision = record.get("weights") or model.revision
    return model
