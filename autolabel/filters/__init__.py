"""Filter stages: pure decisions on labels (kept / dropped / flagged, with a reason code). They never delete.

Every stage type below is documented in the README ("Quality checks") with its keys, defaults and their sources.
"""

#: filter stage type → import path (imported only when a pipeline uses it)
STAGES: dict[str, str] = {
    # scores and classes
    "score_threshold": "autolabel.filters.basic:ScoreThreshold",
    "known_classes": "autolabel.filters.basic:KnownClasses",
    "confident_image": "autolabel.filters.basic:ConfidentImage",
    "max_per_image": "autolabel.filters.basic:MaxPerImage",
    # box geometry
    "degenerate_boxes": "autolabel.filters.geometry:DegenerateBoxes",
    "box_area": "autolabel.filters.geometry:BoxArea",
    "aspect_ratio": "autolabel.filters.geometry:AspectRatio",
    "border": "autolabel.filters.geometry:Border",
    # overlaps and ensembles
    "nms": "autolabel.filters.overlap:Nms",
    "soft_nms": "autolabel.filters.overlap:SoftNms",
    "wbf": "autolabel.filters.overlap:Wbf",
    # masks
    "mask_predicted_iou": "autolabel.filters.masks:MaskPredictedIou",
    "mask_stability": "autolabel.filters.masks:MaskStability",
    "mask_area": "autolabel.filters.masks:MaskArea",
    "mask_cleanup": "autolabel.filters.masks:MaskCleanup",
    "mask_box_consistency": "autolabel.filters.masks:MaskBoxConsistency",
    "mask_nms": "autolabel.filters.masks:MaskNms",
    # text
    "text_length": "autolabel.filters.text:TextLength",
    "repetition": "autolabel.filters.text:Repetition",
    "phrase_blacklist": "autolabel.filters.text:PhraseBlacklist",
    "caption_parse": "autolabel.filters.parse:CaptionParse",
    # OCR
    "ocr_quality": "autolabel.filters.ocr:OcrQuality",
    # tracks of a clip (after its last chunk; autolabel.filters.tracks)
    "track_length": "autolabel.filters.tracks:TrackLength",
    "track_score": "autolabel.filters.tracks:TrackScore",
    "track_class": "autolabel.filters.tracks:TrackClass",
}
