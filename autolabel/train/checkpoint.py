"""Training state on disk, written so that a ``kill -9`` at any moment leaves the last complete checkpoint usable.

Layout of ``OUT/checkpoint/``::

    latest.json            # {"state": "state-0000007", "best": "best-0000005", ...}: the pointer
    state-0000007/state.pt # trainable weights, optimizer, LR schedule, where the loop stands, the history
    best-0000005/best.pt   # the trainable weights of the best validation AP so far (optimizer step in latest.json)

A checkpoint is written into new folders, flushed to disk, and only then does ``latest.json`` (replaced
atomically) point at them; folders it no longer names are deleted after that, and on load. So the pointer always
names complete files, whatever instant the process dies at. Only trainable weights are saved: the frozen ones are
the base model's, which resuming loads again (its id, commit and the data digest must match: the settings check).
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import AutolabelError, ExitCode
from ..util import atomic_write_text

FOLDER = "checkpoint"
POINTER = "latest.json"


class ResumeError(AutolabelError):
    """``--resume`` cannot continue: no checkpoint, or one made with other settings."""

    exit_code = ExitCode.CONFIG


@dataclass
class Saved:
    """What :func:`load` returns: the loop's state and the best weights so far (None before any validation)."""

    state: dict[str, Any]
    best: dict[str, Any] | None
    settings: dict[str, Any]


def folder(out: Path) -> Path:
    return Path(out) / FOLDER


def exists(out: Path) -> bool:
    return (folder(out) / POINTER).is_file()


def save(out: Path, state: dict[str, Any], best: dict[str, Any] | None, settings: dict[str, Any],
         best_step: int | None) -> None:
    """Write a checkpoint; ``best`` (the best weights, from optimizer step ``best_step``) is written only when the
    checkpoint on disk holds another step's."""
    import torch

    root = folder(out)
    root.mkdir(parents=True, exist_ok=True)
    pointer = _pointer(root)
    serial = int(pointer.get("serial") or 0) + 1  # new folders each time: the ones the pointer names stay intact
    state_dir = f"state-{serial:07d}"
    _write(root / state_dir / "state.pt", lambda path: torch.save(state, path))
    best_dir = pointer.get("best") if best_step is not None and pointer.get("best_step") == best_step else None
    if best is not None and best_dir is None:
        best_dir = f"best-{serial:07d}"
        _write(root / best_dir / "best.pt", lambda path: torch.save(best, path))
    record = {"serial": serial, "state": state_dir, "best": best_dir, "best_step": best_step if best_dir else None,
              "settings": settings}
    atomic_write_text(root / POINTER, json.dumps(record, indent=1, default=str) + "\n")
    _sweep(root, {state_dir, best_dir})


def load(out: Path) -> Saved:
    """The checkpoint ``latest.json`` names (ResumeError when there is none)."""
    import torch

    root = folder(out)
    pointer = _pointer(root)
    if not pointer.get("state"):
        raise ResumeError(f"--resume: {root} holds no checkpoint (nothing to resume: start without --resume)")
    _sweep(root, {pointer["state"], pointer.get("best")})
    try:
        state = torch.load(root / pointer["state"] / "state.pt", map_location="cpu", weights_only=False)
        best = (torch.load(root / pointer["best"] / "best.pt", map_location="cpu", weights_only=False)
                if pointer.get("best") else None)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as err:
        raise ResumeError(f"--resume: cannot read the checkpoint in {root} ({' '.join(str(err).split())}); "
                          "start over without --resume") from None
    return Saved(state, best, pointer.get("settings") or {})


def remove(out: Path) -> None:
    """Delete the checkpoint folder (once the trained model is written)."""
    shutil.rmtree(folder(out), ignore_errors=True)


def mismatch(saved: dict[str, Any], now: dict[str, Any]) -> str | None:
    """The first setting that differs between a checkpoint and this run, as ``key (X there, Y now)``; None if none.

    >>> mismatch({"lr": 1e-4, "task": "od"}, {"lr": 3e-4, "task": "od"})
    'lr (0.0001 there, 0.0003 now)'
    """
    for key in sorted(set(saved) | set(now)):
        if json.dumps(saved.get(key), sort_keys=True, default=str) != json.dumps(now.get(key), sort_keys=True,
                                                                                   default=str):
            return f"{key} ({saved.get(key)!r} there, {now.get(key)!r} now)"
    return None


def _pointer(root: Path) -> dict[str, Any]:
    try:
        data = json.loads((root / POINTER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write(path: Path, writer: Any) -> None:
    """Write a file through ``writer(path)`` into a fresh folder, flushed to disk before anyone points at it."""
    if path.parent.exists():
        shutil.rmtree(path.parent)
    path.parent.mkdir(parents=True)
    tmp = path.with_suffix(".tmp")
    writer(tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _sweep(root: Path, keep: set[str | None]) -> None:
    """Delete the state / best folders the pointer does not name (left by an earlier checkpoint or a killed write)."""
    for child in root.iterdir():
        if child.is_dir() and child.name not in keep and child.name.startswith(("state-", "best-")):
            shutil.rmtree(child, ignore_errors=True)
