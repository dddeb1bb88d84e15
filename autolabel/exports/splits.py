"""Train / val / test splits by content hash, with no split left empty when there are images enough to fill it.

The rule, in two steps:

1. Each image draws a number in [0, 1) from ``sha256(seed:key)`` (``key``: its content hash) and goes to the split
   whose interval of the cumulative fractions holds the draw. Identical images draw alike; re-exports never
   shuffle; adding images never moves the ones already there.
2. A small dataset can leave a split empty by chance (18 images at 80/20 leave ``val`` empty one seed in 55), and
   Ultralytics refuses a dataset whose ``val`` is empty. So when a split whose fraction is > 0 got no image and
   there are at least as many images as such splits, the image whose draw lies nearest that split's interval
   (ties: the smaller key, then the image streamed first) moves into it, taken from a split that keeps at least
   one image; empty splits are filled in the order they are listed. This is the only case in which two identical
   images can be apart.

Step 2 depends only on the set of images, not on their order, and needs memory for a few candidates per split,
not for the dataset: :class:`SplitPlan` streams.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


def draw_of(key: str, seed: int = 0) -> float:
    """The image's uniform draw in [0, 1): the first 8 bytes of ``sha256(seed:key)``."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "big") / 2.0**64


def split_for_draw(draw: float, fractions: dict[str, float]) -> str:
    """The split whose interval of the cumulative ``fractions`` holds ``draw``."""
    total = 0.0
    for name, fraction in fractions.items():
        total += fraction
        if draw < total:
            return name
    return next(reversed(fractions))  # rounding: the sum may fall a hair short of 1


def split_of(key: str, fractions: dict[str, float], seed: int = 0) -> str:
    """The split an image draws (step 1 of the rule; :class:`SplitPlan` adds step 2).

    >>> split_of("abc", {"train": 0.8, "val": 0.2}) in ("train", "val")
    True
    """
    return split_for_draw(draw_of(key, seed), fractions)


def intervals(fractions: dict[str, float]) -> dict[str, tuple[float, float]]:
    """Each split's ``[low, high)`` interval of the draw (the last one reaches 1 whatever the rounding)."""
    out, low = {}, 0.0
    names = list(fractions)
    for name in names:
        high = 1.0 if name == names[-1] else low + fractions[name]
        out[name] = (low, high)
        low = high
    return out


@dataclass
class SplitPlan:
    """Assigns images to splits as they stream past, then says which few to move so that no split is empty.

    >>> plan = SplitPlan({"train": 0.5, "val": 0.5}, seed=0)
    >>> for key in ("a", "b"):
    ...     _ = plan.assign(key, lambda split: f"files of {key} in {split}")
    >>> _ = plan.moves()  # whatever the two drew, each split now holds one
    >>> plan.counts
    {'train': 1, 'val': 1}
    """

    fractions: dict[str, float]
    seed: int = 0
    counts: dict[str, int] = field(init=False)
    _candidates: dict[str, list[tuple[float, str, int, str, Any]]] = field(init=False)
    _seen: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.counts = dict.fromkeys(self.fractions, 0)
        self._bounds = intervals(self.fractions)
        self._wanted = [name for name, fraction in self.fractions.items() if fraction > 0]
        self._candidates = {name: [] for name in self._wanted}

    def assign(self, key: str, place: Callable[[str], T]) -> tuple[str, T]:
        """The split of the image with content hash ``key``, and what ``place(split)`` returns (e.g. the paths of
        the files it wrote), which :meth:`moves` hands back should this image have to move."""
        draw = draw_of(key, self.seed)
        split = split_for_draw(draw, self.fractions)
        placed = place(split)
        self.counts[split] += 1
        keep = len(self._wanted)  # enough: at most that many images are unusable as donors (see moves)
        for name, candidates in self._candidates.items():
            if self.counts[name]:
                continue  # it has an image of its own: it will not need one
            low, high = self._bounds[name]
            candidates.append((low - draw if draw < low else draw - high, key, self._seen, split, placed))
            if len(candidates) > 2 * keep:
                candidates.sort(key=_order)
                del candidates[keep:]
        self._seen += 1
        return split, placed

    def moves(self) -> list[tuple[Any, str, str]]:
        """``(what place returned, from split, to split)`` for each image to move, and the counts updated; ``[]``
        nearly always.

        A donor must keep one image: the images unusable as donors are those alone in their split, at most one per
        other split, so keeping as many candidates as there are splits always leaves one that is usable.
        """
        if sum(self.counts.values()) < len(self._wanted):
            return []  # not enough images to fill every split: leave them as drawn
        moved: set[int] = set()
        out = []
        for name in self._wanted:
            if self.counts[name]:
                continue
            for _, _, seq, split, payload in sorted(self._candidates[name], key=_order):
                if seq in moved or self.counts[split] <= 1:
                    continue
                moved.add(seq)
                self.counts[split] -= 1
                self.counts[name] += 1
                out.append((payload, split, name))
                break
        return out


def _order(candidate: tuple[float, str, int, str, Any]) -> tuple[float, str, int]:
    return candidate[0], candidate[1], candidate[2]
