"""Built-in model types → import paths (plain strings so validation imports no torch)."""

MODELS: dict[str, str] = {
    "florence2": "autolabel.models.florence2:Florence2",
}
