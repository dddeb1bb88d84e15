"""The report's calibration section: what ``autolabel calibrate`` decided per class, on which score.

``calibrate`` writes ``OUTPUT_DIR/calibration.json`` beside ``thresholds.yaml``; when it is there the report shows,
per class, the threshold chosen for the target precision (or why none was), its precision and lower bound, recall
and boxes kept, and names the score the thresholds apply to — for a SAM 3 ``concepts`` stage, its score
``query_score × presence_score``, whose presence part says whether the class is in the image at all.
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import Any

from ..errors import AutolabelError

CALIBRATION_NAME = "calibration.json"
COLUMNS = ("status", "threshold", "precision", "precision_lower_bound", "recall", "kept", "candidates")


def load(path: Path) -> dict[str, Any] | None:
    """calibration.json as ``calibrate`` writes it; None when there is none; one line when it is unusable."""
    if not path.is_file():
        return None
    fix = "run `autolabel calibrate` again, or delete it to report without calibration"
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise AutolabelError(f"{path}: not readable JSON ({err}); {fix}") from None
    if not isinstance(report, dict) or not isinstance(report.get("per_class"), dict):
        raise AutolabelError(f"{path}: not a calibration report (no per_class table); {fix}")
    return report


def scores_of(pipeline: dict[str, Any] | None) -> list[str]:
    """What the run's scores are, per model stage that says (``concepts``: SAM 3's product of two scores)."""
    out = []
    for raw in (pipeline or {}).get("stages") or []:
        if isinstance(raw, dict) and raw.get("type") == "concepts":
            out.append(f"stage {raw.get('name') or 'concepts'}: SAM 3 score = query_score × presence_score "
                       "(both kept per box)")
    return out


def section(report: dict[str, Any], pipeline: dict[str, Any] | None, fmt: Any, table: Any) -> str:
    """The section's HTML (``fmt`` / ``table``: the page's number formatter and table builder)."""
    head = (f"<p>Target precision {fmt(report.get('target_precision'), 2)} at {fmt(report.get('confidence'), 2)} "
            f"confidence ({escape(str(report.get('bound')))} lower bound), IoU {fmt(report.get('iou_threshold'), 2)}; "
            f"thresholds for stage <code>{escape(str(report.get('stage')))}</code>, written "
            f"{escape(str(report.get('created')))}.</p>")
    sources = "".join(f"<li>{escape(s)}</li>" for s in scores_of(pipeline))
    rows, attrs = [], []
    for name, r in report["per_class"].items():
        status = r.get("status")
        status = status if status == "ok" else f"{status} → {r.get('action', '?')}"
        rows.append([escape(name), escape(str(status)), *(fmt(r.get(k)) for k in COLUMNS[1:])])
        attrs.append([f'data-class="{escape(name)}"', *(f'data-metric="{k}"' for k in COLUMNS)])
    return (head + (f"<p>Scores:</p><ul>{sources}</ul>" if sources else "")
            + table(["class", *(c.replace("_", " ") for c in COLUMNS)], rows, attrs))
