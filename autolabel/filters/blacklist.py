"""The default phrase blacklist: phrases that name no box a person could draw.

In the manner of GRIT (Kosmos-2, Peng et al. 2023), which dropped noun chunks that are pronouns or abstract
nouns ("time", "love", "freedom") before grounding, and of FLD-5B's filtering of ungroundable phrases. Neither
published its full list; this one is ours. A phrase matches when its :func:`autolabel.ontology.normalize` form
(lower case, no leading article, last word singular) equals an entry's.
"""

from __future__ import annotations

PRONOUNS: frozenset[str] = frozenset(
    """
    i me my mine myself you your yours yourself yourselves he him his himself she her hers herself it its itself
    we us our ours ourselves they them their theirs themselves this that these those who whom whose which what
    one someone somebody something anyone anybody anything everyone everybody everything nobody nothing
    other another each either neither both all some any none
    """.split()
    + ["no one"]
)

#: abstract or ungroundable nouns: concepts, parts of the picture rather than of the world, vague placeholders
ABSTRACT: frozenset[str] = frozenset(
    [
        # concepts (GRIT's examples first)
        "time", "love", "freedom", "life", "peace", "beauty", "happiness", "fun", "idea", "concept", "nature",
        "culture", "history", "future", "past", "moment", "memory", "emotion", "feeling", "mood", "atmosphere",
        "energy", "power", "success", "danger", "safety", "health", "quality", "style", "design", "art", "fashion",
        "technology", "business", "education", "music", "sport", "travel", "vacation", "holiday", "weather",
        "season", "day", "night", "morning", "evening", "afternoon", "today", "event", "activity", "situation",
        "condition", "process", "way", "reason", "purpose", "thought", "dream", "hope", "fear", "joy", "luck",
        # the picture itself and places in it
        "image", "picture", "photo", "photograph", "scene", "view", "shot", "frame", "screenshot", "illustration",
        "background", "foreground", "area", "space", "region", "place", "spot", "location", "surrounding",
        "environment", "setting", "side", "part", "portion", "piece", "section", "front", "back", "top", "bottom",
        "middle", "center", "centre", "left", "right", "edge", "corner", "distance", "closeup", "close-up",
        # vague placeholders
        "thing", "stuff", "object", "item", "element", "detail", "feature", "kind", "type", "sort", "lot", "bunch",
        "number", "variety", "amount", "color", "colour", "shape", "size", "pattern", "texture",
        "lighting", "focus", "blur",
    ]
)

DEFAULT_BLACKLIST: frozenset[str] = PRONOUNS | ABSTRACT
