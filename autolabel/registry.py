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
from typing import Any

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


def resolve(group: str, name: str) -> Any:
    """The class registered as ``name`` in ``group`` (built-in, entry point, or ``package.module:Class``).

    Whatever a path or an entry point names must be what the group holds (a :class:`~autolabel.stage.Stage`
    subclass; a class with ``load(spec)``): ``type: "os:system"`` is refused in one line, never called.
    """
    builtin = BUILTIN_STAGES if group == STAGE_GROUP else BUILTIN_MODELS
    kind = "stage" if group == STAGE_GROUP else "model"
    if name in builtin:
        return _import(builtin[name])
    if name in _entry_points(group):
        try:
            obj = _entry_points(group)[name].load()
        except Exception as err:  # noqa: BLE001 — a plugin's import may fail any way: one line, whatever it is
            raise UnknownType(f"cannot load {kind} type {name!r} ({type(err).__name__}: {err})",
                              known_types(group)) from None
        return _checked(group, name, obj)
    if ":" in name:
        try:
            obj = _import(name)
        except (ImportError, AttributeError) as err:
            raise UnknownType(f"cannot import {kind} type {name!r} ({err})", known_types(group)) from None
        except Exception as err:  # noqa: BLE001 — a module that raises as it is imported, or an empty name
            raise UnknownType(f"cannot import {kind} type {name!r} ({type(err).__name__}: {err})",
                              known_types(group)) from None
        return _checked(group, name, obj)
    known = known_types(group)
    raise UnknownType(f"unknown {kind} type {name!r} (known: {', '.join(known)}; or 'package.module:Class')", known)


def _checked(group: str, name: str, obj: Any) -> Any:
    """``obj`` when it is what ``group`` holds; else UnknownType saying what a type must be."""
    from .stage import Stage

    if group == STAGE_GROUP:
        ok, must = isinstance(obj, type) and issubclass(obj, Stage), "a subclass of autolabel.Stage"
    else:
        ok, must = isinstance(obj, type) and callable(getattr(obj, "load", None)), "a class with load(spec)"
    if ok:
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


def _import(path: str) -> Any:
    module, _, attr = path.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj
