"""autolabel: auto-labeling pipelines for computer vision (Florence-2 and friends → COCO, YOLO, Label Studio)."""

from .version import __version__
from .labels import Labels, Text
from .ontology import Ontology
from .api import Pipeline
from .stage import Item, Stage, StageParams

__all__ = ["Pipeline", "Labels", "Text", "Ontology", "Item", "Stage", "StageParams", "__version__"]
