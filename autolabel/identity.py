"""What decides a run's labels, as hashes: the pipeline hash and the cache's stage keys, from one recipe.

Both hash the same things — the ontology in its normalised form, every stage's params, the models' identities (not
their device) — as :func:`canonical_json` bytes: the pipeline hash all at once (images are labeled again when it
changes), a stage key as a chain up to each model stage (its cached output is reused while it holds). Their lengths
and recipes are stored formats: stores written before must still be read, so they never change.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Iterable

PIPELINE_HASH_LENGTH = 16  #: hex digits of a pipeline hash (stored with every image)
KEY_LENGTH = 24  #: hex digits of a stage key (a stored key's format: keep it, or every store's cache goes cold)


def canonical_json(value: Any) -> bytes:
    """The bytes every hash and key is taken of: keys sorted, so the order a file lists them in changes nothing.

    >>> canonical_json({"b": 1, "a": None})
    b'{"a": null, "b": 1}'
    """
    return json.dumps(value, sort_keys=True, default=str).encode()


def digest(value: Any, length: int = PIPELINE_HASH_LENGTH) -> str:
    """The first ``length`` hex digits of the sha256 of ``value``'s :func:`canonical_json`."""
    return hashlib.sha256(canonical_json(value)).hexdigest()[:length]


def pipeline_hash(models: dict[str, dict[str, Any]], ontology: Any, stages: list[dict[str, Any]]) -> str:
    """The hash of what decides the labels: each model's identity, the normalised ontology, each stage's params."""
    return digest({"models": models, "ontology": ontology, "stages": stages})


def stage_keys(ontology: Any, stages: Iterable[tuple[dict[str, Any], dict[str, Any] | None]]) -> list[str | None]:
    """Per stage ``(params, identity of its model or None)``, the key of its cached output (None: a stage with no
    model, which is not cached). Each key chains the ontology and every stage up to it.

    >>> keys = stage_keys(["a"], [({"type": "m"}, {"id": "x"}), ({"type": "f"}, None)])
    >>> [len(k) if k else k for k in keys]
    [24, None]
    """
    keys: list[str | None] = []
    chain = hashlib.sha256(canonical_json(ontology))
    for params, model in stages:
        chain.update(canonical_json(params))
        if model is not None:
            chain.update(canonical_json(model))
            keys.append(chain.hexdigest()[:KEY_LENGTH])
        else:
            keys.append(None)
    return keys
