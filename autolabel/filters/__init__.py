"""Filter stages: pure decisions on labels (kept / dropped / flagged, with a reason code). They never delete."""

#: filter stage type → import path (imported only when a pipeline uses it)
STAGES: dict[str, str] = {
    "score_threshold": "autolabel.filters.basic:ScoreThreshold",
}
