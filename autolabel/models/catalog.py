"""Built-in model types → import paths (plain strings so validation imports no torch)."""

MODELS: dict[str, str] = {
    "florence2": "autolabel.models.florence2:Florence2",
    "grounding_dino": "autolabel.models.grounding_dino:GroundingDino",  # also MM-Grounding-DINO checkpoints
    "owlv2": "autolabel.models.owlv2:Owlv2",
    "sam": "autolabel.models.sam:Sam",
    "sam2": "autolabel.models.sam:Sam2",
    "rapidocr": "autolabel.models.rapidocr:RapidOcr",
}

#: a checkpoint's ``config.json`` ``model_type`` → the model type that loads it (the fix a wrong-type error names)
CHECKPOINT_TYPES: dict[str, str] = {
    "florence2": "florence2",
    "grounding-dino": "grounding_dino",
    "mm-grounding-dino": "grounding_dino",
    "owlv2": "owlv2",
    "sam": "sam",
    "sam2": "sam2",
    "sam2_video": "sam2",  # every transformers-format SAM 2 / 2.1 checkpoint on the hub: its image model is loaded
}


def checkpoints_of(model_type: str) -> tuple[str, ...]:
    """The checkpoint ``model_type`` values a model type loads (read from :data:`CHECKPOINT_TYPES`).

    >>> checkpoints_of("grounding_dino")
    ('grounding-dino', 'mm-grounding-dino')
    """
    return tuple(checkpoint for checkpoint, loader in CHECKPOINT_TYPES.items() if loader == model_type)
