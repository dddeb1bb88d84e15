"""What a run counts of its own work, for run.json: owned by the run, filled by whoever labels.

The runner makes one :class:`Account` per run and hands it down; the pipeline's batch loop adds each stage's seconds
and images and each model's vision passes, the executors and the clip loop add their clock (seconds by phase). A Ray
worker fills an account of its own per batch and sends it back as JSON; the driver adds it to the run's
(:meth:`Account.add`). Nothing is counted on the pipeline itself, so one pipeline can serve many runs (or a server's
requests) without their figures mixing.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from .models.features import VisionCount


@dataclass
class Account:
    """Per stage: seconds spent and images labeled; per model: its vision passes; the loop's clock by phase."""

    stage_seconds: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    stage_images: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))  # cached outputs: not
    vision: dict[str, VisionCount] = field(default_factory=dict)
    clock: Counter[str] = field(default_factory=Counter)

    def stage(self, name: str, seconds: float, images: int) -> None:
        """Stage ``name`` labeled ``images`` items in ``seconds``."""
        self.stage_seconds[name] += seconds
        self.stage_images[name] += images

    def add_vision(self, counts: dict[str, VisionCount]) -> None:
        """Each model's vision passes of one try at a batch (a failed try's passes are work done too)."""
        for name, count in counts.items():
            self.vision[name] = self.vision.get(name, VisionCount()) + count

    def add(self, other: "Account", clock_prefix: str = "") -> None:
        """Fold another account in (a Ray worker's batch); its clock's phases are named with ``clock_prefix``.

        >>> run, worker = Account(), Account()
        >>> worker.stage("detect", 0.5, 4); worker.clock["decode"] += 0.25
        >>> run.add(worker, "workers: "); run.add(worker, "workers: ")
        >>> dict(run.stage_images), dict(run.clock)
        ({'detect': 8}, {'workers: decode': 0.5})
        """
        for name, seconds in other.stage_seconds.items():
            self.stage_seconds[name] += seconds
        for name, images in other.stage_images.items():
            self.stage_images[name] += images
        self.add_vision(other.vision)
        for phase, seconds in other.clock.items():
            self.clock[clock_prefix + phase] += seconds

    def to_json(self) -> dict[str, Any]:
        """Plain data (a Ray worker's batch report); :meth:`from_json` reads it back."""
        return {"stage_seconds": dict(self.stage_seconds), "stage_images": dict(self.stage_images),
                "vision": {n: asdict(c) for n, c in self.vision.items()}, "clock": dict(self.clock)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Account":
        """
        >>> Account.from_json(Account().to_json()) == Account()
        True
        """
        account = cls()
        account.stage_seconds.update(data.get("stage_seconds", {}))
        account.stage_images.update(data.get("stage_images", {}))
        account.vision.update({n: VisionCount(**c) for n, c in data.get("vision", {}).items()})
        account.clock.update(data.get("clock", {}))
        return account

    def summary(self) -> dict[str, Any]:
        """run.json's ``stage_seconds``, ``stage_images`` (cached model outputs not counted), ``vision_passes`` and
        ``loop_seconds``."""
        return {
            "stage_seconds": {k: round(v, 4) for k, v in self.stage_seconds.items()},
            "stage_images": dict(self.stage_images),
            "vision_passes": {name: count.summary() for name, count in sorted(self.vision.items())},
            "loop_seconds": {k: round(v, 4) for k, v in self.clock.items()},
        }
