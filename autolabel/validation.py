"""pydantic's validation errors as the lines users read: ``key.path: problem``, one per error, no traceback.

Every validated input — the pipeline file (:mod:`autolabel.config`), a filter's per-class values, a stage's keys —
words its errors here, so a problem reads the same wherever it is found.
"""

from __future__ import annotations

import re

from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails, PydanticCustomError

#: pydantic names union members in error locations; they are not keys of the file
UNION_TAGS = {"str", "list[str]", "dict[str,union[str,list[str],none]]", "none", "int", "float", "bool"}


def invalid(message: str) -> PydanticCustomError:
    """A validation error whose message is exactly ``message`` (no "Value error," prefix)."""
    return PydanticCustomError("invalid", message)  # no context given: braces in ``message`` stay as they are


def location(error: ErrorDetails) -> list[Any]:
    """An error's location as keys of the input (pydantic's union members and validator names left out)."""
    return [p for p in error["loc"] if not (isinstance(p, str) and (p.startswith("function-") or p in UNION_TAGS))]


def key_path(prefix: str, loc: list[Any]) -> str:
    """``stages[2].model``: a location as the file spells it.

    >>> key_path("stages[0]", ["per_class", "car", 0])
    'stages[0].per_class.car[0]'
    """
    out = prefix
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top>"


_URL_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]*@")


def shown(value: Any) -> str:
    """`` (got 'x')`` for a value worth repeating in a message (not a whole mapping or list; a URL's credentials
    masked).

    >>> shown("http://user:secret@ls:8080"), shown({"a": 1})
    (" (got 'http://***@ls:8080')", '')
    """
    if isinstance(value, str):
        value = _URL_CREDENTIALS.sub("***@", value)
    return "" if isinstance(value, (dict, list)) or value is None else f" (got {value!r})"


def one_of(values: list[str]) -> str:
    """``'a', 'b' or 'c'``: pydantic's wording for a choice.

    >>> one_of(["coco", "yolo"])
    "'coco' or 'yolo'"
    """
    quoted = [repr(v) for v in values]
    return ", ".join(quoted[:-1]) + f" or {quoted[-1]}" if len(quoted) > 1 else quoted[0]


def error_line(error: ErrorDetails, path: str, known: list[str]) -> str:
    """The line for one error at ``path``; ``known``: the keys accepted there (named for an unknown key)."""
    if error["type"] == "extra_forbidden":
        return f"{path}: unknown key" + (f" (known: {', '.join(known)})" if known else "")
    if error["type"] == "missing":
        return f"{path}: missing required key"
    msg = error["msg"][0].lower() + error["msg"][1:]
    return f"{path}: {msg}{shown(error.get('input'))}"


def format_errors(err: ValidationError, schema: type[BaseModel], prefix: str = "") -> list[str]:
    """One line per error of validating ``schema`` (the accepted keys named for an unknown top-level one); the
    pipeline file's own wording of exports is :func:`autolabel.config.format_errors`."""
    lines = []
    for error in err.errors():
        loc = location(error)
        lines.append(error_line(error, key_path(prefix, loc), list(schema.model_fields) if len(loc) <= 1 else []))
    return list(dict.fromkeys(lines))  # union types repeat the same complaint
