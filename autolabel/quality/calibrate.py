"""``autolabel calibrate``: per class, the lowest score threshold whose precision reaches a target *with a stated
confidence*, written as ``--set`` overrides (``thresholds.yaml``) that the next ``autolabel run`` applies.

The precision of the boxes kept at a threshold is a binomial proportion (true positives of the boxes kept); the
threshold is accepted when its one-sided lower confidence bound (Clopper–Pearson, exact, by default; or Wilson)
reaches the target. A class none of whose thresholds does has *thin evidence* when it has fewer candidates than
the target needs even if all were right (:func:`min_boxes`: 29 for 0.9 at 95 %), else it is *unreachable*. The
candidates are the boxes the pipeline kept plus those the threshold stage itself dropped
(``low_score``), so a threshold may go down as well as up. Boxes without a score always pass a score threshold and
are left out.
"""

from __future__ import annotations

import warnings
from datetime import datetime, timezone
from typing import Any

import numpy as np
from scipy import stats

from ..errors import AutolabelError, ExitCode
from .assign import greedy
from .data import Paired, operating_point
from .eval import ece, stage_of, stages_of

BOUNDS = ("clopper-pearson", "wilson")
#: sklearn's user guide: isotonic calibration overfits below about a thousand samples; Platt copes with fewer
ISOTONIC_MIN = 1000


class CalibrateError(AutolabelError):
    exit_code = ExitCode.CONFIG


def lower_bound(tp: np.ndarray, n: np.ndarray, confidence: float = 0.95, method: str = "clopper-pearson") -> np.ndarray:
    """One-sided lower confidence bound of the proportion ``tp / n`` (vectorized)."""
    tp, n = np.asarray(tp, dtype=np.float64), np.asarray(n, dtype=np.float64)
    alpha = 1.0 - confidence
    if method == "clopper-pearson":
        with np.errstate(invalid="ignore"):
            out = stats.beta.ppf(alpha, tp, n - tp + 1)
        return np.where(tp > 0, out, 0.0)
    if method == "wilson":
        z = stats.norm.ppf(confidence)
        p = np.divide(tp, n, out=np.zeros_like(tp), where=n > 0)
        centre = p + z * z / (2 * n)
        spread = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        return np.where(n > 0, (centre - spread) / (1 + z * z / n), 0.0)
    raise ValueError(f"unknown bound {method!r} (known: {', '.join(BOUNDS)})")


def min_boxes(target: float, confidence: float = 0.95, method: str = "clopper-pearson") -> int:
    """The fewest boxes, all of them right, whose precision's lower bound reaches ``target`` (29 for 0.9 at 95 %
    Clopper–Pearson): a class with fewer candidates cannot be calibrated, whatever its boxes are."""
    n = 1
    while lower_bound(np.array([n]), np.array([n]), confidence, method)[0] < target and n < 10**7:
        n = n * 2 if n < 64 else int(n * 1.25)
    lo = max(1, n // 2)
    while lo < n:  # the smallest passing n in (lo, n]
        mid = (lo + n) // 2
        if lower_bound(np.array([mid]), np.array([mid]), confidence, method)[0] >= target:
            n = mid
        else:
            lo = mid + 1
    return n


def pick_threshold(score: np.ndarray, tp: np.ndarray, n_gt: int, target: float, confidence: float,
                   method: str) -> dict[str, Any]:
    """The lowest score threshold (keep ``score >= threshold``) whose precision's lower bound reaches ``target``."""
    order = np.argsort(-score)  # any order within a tie: only each tie's last row is read, with every hit before it
    s, hits = score[order], np.cumsum(tp[order])
    out: dict[str, Any] = {"candidates": len(s), "gt": n_gt, "threshold": None, "precision": None,
                           "precision_lower_bound": None, "recall": None, "kept": 0}
    if not len(s) or not n_gt:
        out["status"] = "no_predictions" if not len(s) else "no_ground_truth"
        return out
    last = np.flatnonzero(np.r_[s[1:] != s[:-1], True])  # keeping score >= s[k] keeps rows 0..k
    kept = last + 1
    lb = lower_bound(hits[last], kept, confidence, method)
    ok = np.flatnonzero(lb >= target)
    if not len(ok):
        need = min_boxes(target, confidence, method)
        out["status"] = "thin_evidence" if len(s) < need else "unreachable"
        out.update(best_precision=float((hits[last] / kept).max()), best_lower_bound=float(lb.max()),
                   boxes_needed=need)
        return out
    k = ok[-1]
    out.update(status="ok", threshold=float(s[last[k]]), precision=float(hits[last[k]] / kept[k]),
               precision_lower_bound=float(lb[k]), recall=float(hits[last[k]] / n_gt), kept=int(kept[k]))
    return out


def calibrate(paired: Paired, *, target: float, pipeline: dict[str, Any] | None, stage: str | None = None,
              confidence: float = 0.95, bound: str = "clopper-pearson", iou: float = 0.5, flagged: str = "include",
              unreached: str = "flag", review_stage: str | None = None, fit: str | None = None,
              fit_scope: str = "class") -> tuple[dict[str, Any], dict[str, Any]]:
    """Return (the report, the overrides for thresholds.yaml). ``pipeline``: the run's, as the store keeps it."""
    stages = stages_of(pipeline)
    stage = stage or _threshold_stage(pipeline, "drop", "--stage")
    run, gt = paired.run, paired.gt
    classes = paired.evaluated
    known = np.isin(run.cls, classes)
    own_drop = (run.reason == "low_score") & (stage in stage_of("low_score", "", stages, "drop").split("|"))
    candidates = np.flatnonzero((operating_point(run, flagged) | ((run.status == "dropped") & own_drop))
                                & known & ~np.isnan(run.score))
    gt_rows = np.flatnonzero(np.isin(gt.cls, classes) & (gt.status != "crowd"))
    tp = greedy(run, candidates, gt, gt_rows, iou) >= 0
    score, cls = run.score[candidates], run.cls[candidates]

    per_class: dict[str, Any] = {}
    overrides: dict[str, Any] = {}
    review = None
    for c in classes:
        mine = cls == c
        result = pick_threshold(score[mine], tp[mine], int((gt.cls[gt_rows] == c).sum()), target, confidence, bound)
        if result["status"] == "ok":
            overrides[f"stages.{stage}.per_class.{c}"] = result["threshold"]
        else:
            result["action"] = unreached
            if unreached == "drop":
                overrides[f"stages.{stage}.per_class.{c}"] = 1.0
            else:
                review = review or review_stage or _threshold_stage(pipeline, "flag", "--review-stage")
                overrides[f"stages.{review}.per_class.{c}"] = 1.0
        per_class[c] = result
    report: dict[str, Any] = {
        "version": 1, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "target_precision": target, "confidence": confidence, "bound": bound, "iou_threshold": iou,
        "flagged": flagged, "stage": stage, "review_stage": review, "unreached": unreached,
        "per_class": per_class,
    }
    if fit:
        report["fit"] = fit_calibration(score, tp, cls, fit, fit_scope)
    return report, overrides


def _threshold_stage(pipeline: dict[str, Any] | None, action: str, flag: str) -> str:
    """The pipeline's first score_threshold stage that drops (or flags); a clear error when there is none."""
    found = [str(raw.get("name") or raw["type"]) for raw in (pipeline or {}).get("stages") or []
             if isinstance(raw, dict) and raw.get("type") == "score_threshold" and raw.get("action", "drop") == action]
    if found:
        return found[0]
    if action == "flag":
        raise CalibrateError(
            f"{flag}: name the score_threshold stage that flags for review (one with action: flag), or pass "
            "--unreached drop; add e.g. '- {type: score_threshold, name: review, action: flag, threshold: 0}'"
        )
    raise CalibrateError(
        "the run's pipeline has no score_threshold stage that drops: add one after the model stages, e.g. "
        "'- {type: score_threshold, threshold: 0.3}', run it, then calibrate (or name one with --stage)"
    )


def fit_calibration(score: np.ndarray, tp: np.ndarray, cls: np.ndarray, method: str, scope: str) -> dict[str, Any]:
    """Fit isotonic or Platt (logistic) calibration of the raw scores, per class or pooled (scikit-learn), and
    report the expected calibration error before and after — after from 5-fold cross-validated predictions, so an
    isotonic fit cannot look perfect by memorising its sample."""
    groups = {"__all__": np.ones(len(score), dtype=bool)} if scope == "pooled" else {c: cls == c for c in
                                                                                      dict.fromkeys(cls.tolist())}
    out: dict[str, Any] = {"method": method, "scope": scope, "groups": {}}
    for name, mine in groups.items():
        x, y = score[mine], tp[mine].astype(np.int64)
        entry: dict[str, Any] = {"n": len(x), "ece_before": ece(x, y.astype(bool))}
        if len(x) < 10 or len(set(y.tolist())) < 2:
            entry["skipped"] = "too few samples, or all of one kind (need true and false positives)"
            out["groups"][name] = entry
            continue
        if method == "isotonic" and len(x) < ISOTONIC_MIN:
            entry["warning"] = (f"{len(x)} samples: isotonic calibration tends to overfit below {ISOTONIC_MIN}; "
                                "consider --fit platt")
            warnings.warn(f"calibrate: class {name}: {entry['warning']}", stacklevel=2)
        predicted, model = _fit(x, y, method)
        entry["ece_after"] = ece(predicted, y.astype(bool))
        entry["mapping"] = model
        out["groups"][name] = entry
    return out


def _fit(x: np.ndarray, y: np.ndarray, method: str) -> tuple[np.ndarray, dict[str, Any]]:
    try:
        import sklearn  # noqa: F401
    except ImportError:
        raise CalibrateError("--fit needs scikit-learn: pip install 'autolabel[quality]'") from None
    from sklearn.isotonic import IsotonicRegression
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    folds = StratifiedKFold(n_splits=max(2, min(5, int(np.bincount(y).min()))), shuffle=True, random_state=0)
    if method == "isotonic":
        est = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0)
        predicted = cross_val_predict(est, x, y, cv=folds)
        est.fit(x, y)
        return predicted, {"x": est.X_thresholds_.tolist(), "y": est.y_thresholds_.tolist()}
    est = LogisticRegression()
    predicted = cross_val_predict(est, x[:, None], y, cv=folds, method="predict_proba")[:, 1]
    est.fit(x[:, None], y)
    return predicted, {"coef": float(est.coef_[0, 0]), "intercept": float(est.intercept_[0])}


def thresholds_yaml(overrides: dict[str, Any], report: dict[str, Any], pipeline_hint: str = "PIPELINE") -> str:
    """The ``--set-file`` text: a comment saying where it came from, then one dotted key per line."""
    import yaml

    head = (f"# written by autolabel calibrate {report['created']}: target precision {report['target_precision']} "
            f"at {report['confidence']:.0%} confidence ({report['bound']} lower bound)\n"
            f"# apply with: autolabel run {pipeline_hint} --set-file thresholds.yaml\n")
    return head + (yaml.safe_dump(overrides, sort_keys=False) if overrides else "{}\n")


def format_report(report: dict[str, Any]) -> str:
    lines = [(f"target precision {report['target_precision']} ({report['bound']}, {report['confidence']:.0%} "
             f"lower bound), stage {report['stage']!r}")]
    head = f"{'class':<20} {'status':<15} {'threshold':>9} {'P':>6} {'P_low':>6} {'R':>6} {'kept':>7} {'of':>7}"
    lines += [head, "-" * len(head)]
    for name, r in report["per_class"].items():
        def f(v: float | None) -> str:
            return f"{'-':>6}" if v is None else f"{v:6.3f}"
        status = r["status"] if r["status"] == "ok" else f"{r['status']}→{r['action']}"
        thr = f"{r['threshold']:9.4f}" if r["threshold"] is not None else f"{'-':>9}"
        lines.append(f"{name[:20]:<20} {status:<15} {thr} {f(r['precision'])} {f(r['precision_lower_bound'])} "
                     f"{f(r['recall'])} {r['kept']:>7} {r['candidates']:>7}")
    for name, g in (report.get("fit") or {}).get("groups", {}).items():
        after = g.get("ece_after")
        before = "-" if g["ece_before"] is None else f"{g['ece_before']:.4f}"
        lines.append(f"calibration fit ({report['fit']['method']}, {name}): ECE {before} → "
                     + (f"{after:.4f}" if after is not None else g["skipped"]))
    return "\n".join(lines)
