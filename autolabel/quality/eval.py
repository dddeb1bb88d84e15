"""``autolabel eval``: a run's labels against human labels, from the store alone (no model).

COCO AP / AP50 / AP75 (and mask AP where both sides have masks) come from pycocotools' ``COCOeval`` — nothing
home-made. Precision, recall and F1 at the operating point (the boxes the pipeline kept), along the score, the
confusion table, what each filter's drops cost, and reliability use the same greedy matching as COCOeval at one IoU
threshold (:mod:`.assign`). The result is the ``eval.json`` contract (see the README), ``version: 1``.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from ..labels import DROPPED, FLAGGED
from .assign import greedy, xywh
from .data import Paired, Side, operating_point

VERSION = 1
MAX_CURVE_POINTS = 200
NO_CLASS = "(no class)"  # the confusion label of kept boxes whose phrase named no class
BINS = 10

@cache
def reason_types() -> dict[str, tuple[str, ...]]:
    """Reason code → the built-in filter types that give it, in the registry's order: read from each filter's
    ``reasons`` (to name the stage behind a drop: the store keeps only the reason).

    >>> reason_types()["low_score"]
    ('score_threshold', 'confident_image', 'soft_nms', 'ocr_quality')
    """
    from ..filters import STAGES
    from ..registry import import_object

    out: dict[str, tuple[str, ...]] = {}
    for kind, path in STAGES.items():
        for code in import_object(path).reasons:
            out[code] = (*out.get(code, ()), kind)
    return out


def evaluate(paired: Paired, *, iou: float = 0.5, flagged: str = "include", output: str = "", gt_path: str = "",
             gt_format: str = "", stages: Sequence[tuple[str, str, str]] = ()) -> dict[str, Any]:
    """Everything in eval.json. ``stages``: :func:`stages_of` the pipeline, to name the stage behind a drop."""
    run, gt = paired.run, paired.gt
    classes = paired.evaluated
    known = np.isin(run.cls, classes)
    op = np.flatnonzero(operating_point(run, flagged) & known)
    gt_rows = np.flatnonzero(np.isin(gt.cls, classes) & (gt.status != "crowd")) if len(gt) else np.zeros(0, int)
    match = greedy(run, op, gt, gt_rows, iou)
    tp = match >= 0

    ap = coco_ap(paired, op, gt_rows, "bbox")
    mask_ap = coco_ap(paired, op, gt_rows, "segm")  # AP None where no class has masks on both sides
    per_class = {}
    for c in classes:
        mine = run.cls[op] == c
        n_gt = int((gt.cls[gt_rows] == c).sum())
        per_class[c] = _scores(ap["per_class"][c], mask_ap["per_class"][c], int(tp[mine].sum()), int(mine.sum()), n_gt)
    overall = _scores(ap["overall"], mask_ap["overall"], int(tp.sum()), len(op), len(gt_rows))

    curves = {c: curve(run.score[op][run.cls[op] == c], tp[run.cls[op] == c], int((gt.cls[gt_rows] == c).sum()))
              for c in classes}
    curves["__all__"] = curve(run.score[op], tp, len(gt_rows))
    return {
        "version": VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "output": output, "gt": gt_path, "gt_format": gt_format, "flagged": flagged, "iou_threshold": iou,
        "images": {"run": paired.run_images, "gt": paired.gt_images, "matched": len(paired.names),
                   "matched_by": paired.images.matched_by, "unmatched_run": paired.images.unmatched_run,
                   "unmatched_gt": paired.images.unmatched_gt},
        "classes": {"matched": paired.classes.matched, "unmatched_run": paired.classes.unmatched_run,
                    "unmatched_gt": paired.classes.unmatched_gt},
        "overall": overall,
        "per_class": per_class,
        "curves": curves,
        "confusion": confusion(paired, flagged, iou),
        "filters": filters(paired, op, match, gt_rows, iou, stages),
        "reliability": reliability(run.score[op], tp),
    }


def _scores(ap: dict[str, float | None], mask: dict[str, float | None], tp: int, predictions: int,
            n_gt: int) -> dict[str, Any]:
    fp, fn = predictions - tp, n_gt - tp
    precision = tp / predictions if predictions else None
    recall = tp / n_gt if n_gt else None
    f1 = 2 * tp / (predictions + n_gt) if predictions + n_gt else None
    return {"ap": ap["ap"], "ap50": ap["ap50"], "ap75": ap["ap75"], "mask_ap": mask["ap"],
            "precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp, "fn": fn,
            "gt": n_gt, "predictions": predictions}


# -- AP: pycocotools ---------------------------------------------------------------------------------------------
#: images per COCOeval block: COCO objects and IoUs exist for one block at a time, so memory does not grow with them
BLOCK_IMAGES = 5000
#: the final ``accumulate``'s per-entry cap: each merged entry holds a whole block, already capped per image
_NO_CAP = 2**62


def coco_ap(paired: Paired, op: np.ndarray, gt_rows: np.ndarray, iou_type: str,
            block: int = BLOCK_IMAGES) -> dict[str, Any]:
    """COCOeval over the matched images and classes: AP (0.5:0.95), AP50, AP75 per class and overall.

    Read from ``COCOeval.eval["precision"]`` at area "all" and 100 detections per image — what ``summarize``
    prints as AP, AP50 and AP75. Only the "all" area range is evaluated (the others are not reported).

    Bounded memory, same numbers: pycocotools' ``evaluate`` runs per ``block`` of images (its COCO objects, IoUs
    and per-image results freed after each), and only what ``accumulate`` reads is kept (:func:`_merge`); then
    pycocotools' own ``accumulate`` runs once over all blocks.
    """
    from pycocotools.cocoeval import COCOeval, Params

    run, gt = paired.run, paired.gt
    classes = paired.evaluated
    if iou_type == "segm":  # the classes where both sides have masks, and their rows that have one
        op = op[np.array([run.segmentation[i] is not None for i in op], dtype=bool)]
        gt_rows = gt_rows[np.array([gt.segmentation[i] is not None for i in gt_rows], dtype=bool)]
        classes = [c for c in classes if (run.cls[op] == c).any() and (gt.cls[gt_rows] == c).any()]
        op, gt_rows = op[np.isin(run.cls[op], classes)], gt_rows[np.isin(gt.cls[gt_rows], classes)]
    none = {"ap": None, "ap50": None, "ap75": None}
    if not classes:
        return {"overall": none, "per_class": dict.fromkeys(paired.evaluated, none)}
    op = op[np.argsort(run.image[op], kind="stable")]  # by image, each image's rows in their order
    gt_rows = gt_rows[np.argsort(gt.image[gt_rows], kind="stable")]
    edges = np.arange(0, len(paired.sizes) + block, max(1, block))  # block b: images edges[b] .. edges[b+1]-1
    run_at, gt_at = np.searchsorted(run.image[op], edges), np.searchsorted(gt.image[gt_rows], edges)
    per_block = [_evaluate_block(paired, classes, iou_type, int(lo), int(hi), op[run_at[b]:run_at[b + 1]],
                                 gt_rows[gt_at[b]:gt_at[b + 1]])
                 for b, (lo, hi) in enumerate(zip(edges[:-1], edges[1:]))]
    ev = COCOeval(iouType=iou_type)
    params = Params(iouType=iou_type)
    params.imgIds, params.catIds = list(range(len(per_block))), list(range(len(classes)))
    params.areaRng, params.areaRngLbl, params.maxDets = [[0.0, 1e10]], ["all"], [_NO_CAP]
    ev.params = ev._paramsEval = params
    ev.evalImgs = [entries[k] for k in range(len(classes)) for entries in per_block]  # [category][block]
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        ev.accumulate()
    precision = ev.eval["precision"]  # [T, R, K, A, M]; -1 where undefined

    def mean(p: np.ndarray) -> float | None:
        p = p[p > -1]
        return float(p.mean()) if p.size else None

    def three(k: Any) -> dict[str, float | None]:
        return {"ap": mean(precision[:, :, k, 0, -1]), "ap50": mean(precision[0, :, k, 0, -1]),
                "ap75": mean(precision[5, :, k, 0, -1])}

    per_class = {c: three(k) for k, c in enumerate(classes)}
    return {"overall": three(slice(None)), "per_class": {c: per_class.get(c, none) for c in paired.evaluated}}


def _evaluate_block(paired: Paired, classes: list[str], iou_type: str, lo: int, hi: int, op: np.ndarray,
                    gt_rows: np.ndarray) -> list[dict[str, np.ndarray] | None]:
    """pycocotools' ``evaluate`` over images ``lo..hi-1``: per class, the block's per-image results merged."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    run, gt = paired.run, paired.gt
    cat_id = {c: k for k, c in enumerate(classes)}  # evaluate sorts by these ids, accumulate reads by position
    images = [{"id": lo + k + 1, "width": int(w), "height": int(h)} for k, (w, h) in enumerate(paired.sizes[lo:hi])]
    categories = [{"id": i, "name": c} for c, i in cat_id.items()]

    def anns(side: Side, rows: np.ndarray, with_score: bool) -> list[dict[str, Any]]:
        boxes = xywh(side.xyxy[rows])
        area = boxes[:, 2] * boxes[:, 3]
        out = []
        for n, (i, box, a) in enumerate(zip(rows.tolist(), boxes.tolist(), area.tolist())):
            ann = {"id": n + 1, "image_id": int(side.image[i]) + 1, "category_id": cat_id[side.cls[i]], "bbox": box,
                   "area": a, "iscrowd": 0}
            if with_score:
                s = side.score[i]
                ann["score"] = 0.0 if np.isnan(s) else float(s)
            if iou_type == "segm":
                ann["segmentation"] = side.segmentation[i]
            out.append(ann)
        return out

    truth, dets = COCO(), COCO()
    truth.dataset = {"images": images, "categories": categories, "annotations": anns(gt, gt_rows, False)}
    dets.dataset = {"images": images, "categories": categories, "annotations": anns(run, op, True)}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        truth.createIndex()
        dets.createIndex()
        ev = COCOeval(truth, dets, iou_type)
        ev.params.areaRng, ev.params.areaRngLbl = [[0.0, 1e10]], ["all"]
        ev.params.maxDets = [100]
        ev.evaluate()
    n = len(ev.params.imgIds)
    return [_merge(ev.evalImgs[k * n:(k + 1) * n]) for k in range(len(classes))]  # evalImgs: [category][image]


def _merge(entries: Sequence[dict[str, Any] | None]) -> dict[str, np.ndarray] | None:
    """One class's per-image COCOeval results of a block as one entry, holding only what ``accumulate`` reads.

    ``accumulate`` concatenates the entries of a class image by image before its stable sort by score, so the
    block's images concatenated in the same order give the same arrays; each image is already capped at
    ``maxDets`` by ``evaluate``. Matches are kept as booleans (``accumulate`` only tests them for non-zero).
    """
    entries = [e for e in entries if e is not None]
    if not entries:
        return None
    return {"dtScores": np.concatenate([np.asarray(e["dtScores"], dtype=np.float64) for e in entries]),
            "dtMatches": np.concatenate([e["dtMatches"] != 0 for e in entries], axis=1),
            "dtIgnore": np.concatenate([np.asarray(e["dtIgnore"], dtype=bool) for e in entries], axis=1),
            "gtIgnore": np.concatenate([np.asarray(e["gtIgnore"], dtype=bool) for e in entries])}


# -- along the score -------------------------------------------------------------------------------------------
def curve(score: np.ndarray, tp: np.ndarray, n_gt: int, points: int = MAX_CURVE_POINTS) -> dict[str, list[float]]:
    """Precision and recall when keeping the boxes scored ≥ ``score[k]``, at ≤ ``points`` descending scores."""
    score = np.where(np.isnan(score), 0.0, score)
    order = np.argsort(-score, kind="stable")
    s, hits = score[order], np.cumsum(tp[order])
    if not len(s):
        return {"score": [], "precision": [], "recall": []}
    last = np.flatnonzero(np.r_[s[1:] != s[:-1], True])  # the last box of each distinct score
    if len(last) > points:
        last = last[np.unique(np.linspace(0, len(last) - 1, points).round().astype(int))]
    kept = last + 1
    return {"score": [float(v) for v in s[last]], "precision": (hits[last] / kept).tolist(),
            "recall": (hits[last] / n_gt).tolist() if n_gt else [None] * len(last)}


def reliability(score: np.ndarray, tp: np.ndarray, bins: int = BINS) -> dict[str, Any]:
    """Of the kept boxes with a score, binned by score: mean score, fraction true, count; and the ECE."""
    known = ~np.isnan(score)
    s, hit = score[known], tp[known].astype(np.float64)
    which = np.clip((s * bins).astype(np.int64), 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    conf_sum = np.bincount(which, weights=s, minlength=bins)
    acc_sum = np.bincount(which, weights=hit, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf, acc = conf_sum / count, acc_sum / count
    ece = float(np.sum(count * np.abs(np.nan_to_num(acc - conf))) / count.sum()) if count.sum() else None
    return {"bins": np.linspace(0.0, 1.0, bins + 1).round(6).tolist(),
            "confidence": [None if c == 0 else float(v) for c, v in zip(count, conf)],
            "accuracy": [None if c == 0 else float(v) for c, v in zip(count, acc)],
            "count": count.tolist(), "ece": ece}


def ece(score: np.ndarray, tp: np.ndarray) -> float | None:
    """Expected calibration error: the count-weighted mean |fraction true − mean score| over score bins."""
    return reliability(score, tp)["ece"]


# -- confusion and filters ---------------------------------------------------------------------------------------
def confusion(paired: Paired, flagged: str, iou: float) -> dict[str, Any]:
    """Class-agnostic matching of every kept box to every ground-truth box: which class was predicted for which."""
    run, gt = paired.run, paired.gt
    op = np.flatnonzero(operating_point(run, flagged))
    gt_rows = np.flatnonzero(gt.status != "crowd")
    name = np.vectorize(lambda c: str(c) or NO_CLASS, otypes=[object])
    run_cls = name(run.cls[op]) if len(op) else np.zeros(0, dtype=object)
    gt_cls = name(gt.cls) if len(gt) else np.zeros(0, dtype=object)
    labels = list(dict.fromkeys([*paired.evaluated, *run_cls.tolist(), *gt_cls[gt_rows].tolist()]))
    index = {c: k for k, c in enumerate(labels)}
    bg = len(labels)
    matrix = np.zeros((bg + 1, bg + 1), dtype=np.int64)
    match = greedy(run, op, gt, gt_rows, iou, class_aware=False)
    pred = np.array([index[c] for c in run_cls], dtype=np.int64)
    truth = np.full(len(op), bg)
    hit = match >= 0
    truth[hit] = [index[c] for c in gt_cls[match[hit]]]
    np.add.at(matrix, (truth, pred), 1)
    missed = np.setdiff1d(gt_rows, match[hit])
    np.add.at(matrix, (np.array([index[c] for c in gt_cls[missed]], dtype=np.int64), bg), 1)
    return {"labels": [*labels, "background"], "matrix": matrix.tolist()}


def filters(paired: Paired, op: np.ndarray, match: np.ndarray, gt_rows: np.ndarray, iou: float,
            stages: Sequence[tuple[str, str, str]]) -> dict[str, Any]:
    """Per (stage, reason): boxes dropped, and how many of them would have been true positives — matched (same
    class, greedy) a ground-truth box that no kept box found; flagged boxes likewise (a match if they are kept)."""
    run, gt = paired.run, paired.gt
    known = np.isin(run.cls, paired.evaluated)
    out_rows = np.setdiff1d(np.flatnonzero(known & (run.status != "kept")), op)  # dropped (and excluded flags)
    missed = np.setdiff1d(gt_rows, match[match >= 0])
    hits = np.zeros(len(run), dtype=bool)  # per run row: would it be a true positive (an array: 1 byte a box)
    hits[out_rows] = greedy(run, out_rows, gt, missed, iou) >= 0
    hits[op] = match >= 0
    out: dict[str, dict[str, Any]] = {}
    names: dict[tuple[str, str, str], str] = {}
    for i in np.flatnonzero(known & (run.status != "kept")).tolist():
        status, reason, producer = str(run.status[i]), str(run.reason[i]), str(run.stage[i])
        stage = names.get((status, reason, producer))
        if stage is None:
            stage = names[status, reason, producer] = stage_of(reason, producer, stages,
                                                               "flag" if status == FLAGGED else "drop")
        e = out.setdefault(f"{stage}/{reason}", {"stage": stage, "reason": reason, "dropped": 0, "true_positives": 0,
                                                  "false_positives": 0, "flagged": 0, "flagged_true_positives": 0})
        if status == DROPPED:
            e["dropped"] += 1
            e["true_positives" if hits[i] else "false_positives"] += 1
        else:
            e["flagged"] += 1
            e["flagged_true_positives"] += int(hits[i])
    return dict(sorted(out.items()))


def stage_of(reason: str, producer: str, stages: Sequence[tuple[str, str, str]], action: str = "drop") -> str:
    """The pipeline stage that gives ``reason`` (by ``action``): the one filter of a type that gives it, else the
    candidates joined with ``|``; ``unmapped_phrase`` comes from the model stage that produced the box."""
    if reason == "unmapped_phrase":
        return producer or "unknown"
    candidates = [name for name, kind, act in stages if kind in reason_types().get(reason, ()) and act == action]
    if not candidates:  # a user's own filter (type module:Class), or an action we could not tell
        candidates = [name for name, kind, _ in stages if kind in reason_types().get(reason, ())] or [
            name for name, kind, _ in stages if ":" in kind]
    return "|".join(candidates) or "unknown"


# -- the readable table ----------------------------------------------------------------------------------------
def format_table(result: dict[str, Any]) -> str:
    """eval.json as a few lines a person reads."""
    im, cl = result["images"], result["classes"]
    lines = [(f"images: {im['matched']} matched of {im['run']} run / {im['gt']} ground truth "
             f"(by path {im['matched_by']['rel_path']}, name {im['matched_by']['name']}, "
             f"hash {im['matched_by']['sha256']}); unmatched: {len(im['unmatched_run'])} run, "
             f"{len(im['unmatched_gt'])} ground truth")]
    if cl["unmatched_run"] or cl["unmatched_gt"]:
        lines.append(f"classes not in both: run {', '.join(cl['unmatched_run']) or '-'}; "
                     f"ground truth {', '.join(cl['unmatched_gt']) or '-'}")
    head = f"{'class':<20} {'AP':>6} {'AP50':>6} {'AP75':>6} {'mAP':>6} {'P':>6} {'R':>6} {'F1':>6} " \
           f"{'TP':>7} {'FP':>7} {'FN':>7}"
    lines += [head, "-" * len(head)]
    rows = [*result["per_class"].items(), ("all", result["overall"])]
    for name, s in rows:
        lines.append(f"{name[:20]:<20} {_f(s['ap'])} {_f(s['ap50'])} {_f(s['ap75'])} {_f(s['mask_ap'])} "
                     f"{_f(s['precision'])} {_f(s['recall'])} {_f(s['f1'])} {s['tp']:>7} {s['fp']:>7} {s['fn']:>7}")
    if result["filters"]:
        lines.append("filters (dropped: true positives lost / false positives removed):")
        for key, f in result["filters"].items():
            flag = f", flagged {f['flagged']} ({f['flagged_true_positives']} TP)" if f["flagged"] else ""
            lines.append(f"  {key}: dropped {f['dropped']} ({f['true_positives']} TP / {f['false_positives']} FP)"
                         f"{flag}")
    ece_value = result["reliability"]["ece"]
    lines.append(f"calibration error (ECE, {BINS} bins): {_f(ece_value).strip()}")
    return "\n".join(lines)


def _f(value: float | None) -> str:
    return f"{'-':>6}" if value is None else f"{value:6.3f}"


#: filters whose ``action`` defaults to flag (every other filter drops by default)
FLAG_BY_DEFAULT = ("border", "wbf")


def stages_of(pipeline: dict[str, Any] | None) -> list[tuple[str, str, str]]:
    """(name, type, action) of a stored pipeline's stages (a stage's name defaults to its type)."""
    out = []
    for raw in (pipeline or {}).get("stages", []) or []:
        if isinstance(raw, dict) and "type" in raw:
            kind = str(raw["type"])
            action = raw.get("action") or ("flag" if kind in FLAG_BY_DEFAULT else "drop")
            out.append((str(raw.get("name") or kind), kind, str(action)))
    return out


def write_json(path: Path, data: dict[str, Any]) -> None:
    import json

    from ..util import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=1) + "\n")
