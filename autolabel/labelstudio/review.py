"""What reviewers did with the auto-labels: per object, accepted unchanged, moved, relabeled, deleted or added.

A reviewed task's annotation is compared with the prediction the reviewer started from, object by object: each
labeled region (``rectanglelabels``, ``polygonlabels`` or ``brushlabels``; texts follow their region; a mask or
polygon an older push attached to its box, id ``<box id>_mask``/``_mask<k>``/``_poly``, belongs to that box).
Objects are paired by region id first — Label Studio keeps a prediction's region ids when a reviewer accepts or
edits it — then, among those left, greedily by the IoU of their bounding boxes (highest first, at least
``iou_threshold``). A pair is *relabeled* when its class changed, else *moved* when its shape changed (a box edge
or a polygon vertex moved more than ``tolerance`` pixels, a brush's pixels differ, or the kind of region
changed), else *accepted*; a predicted object left unpaired was *deleted*, an annotated one *added*. Relabeled
and deleted objects count under the predicted class, added ones under the annotated class. The acceptance rate
is accepted / predicted — the share of auto-labels a person kept as they were.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

OUTCOMES = ("accepted", "moved", "relabeled", "deleted", "added")
IOU_THRESHOLD = 0.5
TOLERANCE_PX = 0.5


#: the labeled region types, by kind
KINDS = {"rectanglelabels": "rectangle", "polygonlabels": "polygon", "brushlabels": "brush"}
_ATTACHED = re.compile(r"^(?P<box>.+)_(?:mask\d*|poly)$")


@dataclass(frozen=True)
class Box:
    """One labeled region in pixels of the image: its bounding box, and what else says its shape (a polygon's
    vertices, a brush's pixels: a reviewer may reshape either without moving its bounding box)."""

    id: str
    label: str
    xyxy: tuple[float, float, float, float]
    kind: str = "rectangle"
    points: tuple[tuple[float, float], ...] = ()  # polygon: its vertices
    mask: Any = field(default=None, compare=False, repr=False)  # brush: (H, W) bool


def attached_to(region: dict[str, Any], box_ids: set[Any]) -> str | None:
    """The box an older push attached this brush or polygon region to (its id ``<box id>_mask``, ``_mask<k>`` or
    ``_poly``, that box present), else None: since one region per object, a shape is an object of its own."""
    if region.get("type") not in ("brushlabels", "polygonlabels"):
        return None
    match = _ATTACHED.match(str(region.get("id")))
    return match.group("box") if match and match.group("box") in box_ids else None


def box_ids(result: list[dict[str, Any]]) -> set[Any]:
    """The ids of the labeled rectangles of a result (what an older push's shapes attach to)."""
    return {r.get("id") for r in result if r.get("type") == "rectanglelabels"
            and (r.get("value") or {}).get("rectanglelabels")}


def boxes(result: Iterable[dict[str, Any]]) -> list[Box]:
    """The objects of a Label Studio result list, one per labeled region, in pixels (rotated rectangles by their
    bounding box); shapes attached to a box by an older push are part of that box, regions without a label or
    without pixels are left out."""
    result = list(result)
    rects = box_ids(result)
    out = []
    for region in result:
        tag = region.get("type")
        kind, value = KINDS.get(tag), region.get("value") or {}
        labels = value.get(tag) or []
        if kind is None or not labels or attached_to(region, rects) is not None:
            continue
        box = _box(str(region.get("id")), str(labels[0]), kind, value, region["original_width"],
                   region["original_height"])
        if box is not None:
            out.append(box)
    return out


def _box(rid: str, label: str, kind: str, value: dict[str, Any], width: int, height: int) -> Box | None:
    if kind == "rectangle":
        return Box(rid, label, rect_xyxy(value, width, height))
    if kind == "polygon":
        points = np.asarray(value.get("points") or []).reshape(-1, 2) * (width / 100, height / 100)  # float64
        if not len(points):
            return None
        (x1, y1), (x2, y2) = points.min(axis=0), points.max(axis=0)
        return Box(rid, label, (float(x1), float(y1), float(x2), float(y2)), kind,
                   tuple((float(x), float(y)) for x, y in points.tolist()))
    if not value.get("rle"):
        return None
    from label_studio_sdk.converter.brush import decode_rle

    mask = np.asarray(decode_rle(value["rle"])).reshape(height, width, 4)[:, :, 3] > 0
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return None
    xyxy = (float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1))
    return Box(rid, label, xyxy, kind, mask=mask)


def reshaped(p: Box, a: Box, tolerance: float = 0.5) -> bool:
    """Whether ``a`` is ``p`` moved or reshaped: another kind, a box edge or polygon vertex more than ``tolerance``
    pixels away, another number of vertices, other brush pixels."""
    if p.kind != a.kind or max(abs(u - v) for u, v in zip(p.xyxy, a.xyxy)) > tolerance:
        return True
    if p.kind == "polygon":
        return len(p.points) != len(a.points) or bool(
            np.abs(np.subtract(p.points, a.points)).max(initial=0.0) > tolerance)
    if p.kind == "brush":
        return p.mask.shape != a.mask.shape or not np.array_equal(p.mask, a.mask)
    return False


def rect_xyxy(value: dict[str, Any], width: float, height: float) -> tuple[float, float, float, float]:
    """A rectangle value (percent, rotated clockwise about its top-left corner) as a pixel xyxy box."""
    x, y = value["x"] * width / 100.0, value["y"] * height / 100.0
    w, h = value["width"] * width / 100.0, value["height"] * height / 100.0
    angle = np.deg2rad(float(value.get("rotation") or 0.0))
    if angle == 0.0:
        return (x, y, x + w, y + h)
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]])  # w, h floats: float64
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
        iou = sv.box_iou_batch(np.array([predicted[i].xyxy for i in free_p]),  # float xyxy: float64 arrays
                               np.array([annotated[j].xyxy for j in left_a]))
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
        elif reshaped(p, a, tolerance):
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
