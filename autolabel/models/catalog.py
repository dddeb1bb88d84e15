"""Built-in model types → import paths (plain strings so validation imports no torch)."""

MODELS: dict[str, str] = {
    "florence2": "autolabel.models.florence2:Florence2",
    "grounding_dino": "autolabel.models.grounding_dino:GroundingDino",  # also MM-Grounding-DINO checkpoints
    "owlv2": "autolabel.models.owlv2:Owlv2",
    "sam": "autolabel.models.sam:Sam",
    "sam2": "autolabel.models.sam:Sam2",
    "rapidocr": "autolabel.models.rapidocr:RapidOcr",
}
