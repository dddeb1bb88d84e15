"""``--set dotted.path=value`` and ``--set-file FILE`` overrides applied to a parsed pipeline file before validation.

A list item is named by its index (``stages.1.threshold``) or, for the stages, by the stage's name — its ``name:``,
else its ``type:`` — so that a file of overrides (what ``autolabel calibrate`` writes) survives stages being added
or reordered: ``stages.score_threshold.per_class.person=0.42``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import bounded_yaml
from .errors import ConfigError

#: ``"key=value"`` as typed after ``--set``, or ``(key, value)`` already parsed (what a ``--set-file`` holds)
Override = str | tuple[str, Any]


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``"stages.1.threshold=0.3"`` into ``(["stages", "1", "threshold"], 0.3)``; values are YAML scalars."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. --set stages.1.threshold=0.3")
    try:
        value = bounded_yaml.loads(raw, "") if raw.strip() else ""
    except ConfigError as err:
        raise ConfigError(f"--set {text!r}: value is not valid YAML ({str(err).removeprefix(': ')})") from None
    return _split_key(key, text), value


def _split_key(key: str, text: str) -> list[str]:
    parts = key.strip().split(".")
    if any(not p for p in parts):
        raise ConfigError(f"--set {text!r}: empty segment in key {key!r}")
    return parts


def load_set_file(path: str | Path) -> list[tuple[str, Any]]:
    """The ``(dotted key, value)`` pairs of a ``--set-file``: a YAML mapping such as ``thresholds.yaml``.

    >>> # stages.score_threshold.per_class.person: 0.42
    """
    path = Path(path)
    try:
        data = bounded_yaml.loads(bounded_yaml.read_text(path, "file"), str(path))
    except ConfigError as err:
        raise ConfigError(f"--set-file {err}") from None
    if data is None:
        return []
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise ConfigError(f"--set-file {path}: expected a mapping of dotted keys to values, "
                          f"e.g. 'stages.score_threshold.threshold: 0.4'")
    return [(f"{key}", value) for key, value in data.items()]


def collect_overrides(set_files: Sequence[str | Path] = (), overrides: Sequence[Override] = ()) -> list[Override]:
    """Every ``--set-file`` in order, then every ``--set`` (so a ``--set`` on the command line wins)."""
    out: list[Override] = []
    for path in set_files:
        out.extend(load_set_file(path))
    return out + list(overrides)


def apply_overrides(data: dict[str, Any], overrides: Sequence[Override]) -> dict[str, Any]:
    """Return a copy of ``data`` with each override applied in order. Dict keys may be new; list items must exist."""
    data = copy.deepcopy(data)
    for override in overrides:
        if isinstance(override, str):
            text = override
            parts, value = parse_override(override)
        else:
            key, value = override
            text = f"{key}={value!r}"
            parts = _split_key(key, text)
        node: Any = data
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            where = ".".join(parts[:depth]) or "<top>"
            if isinstance(node, list):
                index = _list_index(node, part, where, text)
                if last:
                    node[index] = value
                else:
                    node = node[index]
            elif isinstance(node, dict):
                if last:
                    node[part] = value
                else:
                    if node.get(part) is None:
                        node[part] = {}
                    node = node[part]
            else:
                raise ConfigError(f"--set {text}: {where} is a {type(node).__name__}, cannot set {part!r} in it")
    return data


def _list_index(node: list[Any], part: str, where: str, text: str) -> int:
    """The item ``part`` names: an index, or the one mapping whose ``name`` (else ``type``) is ``part``."""
    if part.lstrip("-").isdigit():
        index = int(part)
        if not -len(node) <= index < len(node):
            raise ConfigError(f"--set {text}: {where} has {len(node)} items, no index {index}")
        return index
    names = [_item_name(item) for item in node]
    hits = [i for i, name in enumerate(names) if name == part]
    if len(hits) == 1:
        return hits[0]
    known = ", ".join(repr(n) for n in names if n is not None) or "none"
    if not hits:
        raise ConfigError(f"--set {text}: {where} has no item named {part!r} (use an index or a name: {known})")
    raise ConfigError(f"--set {text}: {where} has {len(hits)} items named {part!r}; give them distinct names")


def _item_name(item: Any) -> str | None:
    if not isinstance(item, dict):
        return None
    name = item.get("name") or item.get("type")
    return str(name) if name is not None else None
