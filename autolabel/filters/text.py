"""Decisions on text: image captions (``Labels.texts``), region descriptions (``text``), grounded phrases
(``phrase``). A box whose text fails is the box that fails: its description is its label.

OCR output is left to ``ocr_quality`` (OCR rows and ``ocr`` texts are skipped here: a one-character OCR line is
not a bad caption). Rows with no text in a field are not judged on that field.
"""

from __future__ import annotations

import re
from typing import ClassVar

import numpy as np
from pydantic import Field

from ..labels import DROPPED, Labels, Text
from ..ontology import normalize
from ..stage import Item, StageContext
from .base import FilterParams, FilterStage, TextField, is_ocr, mark_row, mark_text
from .blacklist import DEFAULT_BLACKLIST


class TextFilterParams(FilterParams):
    fields: list[TextField] = Field(default_factory=lambda: ["captions", "text", "description", "phrase"], min_length=1)


class TextFilter(FilterStage):
    """Base of text filters: gathers the batch's texts from ``fields``, asks :meth:`check` once, records."""

    Params: ClassVar = TextFilterParams
    params: TextFilterParams

    def check(self, texts: list[str]) -> list[str]:
        """A reason code per text, ``""`` for a text that passes."""
        raise NotImplementedError

    def __call__(self, items: list[Item]) -> list[Item]:
        targets: list[tuple[Labels, int] | Text] = []
        texts: list[str] = []
        for item in items:
            for target, text in gather(item.labels, self.params.fields):
                targets.append(target)
                texts.append(text)
        if not texts:
            return items
        unique = list(dict.fromkeys(texts))  # phrases repeat ("person" x 1000): judge each text once
        verdict = dict(zip(unique, self.check(unique)))
        for target, code in zip(targets, (verdict[t] for t in texts)):
            if not code:
                continue
            if isinstance(target, Text):
                mark_text(target, code, self.params.action)
            else:
                labels, i = target
                det = labels.detections
                mark_row(det.data["status"], det.data["reason"], i, code, self.params.action)
        return items


def gather(labels: Labels, fields: list[str]) -> list[tuple[tuple[Labels, int] | Text, str]]:
    """The texts of ``fields`` in one image that a text check judges, each with where its verdict goes."""
    out: list[tuple[tuple[Labels, int] | Text, str]] = []
    det = labels.detections
    columns = [f for f in ("phrase", "text", "description") if f in fields and f in det.data]
    if columns and len(det):
        rows = np.flatnonzero((det.data["status"] != DROPPED) & ~is_ocr(labels))
        for f in columns:
            col = det.data[f]
            out.extend(((labels, int(i)), col[i]) for i in rows if isinstance(col[i], str) and col[i].strip())
    if "captions" in fields:
        out.extend((t, t.text) for t in labels.texts if not t.kind.startswith("ocr") and t.status != DROPPED)
    return out


class TextLengthParams(TextFilterParams):
    fields: list[TextField] = Field(default_factory=lambda: ["captions"], min_length=1)
    min_words: int = Field(default=1, ge=0)
    #: 5: LAION-5B dropped alt-texts shorter than 5 characters (Schuhmann et al. 2022)
    min_chars: int = Field(default=5, ge=0)


class TextLength(TextFilter):
    """Texts with fewer than ``min_words`` words or ``min_chars`` characters (``too_short``). Applies to captions
    by default: phrases such as "cat" are short by nature; add ``fields: [text]`` for region descriptions."""

    reasons: ClassVar[tuple[str, ...]] = ('too_short',)

    Params = TextLengthParams
    params: TextLengthParams

    def check(self, texts: list[str]) -> list[str]:
        p = self.params
        return ["too_short" if len(t.split()) < p.min_words or len(t.strip()) < p.min_chars else "" for t in texts]


class RepetitionParams(TextFilterParams):
    #: a block of words repeated 3 times in a row: the loop greedy decoding falls into (our choice; see README)
    min_copies: int = Field(default=3, ge=2)
    max_ngram: int = Field(default=8, ge=1)  # longest repeated block (in words) looked for


class Repetition(TextFilter):
    """Degenerate repetition (``repetition``): some n-gram (n ≤ ``max_ngram`` words) repeated ``min_copies`` times
    back to back, e.g. "a man and a man and a man and a man" or "the the the"."""

    reasons: ClassVar[tuple[str, ...]] = ('repetition',)

    Params = RepetitionParams
    params: RepetitionParams

    def check(self, texts: list[str]) -> list[str]:
        p = self.params
        return ["repetition" if repeated_block(t, p.max_ngram) >= p.min_copies else "" for t in texts]


_WORD = re.compile(r"\w+")


def repeated_block(text: str, max_ngram: int = 8) -> float:
    """The most copies, back to back, of any block of at most ``max_ngram`` words (1.0: nothing repeats).

    A block of ``p`` words repeated ``k`` times makes word ``i`` equal word ``i + p`` for ``(k - 1) · p`` words
    in a row; partial copies count as fractions.
    """
    words = _WORD.findall(text.lower())
    if len(set(words)) == len(words):
        return 1.0  # no word twice: nothing repeats (most texts; plain Python beats numpy on a dozen words)
    best = 1.0
    for p in range(1, min(max_ngram, len(words) // 2) + 1):
        run = 0
        for a, b in zip(words, words[p:]):
            run = run + 1 if a == b else 0
            if run and (run + p) / p > best:
                best = (run + p) / p
    return best


class PhraseBlacklistParams(TextFilterParams):
    fields: list[TextField] = Field(default_factory=lambda: ["phrase", "text"], min_length=1)
    words: list[str] | None = None  # replaces the default list (autolabel.filters.blacklist)
    extra: list[str] = Field(default_factory=list)  # added to the list


class PhraseBlacklist(TextFilter):
    """Phrases that name no drawable thing — pronouns ("it", "them"), abstract nouns ("time", "love"), the
    picture itself ("background", "left side") — fail with ``blacklisted``. The whole normalized phrase must match
    an entry; ontology classes and prompts are never blacklisted."""

    reasons: ClassVar[tuple[str, ...]] = ('blacklisted',)

    Params = PhraseBlacklistParams
    params: PhraseBlacklistParams

    def __init__(self, name: str, params: PhraseBlacklistParams, context: StageContext):
        super().__init__(name, params, context)
        words = DEFAULT_BLACKLIST if params.words is None else params.words
        allowed = {normalize(p) for p in (*context.ontology.classes, *context.ontology.all_prompts())}
        self.blacklist = {normalize(w) for w in (*words, *params.extra)} - allowed - {""}

    def check(self, texts: list[str]) -> list[str]:
        return ["blacklisted" if normalize(t) in self.blacklist else "" for t in texts]
