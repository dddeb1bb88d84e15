"""``--set dotted.path=value`` overrides applied to a parsed pipeline file before validation."""

from __future__ import annotations

import copy
from typing import Any

import yaml

from .errors import ConfigError


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``"stages.1.threshold=0.3"`` into ``(["stages", "1", "threshold"], 0.3)``; values are YAML scalars."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. --set stages.1.threshold=0.3")
    parts = key.strip().split(".")
    if any(not p for p in parts):
        raise ConfigError(f"--set {text!r}: empty segment in key {key!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {text!r}: value is not valid YAML ({_first_line(err)})") from None
    return parts, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with each override applied in order. Dict keys may be new; list indexes must exist."""
    data = copy.deepcopy(data)
    for text in overrides:
        parts, value = parse_override(text)
        node: Any = data
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            where = ".".join(parts[:depth]) or "<top>"
            if isinstance(node, list):
                if not part.lstrip("-").isdigit():
                    raise ConfigError(f"--set {text}: {where} is a list; use an index, not {part!r}")
                index = int(part)
                if not -len(node) <= index < len(node):
                    raise ConfigError(f"--set {text}: {where} has {len(node)} items, no index {index}")
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


def _first_line(err: Exception) -> str:
    return " ".join(str(err).split())
