"""Stages that make a run's mistakes visible, loaded like users' own: ``type: probes:MarkerBox``.

* :class:`MarkerBox` boxes the image's red marker, so a wrong orientation, a wrong image in a batch slot or a
  stale cached answer shows in the box itself.
* :class:`KillAt` ends its own process (``os._exit``, SIGKILL) or signals it (SIGTERM, SIGINT, twice) when it
  meets a chosen image, so tests know exactly which batch was in flight.

The store-side kill points (inside a commit, right after one) live in :mod:`killpoints`.
"""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import supervision as sv

from autolabel.stage import Item, Stage, StageParams

EXIT_CODE = 86  # what os._exit kills exit with: tells "killed on purpose" from any other crash


class MarkerBoxParams(StageParams):
    label: str
    calls_file: str | None = None  # one line per image seen: counts model calls


class MarkerBox(Stage):
    """One box around the red pixels (R > 128, G < 128), scored by the share of the image they cover."""

    Params = MarkerBoxParams

    def __call__(self, items: list[Item]) -> list[Item]:
        for item in items:
            rgb = np.asarray(item.image)
            rows, cols = np.nonzero((rgb[..., 0] > 128) & (rgb[..., 1] < 128))
            if not len(rows):
                continue
            det = sv.Detections(
                xyxy=np.array([[cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]], dtype=np.float32),
                confidence=np.array([len(rows) / rgb[..., 0].size], dtype=np.float32),
                data={"class_name": np.array([self.params.label], dtype=object),
                      "phrase": np.array([self.params.label], dtype=object)},
            )
            item.labels.add(det, stage=self.name, provenance={"model": "marker-box", "task": "test"})
        if self.params.calls_file:
            with open(self.params.calls_file, "a") as f:
                f.writelines(f"{os.path.basename(item.key)}\n" for item in items)
        return items


class KillAtParams(StageParams):
    at: str  # the basename of the image that triggers it
    how: str = "exit"  # exit (os._exit) | sigkill | sigterm | sigint | sigint-twice
    once_file: str | None = None  # if set, trigger only while this file does not exist (and create it)


class KillAt(Stage):
    """Passes items through; on meeting image ``at`` ends or signals its own process (in the stage, mid-batch)."""

    Params = KillAtParams

    def __call__(self, items: list[Item]) -> list[Item]:
        if not any(os.path.basename(item.key) == self.params.at for item in items):
            return items
        once = self.params.once_file
        if once is not None:
            if os.path.exists(once):
                return items
            open(once, "w").close()
        how = self.params.how
        if how == "exit":
            os._exit(EXIT_CODE)
        if how == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        if how == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)
        if how in ("sigint", "sigint-twice"):
            os.kill(os.getpid(), signal.SIGINT)
        if how == "sigint-twice":
            time.sleep(0.05)  # the handler runs between bytecodes: let it see the first one
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)  # the second one must interrupt this
            raise AssertionError("the second Ctrl-C did not stop the run")
        return items
