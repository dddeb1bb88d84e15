"""Where stage and model types come from: built-ins, entry points, or a ``module:Class`` path.

Built-ins are named by import path so that validating a pipeline never imports torch or transformers.
Third-party packages register under the entry-point groups ``autolabel.stages`` and ``autolabel.models``::

    [project.entry-points."autolabel.models"]
    my_detector = "my_package.detector:MyDetector"
"""

from __future__ import annotations

import importlib
from functools import cache
from importlib.metadata import entry_points
from typing import Any, Callable

STAGE_GROUP = "autolabel.stages"
MODEL_GROUP = "autolabel.models"

from .filters import STAGES as _FILTER_STAGES  # noqa: E402 — after the group names, which these may import
from .models.catalog import MODELS as _MODELS  # noqa: E402
from .stages import STAGES as _MODEL_STAGES  # noqa: E402

#: stage type → import path; each package lists its own (plain strings: nothing heavy is imported)
BUILTIN_STAGES: dict[str, str] = {**_MODEL_STAGES, **_FILTER_STAGES}
#: model type → import path of a class with ``load(spec: ModelSpec)``
BUILTIN_MODELS: dict[str, str] = dict(_MODELS)


class UnknownType(LookupError):
    """``str(err)`` is the one-line problem; ``known`` lists the valid names."""

    def __init__(self, message: str, known: list[str]):
        super().__init__(message)
        self.known = known


@cache
def _entry_points(group: str) -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=group)}


def known_types(group: str) -> list[str]:
    builtin = BUILTIN_STAGES if group == STAGE_GROUP else BUILTIN_MODELS
    return sorted({*builtin, *_entry_points(group)})


#: what a group holds: a test of a class named by an entry point or a path, and its wording. Stage types are
#: checked as subclasses of Stage by :func:`autolabel.stage.stage_type` (the stage contract sits above this module)
Holds = tuple[Callable[[Any], bool], str]
HOLDS: dict[str, Holds] = {
    MODEL_GROUP: (lambda obj: isinstance(obj, type) and callable(getattr(obj, "load", None)),
                  "a class with load(spec)"),
    STAGE_GROUP: (lambda obj: isinstance(obj, type), "a class"),
}


def resolve(group: str, name: str, holds: Holds | None = None) -> Any:
    """The class registered as ``name`` in ``group`` (built-in, entry point, or ``package.module:Class``).

    Whatever a path or an entry point names must be what the group holds (``holds``, default :data:`HOLDS`: a class
    with ``load(spec)``; for stages :func:`autolabel.stage.stage_type` asks for a Stage subclass):
    ``type: "os:system"`` is refused in one line, never called.
    """
    builtin = BUILTIN_STAGES if group == STAGE_GROUP else BUILTIN_MODELS
    kind = "stage" if group == STAGE_GROUP else "model"
    if name in builtin:
        return import_object(builtin[name])
    if name in _entry_points(group):
        try:
            obj = _entry_points(group)[name].load()
        except Exception as err:  # noqa: BLE001 — a plugin's import may fail any way: one line, whatever it is
            raise UnknownType(f"cannot load {kind} type {name!r} ({type(err).__name__}: {err})",
                              known_types(group)) from None
        return _checked(group, name, obj, holds or HOLDS[group])
    if ":" in name:
        try:
            obj = import_object(name)
        except (ImportError, AttributeError) as err:
            raise UnknownType(f"cannot import {kind} type {name!r} ({err})", known_types(group)) from None
        except Exception as err:  # noqa: BLE001 — a module that raises as it is imported, or an empty name
            raise UnknownType(f"cannot import {kind} type {name!r} ({type(err).__name__}: {err})",
                              known_types(group)) from None
        return _checked(group, name, obj, holds or HOLDS[group])
    known = known_types(group)
    raise UnknownType(f"unknown {kind} type {name!r} (known: {', '.join(known)}; or 'package.module:Class')", known)


def _checked(group: str, name: str, obj: Any, holds: Holds) -> Any:
    """``obj`` when it is what ``group`` holds; else UnknownType saying what a type must be."""
    test, must = holds
    if test(obj):
        return obj
    kind = "stage" if group == STAGE_GROUP else "model"
    what = f"the class {obj.__qualname__}" if isinstance(obj, type) else f"a {type(obj).__name__}"
    raise UnknownType(f"{name!r} is {what}, not a {kind} type: a {kind} type is a built-in name or "
                      f"'package.module:Class' naming {must}", known_types(group))


def check(group: str, name: str) -> None:
    """Raise UnknownType unless ``name`` is a registered type; imports only ``module:Class`` paths (cheap check)."""
    builtin = BUILTIN_STAGES if group == STAGE_GROUP else BUILTIN_MODELS
    if name not in builtin and name not in _entry_points(group):
        resolve(group, name)


def import_object(path: str) -> Any:
    """The object a ``package.module:attr.attr`` path names (imported now)."""
    module, _, attr = path.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj
