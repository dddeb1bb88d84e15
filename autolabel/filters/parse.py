"""FLD-5B's parse-based text checks (Xiao et al. 2024, Florence-2): spaCy finds the objects and actions of a
caption; texts naming too many objects, or whose objects and actions are too bare, are filtered.

Complexity is node degree in the dependency parse: how many words attach to the object (or action) word, plus
its own head. FLD-5B publishes the rule and its dataset's means (object complexity 2.8 / 4.0 / 4.0 and action
complexity 1.1 / 3.6 / 4.4 for brief / detailed / more detailed captions), not its cut-offs: the defaults here sit
well below those means, so that only bare or list-like captions fail. Needs ``pip install 'autolabel[text]'`` and
an English pipeline with a parser (``python -m spacy download en_core_web_sm``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from ..errors import ConfigError
from ..stage import StageContext
from .base import TextField
from .text import TextFilter, TextFilterParams

if TYPE_CHECKING:
    from spacy.tokens import Doc, Token

OBJECT_POS = ("NOUN", "PROPN")
ACTION_POS = ("VERB",)


def degree(token: "Token") -> int:
    """Node degree in the parse tree: children, plus one for the head (the root has none)."""
    return sum(1 for _ in token.children) + (0 if token.head.i == token.i else 1)


def objects(doc: "Doc") -> list["Token"]:
    """The object words: roots of the noun chunks that are nouns (pronouns are not objects)."""
    return [chunk.root for chunk in doc.noun_chunks if chunk.root.pos_ in OBJECT_POS]


def actions(doc: "Doc") -> list["Token"]:
    return [t for t in doc if t.pos_ in ACTION_POS]


def mean_degree(tokens: list["Token"]) -> float:
    return sum(degree(t) for t in tokens) / len(tokens) if tokens else 0.0


def parse_verdict(doc: "Doc", max_objects: int | None, min_object_complexity: float,
                  min_action_complexity: float) -> str:
    """The reason a parsed text fails FLD-5B's checks, or ``""``."""
    found = objects(doc)
    if max_objects is not None and len(found) > max_objects:
        return "too_many_objects"
    if mean_degree(found) < min_object_complexity:
        return "low_object_complexity"
    if mean_degree(actions(doc)) < min_action_complexity:
        return "low_action_complexity"
    return ""


class CaptionParseParams(TextFilterParams):
    fields: list[TextField] = Field(default_factory=lambda: ["captions"], min_length=1)
    spacy_model: str = "en_core_web_sm"  # an installed spaCy pipeline's name, or its folder
    #: our cut-off for "too many objects in one caption" (FLD-5B gives none); null: off
    max_objects: int | None = Field(default=10, ge=1)
    #: mean degree of the objects; 1 = at least a determiner or modifier ("a car", not "car")
    min_object_complexity: float = Field(default=1.0, ge=0.0)
    #: mean degree of the verbs (0 when there is none); 0: off, since brief captions often have no verb
    min_action_complexity: float = Field(default=0.0, ge=0.0)


class CaptionParse(TextFilter):
    """FLD-5B's parse-based checks: ``too_many_objects``, ``low_object_complexity``, ``low_action_complexity``.

    The spaCy pipeline loads when the stage is built, so a missing spaCy or English pipeline is a configuration
    error that ``autolabel validate`` reports before any model runs, not a silent pass after hours of labeling.
    """

    reasons: ClassVar[tuple[str, ...]] = ('too_many_objects', 'low_object_complexity', 'low_action_complexity')

    Params = CaptionParseParams
    params: CaptionParseParams

    def __init__(self, name: str, params: CaptionParseParams, context: StageContext):
        super().__init__(name, params, context)
        self.nlp = load_parser(params.spacy_model)

    def check(self, texts: list[str]) -> list[str]:
        p = self.params
        return [
            parse_verdict(doc, p.max_objects, p.min_object_complexity, p.min_action_complexity)
            for doc in self.nlp.pipe(texts)
        ]


def load_parser(name: str) -> Any:
    """Load a spaCy pipeline that parses dependencies, or raise a one-line ConfigError saying how to get one."""
    try:
        import spacy
    except ImportError:
        raise ConfigError(
            "spacy_model: spaCy is not installed; caption_parse needs it "
            "(pip install 'autolabel[text]' && python -m spacy download en_core_web_sm), or remove this stage"
        ) from None
    try:
        nlp = spacy.load(name)
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"spacy_model: spaCy pipeline {name!r} is not installed ({type(err).__name__}); "
            f"install one (python -m spacy download en_core_web_sm) or give its folder"
        ) from None
    probe = nlp("A dog runs on the grass.")
    if not probe.has_annotation("DEP") or not probe.has_annotation("POS"):
        raise ConfigError(
            f"spacy_model: spaCy pipeline {name!r} has no dependency parser or tagger; "
            f"use a trained English pipeline such as en_core_web_sm"
        )
    return nlp
