"""Built-in model types → import paths (plain strings so validation imports no torch)."""

MODELS: dict[str, str] = {
    "florence2": "autolabel.models.florence2:Florence2",
    "grounding_dino": "autolabel.models.grounding_dino:GroundingDino",  # also MM-Grounding-DINO checkpoints
    "owlv2": "autolabel.models.owlv2:Owlv2",
    "sam": "autolabel.models.sam:Sam",
    "sam2": "autolabel.models.sam:Sam2",
    "sam3": "autolabel.models.sam3:Sam3",  # concepts: a noun phrase or exemplar boxes → every instance
    "sam3_tracker": "autolabel.models.sam3:Sam3Tracker",  # boxes / points → masks, from the same checkpoint
    "sam3_video": "autolabel.models.sam3_video:Sam3Video",  # text concepts tracked through a clip (stage track)
    "sam3_tracker_video": "autolabel.models.sam3_video:Sam3TrackerVideo",  # boxes through a clip (track_boxes)
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
    "sam3": "sam3",
    "sam3_video": "sam3",  # facebook/sam3 itself: its image detector is loaded (sam3_tracker loads its tracker)
    "sam3_tracker": "sam3_tracker",
}

#: model types whose checkpoint loads from another type's checkpoint too: ``sam3_tracker`` reads ``sam3_video``
#: (facebook/sam3 holds the detector and the tracker; the wrong-type message names ``sam3`` for it)
SHARED_CHECKPOINTS: dict[str, tuple[str, ...]] = {
    "sam3_tracker": ("sam3_video",), "sam3_video": ("sam3_video",), "sam3_tracker_video": ("sam3_video",),
}

#: model types whose hub checkpoints are gated: a missing one's message says to accept the licence first
GATED: dict[str, str] = {"sam3": "SAM License", "sam3_tracker": "SAM License", "sam3_video": "SAM License",
                         "sam3_tracker_video": "SAM License"}


def checkpoints_of(model_type: str) -> tuple[str, ...]:
    """The checkpoint ``model_type`` values a model type loads (read from :data:`CHECKPOINT_TYPES`).

    >>> checkpoints_of("grounding_dino")
    ('grounding-dino', 'mm-grounding-dino')
    """
    own = tuple(checkpoint for checkpoint, loader in CHECKPOINT_TYPES.items() if loader == model_type)
    return own + tuple(c for c in SHARED_CHECKPOINTS.get(model_type, ()) if c not in own)
