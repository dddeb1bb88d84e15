"""One streaming pass over a run store: the counts, histograms and bounded samples a report shows.

A 1M-image store must report in bounded memory, so nothing here keeps more than a fixed number of rows: counts are
tallied per (class, status, score bin), and example images are kept by reservoir sampling (Algorithm R), one
reservoir per section (a uniform sample of every labeled image, and one per filter decision such as
``dropped/low_score``), so that rare decisions get examples of their own.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from itertools import chain
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

from ..records import Stored
from ..store import Store

#: Score histogram bins over [0, 1] (bin ``BINS - 1`` holds 1.0); bin -1 counts boxes without a score.
BINS = 20
#: Distinct failure reasons, and distinct drop/flag reasons, tallied one by one; the rest as "(other reasons)"
#: (a reason code that embeds a value would otherwise grow without bound).
MAX_FAILURE_REASONS = MAX_REASONS = 200
#: Decisions (``status/reason``) that get example images; later ones are counted without examples.
MAX_SECTIONS = 40
OTHER = "(other reasons)"
#: Failed images listed by name (a sample of them when there are more).
MAX_FAILURES_LISTED = 50
#: Boxes tallied per flush (bounds the memory of the pending lists).
_FLUSH = 100_000
T = TypeVar("T")


class Reservoir(Generic[T]):
    """A uniform sample of at most ``size`` items of a stream of unknown length (Algorithm R)."""

    def __init__(self, size: int, rng: random.Random):
        self.size, self.rng, self.seen, self.items = size, rng, 0, []  # type: list[T]

    def offer(self, item: T) -> None:
        self.seen += 1
        if len(self.items) < self.size:
            self.items.append(item)
        else:
            k = self.rng.randrange(self.seen)
            if k < self.size:
                self.items[k] = item


@dataclass
class ReportData:
    """What the report shows, gathered in one pass (every field bounded in size, whatever the store's)."""

    runs: list[dict[str, Any]]
    images_done: int = 0
    images_failed: int = 0
    boxes: int = 0
    #: (class, status, bin) → boxes; bin -1 = no score
    scores: Counter[tuple[str, str, int]] = field(default_factory=Counter)
    #: (status, reason, class) → boxes, for dropped and flagged boxes; texts count as class ``<text:KIND>``
    decisions: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    #: (kind, status) → image-level texts
    texts: Counter[tuple[str, str]] = field(default_factory=Counter)
    failure_reasons: Counter[str] = field(default_factory=Counter)
    failures: list[dict[str, Any]] = field(default_factory=list)
    #: section ("labeled", "dropped/low_score", ...) → sampled image rows (with labels) and how many qualified
    samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    section_sizes: dict[str, int] = field(default_factory=dict)

    def class_counts(self) -> dict[str, Counter[str]]:
        """class → {kept, flagged, dropped} box counts."""
        out: dict[str, Counter[str]] = {}
        for (name, status, _), n in self.scores.items():
            out.setdefault(name, Counter())[status] += n
        return dict(sorted(out.items(), key=lambda kv: -sum(kv[1].values())))

    def histogram(self, name: str, status: str) -> list[int]:
        """Boxes of ``name`` with ``status`` per score bin (``BINS`` bins over [0, 1])."""
        return [self.scores.get((name, status, b), 0) for b in range(BINS)]


def score_bin(score: float | None) -> int:
    """The histogram bin of a score; -1 for none (``nan`` / ``None``)."""
    if score is None or math.isnan(score):
        return -1
    return min(max(int(score * BINS), 0), BINS - 1)


def collect(store: Store, samples: int = 12, seed: int = 0) -> ReportData:
    """Stream every image of ``store`` once; keep at most ``samples`` example images per section."""
    rng = random.Random(seed)
    data = ReportData(runs=store.runs())
    reservoirs: dict[str, Reservoir[dict[str, Any]]] = {"labeled": Reservoir(samples, rng)}
    pending: tuple[list[str], list[str], list[float | None]] = ([], [], [])  # class, status, score of each box
    known: set[str] = set()  # reason codes tallied by name
    unsampled: Counter[str] = Counter()  # images of decisions beyond MAX_SECTIONS
    for row in store.images(status="done"):
        data.images_done += 1
        reservoirs["labeled"].offer(row)
        stored = Stored.of(row["labels"])
        names, statuses = stored.column("class_name"), stored.column("status")
        data.boxes += len(stored)
        pending[0].extend(names)
        pending[1].extend(statuses)
        pending[2].extend(stored.confidence)
        decided = [(s, r, c) for c, s, r in chain(stored.box_decisions(), stored.text_decisions()) if r]
        if decided:
            decided = [(s, r if r in known or _admit(known, r) else OTHER, c) for s, r, c in decided]
            data.decisions.update(decided)
            for status, reason in dict.fromkeys((s, r) for s, r, _ in decided):  # first met first: reproducible
                section = f"{status}/{reason}"
                if section not in reservoirs and len(reservoirs) <= MAX_SECTIONS:
                    reservoirs[section] = Reservoir(samples, rng)
                if section in reservoirs:
                    reservoirs[section].offer(row)
                else:
                    unsampled[section] += 1
        data.texts.update((t["kind"], t.get("status", "kept")) for t in stored.texts)
        if len(pending[0]) >= _FLUSH:
            _tally(data, pending)
    _tally(data, pending)
    _collect_failures(data, store.images(status="failed", labels=False), rng)
    data.samples = {k: r.items for k, r in reservoirs.items()}
    data.section_sizes = {k: r.seen for k, r in reservoirs.items()} | dict(unsampled)
    return data


def _admit(known: set[str], reason: str) -> bool:
    """Whether ``reason`` is tallied by name (while fewer than MAX_REASONS are); remembers it if so."""
    if len(known) < MAX_REASONS:
        known.add(reason)
        return True
    return False


def _tally(data: ReportData, pending: tuple[list[str], list[str], list[float | None]]) -> None:
    """Count the pending boxes by (class, status, score bin); the bins computed at once (``score_bin``, vectorized)."""
    names, statuses, scores = pending
    score = np.asarray(scores, dtype=np.float64)  # None → nan
    bins = np.where(np.isnan(score), -1, np.clip(np.nan_to_num(score * BINS).astype(np.int64), 0, BINS - 1))
    data.scores.update(zip((n or "<no class>" for n in names), statuses, bins.tolist()))
    for column in pending:
        column.clear()


def _collect_failures(data: ReportData, rows: Iterable[dict[str, Any]], rng: random.Random) -> None:
    listed: Reservoir[dict[str, Any]] = Reservoir(MAX_FAILURES_LISTED, rng)
    for row in rows:
        data.images_failed += 1
        reason = row["reason"] or "unknown"
        if reason in data.failure_reasons or len(data.failure_reasons) < MAX_FAILURE_REASONS:
            data.failure_reasons[reason] += 1
        else:
            data.failure_reasons["(other reasons)"] += 1
        listed.offer({"path": row["path"], "rel_path": row["rel_path"], "reason": reason})
    data.failures = sorted(listed.items, key=lambda r: r["rel_path"])
