"""A griffe extension for the API reference: the package's plain-text docstrings rendered as Markdown reads them.

The docstrings are written for ``help()`` and doctest: ``>>>`` examples, Sphinx roles (``:func:`name```), double
backquotes. Markdown would read ``>>> x["a"]["b"]`` as reference links and the roles as text, so before rendering
each docstring's examples become ``pycon`` code blocks and each role becomes inline code. The sources stay as they
are (pytest runs the examples as doctests).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|attr|data|exc|obj|const):`~?\.?([^`]+)`")


def fence_examples(text: str) -> str:
    """Wrap each run of ``>>>`` lines and the output after them (up to a blank line) in a ``pycon`` block."""
    out: list[str] = []
    inside = False
    for line in text.splitlines():
        starts = line.lstrip().startswith(">>>")
        if starts and not inside:
            out += ["", "```pycon"]
            inside = True
        elif inside and not line.strip():
            out += ["```", ""]
            inside = False
        out.append(line.strip() if inside and starts else line)
    if inside:
        out.append("```")
    return "\n".join(out)


def plain(text: str) -> str:
    return fence_examples(ROLE.sub(r"`\1`", text))


class PlainDocstrings(griffe.Extension):
    """Rewrite every docstring once griffe has read it (see the module's docstring)."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = plain(obj.docstring.value)
