"""autolabel: auto-labeling pipelines for computer vision (Florence-2 and friends → COCO, YOLO, Label Studio)."""

__version__ = "0.1.0"

from .labels import Labels, Text  # noqa: E402
from .ontology import Ontology  # noqa: E402
from .pipeline import Pipeline  # noqa: E402
from .stage import Item, Stage, StageParams  # noqa: E402

__all__ = ["Pipeline", "Labels", "Text", "Ontology", "Item", "Stage", "StageParams", "__version__"]
