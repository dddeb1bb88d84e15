"""The ontology: the classes a pipeline labels, each with the prompts that find it.

Phrases a model emits map back to classes case- and plural-insensitively, through any of a class's prompts
("Forklifts" → ``forklift``; "man" → ``person`` when ``person: [person, man, woman]``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from collections.abc import Mapping, Sequence

_IRREGULAR = {"people": "person", "men": "man", "women": "woman", "children": "child", "mice": "mouse",
              "geese": "goose", "teeth": "tooth", "feet": "foot", "knives": "knife", "leaves": "leaf"}
_SIBILANT = re.compile(r"(ss|sh|ch|x|z)es$")


def normalize(phrase: str) -> str:
    """Lower-case, collapse spaces, strip articles and punctuation, singularize the last word."""
    words = re.sub(r"[^\w\s-]", " ", phrase.lower()).split()
    if words and words[0] in ("a", "an", "the"):
        words = words[1:]
    if not words:
        return ""
    words[-1] = singular(words[-1])
    return " ".join(words)


def singular(word: str) -> str:
    """English singular of a (lower-case) noun, by the common rules; good enough for matching, not for display."""
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if len(word) > 3 and word.endswith("ies"):
        return word[:-3] + "y"
    if _SIBILANT.search(word):
        return word[:-2]
    if len(word) > 2 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


@dataclass(frozen=True)
class Ontology:
    """Ordered classes, each with one or more prompts. Class ids are positions (0-based) in this order."""

    prompts: Mapping[str, tuple[str, ...]]

    @classmethod
    def from_config(cls, raw: Mapping[str, str | Sequence[str] | None] | Sequence[str]) -> "Ontology":
        """``{"person": ["person", "man"], "car": "car", "dog": None}`` or ``["person", "car"]``."""
        if not isinstance(raw, Mapping):
            raw = dict.fromkeys(raw)
        prompts = {}
        for name, value in raw.items():
            if value is None:
                value = [name]
            elif isinstance(value, str):
                value = [value]
            prompts[name] = tuple(value)
        return cls(prompts)

    def canonical(self) -> dict[str, list[str]]:
        """The one form of this ontology, whatever way it was written: what pipeline hashes and cache keys use.

        ``["person"]``, ``{person: person}``, ``{person: [person]}`` and ``{person: null}`` mean the same, so they
        must not relabel anything:

        >>> forms = [["person"], {"person": "person"}, {"person": ["person"]}, {"person": None}]
        >>> [Ontology.from_config(f).canonical() for f in forms]
        [{'person': ['person']}, {'person': ['person']}, {'person': ['person']}, {'person': ['person']}]
        """
        return {name: list(prompts) for name, prompts in self.prompts.items()}

    @property
    def classes(self) -> list[str]:
        return list(self.prompts)

    def all_prompts(self) -> list[str]:
        """Every prompt once, in ontology order (what a detector gets in one pass)."""
        return list(dict.fromkeys(p for ps in self.prompts.values() for p in ps))

    def class_of(self, phrase: str) -> str | None:
        """The class a phrase names, or ``None``. Exact prompt matches win over singular/plural matches."""
        return self._lookup.get(normalize(phrase))

    @cached_property
    def _lookup(self) -> dict[str, str]:
        table: dict[str, str] = {}
        for name, prompts in self.prompts.items():
            for text in (name, *prompts):
                table.setdefault(normalize(text), name)
        return table

    def __len__(self) -> int:
        return len(self.prompts)
