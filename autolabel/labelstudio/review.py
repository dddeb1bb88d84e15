"""What reviewers did with the auto-labels: per box, accepted unchanged, moved, relabeled, deleted or added.

A reviewed task's annotation is compared with the prediction the reviewer started from, box by box
(``rectanglelabels`` regions; masks and texts follow their box). Boxes are paired by region id first — Label Studio
keeps a prediction's region ids when a reviewer accepts or edits it — then, among those left, greedily by IoU
(highest first, at least ``iou_threshold``). A pair is *relabeled* when its class changed, else *moved* when any
edge moved more than ``tolerance`` pixels, else *accepted*; a predicted box left unpaired was *deleted*, an
annotated one *added*. Relabeled and deleted boxes count under the predicted class, added ones under the
annotated class. The acceptance rate is accepted / predicted — the share of auto-labels a person kept as they were.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

OUTCOMES = ("accepted", "moved", "relabeled", "deleted", "added")
IOU_THRESHOLD = 0.5
TOLERANCE_PX = 0.5


@dataclass(frozen=True)
class Box:
    """One ``rectanglelabels`` region in pixels of the image."""

    id: str
    label: str
    xyxy: tuple[float, float, float, float]


def boxes(result: Iterable[dict[str, Any]]) -> list[Box]:
    """The rectangle regions of a Label Studio result list, in pixels (rotated ones by their bounding box)."""
    out = []
    for region in result:
        if region.get("type") != "rectanglelabels":
            continue
        value = region.get("value") or {}
        labels = value.get("rectanglelabels") or []
        if not labels:
            continue
        out.append(Box(str(region.get("id")), str(labels[0]), rect_xyxy(value, region["original_width"],
                                                                         region["original_height"])))
    return out


def rect_xyxy(value: dict[str, Any], width: float, height: float) -> tuple[float, float, float, float]:
    """A rectangle value (percent, rotated clockwise about its top-left corner) as a pixel xyxy box."""
    x, y = value["x"] * width / 100.0, value["y"] * height / 100.0
    w, h = value["width"] * width / 100.0, value["height"] * height / 100.0
    angle = np.deg2rad(float(value.get("rotation") or 0.0))
    if angle == 0.0:
        return (x, y, x + w, y + h)
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float64)
    c, s = np.cos(angle), np.sin(angle)
    turned = corners @ np.array([[c, s], [-s, c]]) + (x, y)
    (x1, y1), (x2, y2) = turned.min(axis=0), turned.max(axis=0)
    return (float(x1), float(y1), float(x2), float(y2))


def compare(
    predicted: list[Box], annotated: list[Box], iou_threshold: float = IOU_THRESHOLD,
    tolerance: float = TOLERANCE_PX,
) -> list[tuple[str, str, str | None, str | None]]:
    """Each box's fate: (outcome, class it counts under, predicted region id, annotated region id)."""
    import supervision as sv

    out: list[tuple[str, str, str | None, str | None]] = []
    by_id = {b.id: j for j, b in enumerate(annotated)}
    pairs: list[tuple[int, int]] = []
    free_p, free_a = [], set(range(len(annotated)))
    for i, p in enumerate(predicted):
        j = by_id.get(p.id)
        if j is not None and j in free_a:
            pairs.append((i, j))
            free_a.discard(j)
        else:
            free_p.append(i)
    if free_p and free_a:
        left_a = sorted(free_a)
        iou = sv.box_iou_batch(np.array([predicted[i].xyxy for i in free_p], dtype=np.float64),
                               np.array([annotated[j].xyxy for j in left_a], dtype=np.float64))
        taken: set[int] = set()
        for flat in np.argsort(-iou, axis=None, kind="stable"):
            r, c = divmod(int(flat), len(left_a))
            if iou[r, c] < iou_threshold:
                break
            if r not in taken and left_a[c] in free_a:
                pairs.append((free_p[r], left_a[c]))
                free_a.discard(left_a[c])
                taken.add(r)
        free_p = [i for r, i in enumerate(free_p) if r not in taken]
    for i, j in sorted(pairs):
        p, a = predicted[i], annotated[j]
        if p.label != a.label:
            outcome = "relabeled"
        elif max(abs(u - v) for u, v in zip(p.xyxy, a.xyxy)) > tolerance:
            outcome = "moved"
        else:
            outcome = "accepted"
        out.append((outcome, p.label, p.id, a.id))
    out.extend(("deleted", predicted[i].label, predicted[i].id, None) for i in free_p)
    out.extend(("added", annotated[j].label, None, annotated[j].id) for j in sorted(free_a))
    return out


class ReviewTally:
    """Counts of outcomes per class over many tasks, and the relabelings (from → to)."""

    def __init__(self, classes: Iterable[str] = ()):
        self.classes = list(classes)
        self.counts: dict[str, Counter[str]] = {c: Counter() for c in self.classes}
        self.relabeled_to: dict[str, Counter[str]] = {c: Counter() for c in self.classes}
        self.tasks = 0

    def add(
        self, predicted: list[Box], annotated: list[Box], **kwargs: Any
    ) -> list[tuple[str, str, str | None, str | None]]:
        fates = compare(predicted, annotated, **kwargs)
        labels = {b.id: b.label for b in annotated}
        self.tasks += 1
        for outcome, cls, _, ann_id in fates:
            if cls not in self.counts:
                self.classes.append(cls)
                self.counts[cls], self.relabeled_to[cls] = Counter(), Counter()
            self.counts[cls][outcome] += 1
            if outcome == "relabeled":
                self.relabeled_to[cls][labels[ann_id]] += 1  # type: ignore[index]
        return fates

    def summary(self) -> dict[str, Any]:
        """``{"tasks_reviewed", "classes": {name: counts + acceptance_rate + relabeled_to}, "overall": ...}``."""
        total: Counter[str] = Counter()
        classes = {}
        for cls in self.classes:
            counts = self.counts[cls]
            total.update(counts)
            classes[cls] = _entry(counts) | {"relabeled_to": dict(sorted(self.relabeled_to[cls].items()))}
        return {"tasks_reviewed": self.tasks, "iou_threshold": IOU_THRESHOLD, "classes": classes,
                "overall": _entry(total)}


def _entry(counts: Counter[str]) -> dict[str, Any]:
    predicted = sum(counts[o] for o in OUTCOMES if o != "added")
    return ({"predicted": predicted} | {o: counts[o] for o in OUTCOMES}
            | {"acceptance_rate": round(counts["accepted"] / predicted, 4) if predicted else None})


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as a small table for the terminal."""
    head = f"{'class':<20} {'predicted':>9} " + " ".join(f"{o:>9}" for o in OUTCOMES) + f" {'accept %':>9}"
    lines = [f"review of {summary['tasks_reviewed']} tasks (auto-labels vs. the reviewers' annotations)", head]
    rows = list(summary["classes"].items()) + [("overall", summary["overall"])]
    for name, e in rows:
        rate = "-" if e["acceptance_rate"] is None else f"{100 * e['acceptance_rate']:.1f}"
        lines.append(f"{name[:20]:<20} {e['predicted']:>9} " + " ".join(f"{e[o]:>9}" for o in OUTCOMES) + f" {rate:>9}")
    return "\n".join(lines)
