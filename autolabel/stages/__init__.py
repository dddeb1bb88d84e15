"""Model stages: each runs one declared model over a batch and adds labels with provenance."""

#: model stage type → import path (imported only when a pipeline uses it)
STAGES: dict[str, str] = {
    "florence2": "autolabel.stages.florence2:Florence2Stage",
    "detect": "autolabel.stages.detect:Detect",  # grounding_dino, owlv2
    "segment": "autolabel.stages.segment:Segment",  # sam, sam2, sam3_tracker
    "concepts": "autolabel.stages.concepts:Concepts",  # sam3
    "ocr": "autolabel.stages.ocr:Ocr",  # rapidocr
    "track": "autolabel.stages.track:Track",  # sam3_video: text concepts tracked through a clip
    "track_boxes": "autolabel.stages.track:TrackBoxes",  # sam3_tracker_video: a detector's boxes through a clip
}
