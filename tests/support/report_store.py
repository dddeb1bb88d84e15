"""A small run store written through autolabel's own API, and an eval.json of the shared contract's exact shape:
the data the report tests (and the report benchmark) draw.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import supervision as sv
from PIL import Image

from autolabel.labels import Labels, Text
from autolabel.records import to_record
from autolabel.store import ImageResult, Store

CLASSES = ["person", "forklift", "pallet"]
#: (status, reason) given to box k of image i: every 3rd box dropped for low_score, every 7th flagged
DECISIONS = {0: ("kept", ""), 1: ("dropped", "low_score"), 2: ("flagged", "edge_box")}


def box_decision(i: int, k: int) -> tuple[str, str]:
    """The decision of box ``k`` of image ``i``, a fixed rule so that tests can count what the report must show."""
    if k % 3 == 2:
        return DECISIONS[1]
    if (i + k) % 7 == 0:
        return DECISIONS[2]
    return DECISIONS[0]


def labels_for(i: int, width: int, height: int, boxes: int, masks: bool = True) -> Labels:
    """Image ``i``'s labels: ``boxes`` boxes of known class, score, decision and (every other one) a mask."""
    rng = np.random.default_rng(i)
    x1 = rng.integers(0, width // 2, boxes)
    y1 = rng.integers(0, height // 2, boxes)
    x2 = x1 + rng.integers(8, width // 2, boxes)
    y2 = y1 + rng.integers(8, height // 2, boxes)
    names = np.array([CLASSES[(i + k) % len(CLASSES)] for k in range(boxes)], dtype=object)
    decided = [box_decision(i, k) for k in range(boxes)]
    scores = np.array([((i * 7 + k * 13) % 100) / 100 for k in range(boxes)], dtype=np.float32)
    data: dict[str, Any] = {
        "class_name": names, "phrase": names.copy(),
        "status": np.array([s for s, _ in decided], dtype=object),
        "reason": np.array([r for _, r in decided], dtype=object),
    }
    mask = None
    if masks:
        mask = np.zeros((boxes, height, width), dtype=bool)
        for k in range(0, boxes, 2):
            mask[k, y1[k]:y2[k], x1[k]:x2[k]] = True
        data["has_mask"] = np.array([k % 2 == 0 for k in range(boxes)], dtype=bool)
    det = sv.Detections(xyxy=np.stack([x1, y1, x2, y2], 1).astype(np.float32), mask=mask, confidence=scores,
                        data=data)
    labels = Labels(width, height)
    labels.add(det, stage="detect", provenance={"model": "test"})
    looped = i % 4 == 0  # every 4th caption dropped, as a repetition filter would
    labels.texts.append(Text("caption", f"caption {i}" + " again" * (8 if looped else 0), 0.5, "caption",
                             status="dropped" if looped else "kept", reason="repetition" if looped else ""))
    return labels


def make_store(root: Path, images: int = 12, boxes: int = 5, failed: int = 2, size: int = 96,
               write_images: bool = True, masks: bool = True, batch: int = 1000) -> Path:
    """An output folder with a store of ``images`` labeled images and ``failed`` failed ones; returns it."""
    out = root / "out"
    palette = [(200, 60, 60), (60, 160, 60), (60, 60, 200), (180, 180, 40)]
    with Store(out) as store:
        pipeline = {"name": "test", "ontology": CLASSES}
        run_id = store.begin_run("hash0123456789", pipeline)
        pending: list[ImageResult] = []
        for i in range(images):
            rel = f"img{i:06d}.png"
            path = root / "in" / rel
            content = f"image {i}".encode()
            if write_images:
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (size, size), palette[i % len(palette)]).save(path)
                content = path.read_bytes()
            record = to_record(labels_for(i, size, size, boxes, masks))
            pending.append(ImageResult(str(path), rel, hashlib.sha256(content).hexdigest(), "done", size, size,
                                       labels=record))
            if len(pending) >= batch:
                store.commit(pending, run_id, "hash0123456789")
                pending.clear()
        for j in range(failed):
            rel = f"broken{j}.jpg"
            pending.append(ImageResult(str(root / "in" / rel), rel, None, "failed",
                                       reason="truncated or corrupt image data (unexpected end of file)"))
        store.commit(pending, run_id, "hash0123456789")
        summary = {"run_id": run_id, "status": "partial" if failed else "ok", "seconds": 12.5,
                   "images_per_second": (images + failed) / 12.5, "started": "2026-12-01T20:00:00+00:00",
                   "counts": {"seen": images + failed, "labeled": images, "skipped": 0, "failed": failed},
                   "stage_seconds": {"detect": 9.25, "masks": 2.5, "score_threshold": 0.05},
                   "stage_images": {"detect": images, "masks": images, "score_threshold": images},
                   "loop_seconds": {"waiting for decode": 0.4, "commit": 0.2},
                   "pipeline": {"name": "test", "file": "test.yaml", "hash": "hash0123456789"}}
        store.end_run(run_id, summary["status"], summary)
    return out


def eval_fixture(output: Path) -> dict[str, Any]:
    """Write an eval.json of the contract's shape (version 1, every key) to ``output``; return it."""
    def metrics(ap: float, tp: int, fp: int, fn: int) -> dict[str, Any]:
        p, r = tp / (tp + fp), tp / (tp + fn)
        return {"ap": ap, "ap50": min(ap + 0.2, 1.0), "ap75": ap - 0.1, "mask_ap": None, "precision": p,
                "recall": r, "f1": 2 * p * r / (p + r), "tp": tp, "fp": fp, "fn": fn, "gt": tp + fn,
                "predictions": tp + fp}

    scores = [round(1 - k / 20, 3) for k in range(20)]
    curves = {name: {"score": scores, "precision": [round(1 - (k * (j + 1)) / 60, 4) for k in range(20)],
                     "recall": [round((k + 1) / 20 * (0.9 - j * 0.2), 4) for k in range(20)]}
              for j, name in enumerate(CLASSES)}
    curves["__all__"] = {"score": scores, "precision": [round(1 - k / 40, 4) for k in range(20)],
                         "recall": [round((k + 1) / 25, 4) for k in range(20)]}
    per_class = {"person": metrics(0.61, 40, 8, 10), "forklift": metrics(0.42, 20, 6, 12),
                 "pallet": metrics(0.25, 10, 9, 15)}
    ev = {
        "version": 1, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "output": str(output),
        "gt": "gt/coco.json",
        "gt_format": "coco", "flagged": "include", "iou_threshold": 0.5,
        "images": {"run": 12, "gt": 11, "matched": 10, "matched_by": {"rel_path": 9, "name": 1, "sha256": 0},
                   "unmatched_run": ["img000010.png", "img000011.png"], "unmatched_gt": ["other.png"]},
        "classes": {"matched": {"person": "Person", "forklift": "forklift", "pallet": "Pallets"},
                    "unmatched_run": [], "unmatched_gt": ["cat"]},
        "overall": metrics(0.43, 70, 23, 37), "per_class": per_class, "curves": curves,
        "confusion": {"labels": [*CLASSES, "background"],
                      "matrix": [[40, 1, 0, 9], [2, 20, 1, 9], [0, 1, 10, 14], [6, 4, 8, 0]]},
        "filters": {"score_threshold/low_score": {"stage": "score_threshold", "reason": "low_score",
                                                  "dropped": 20, "true_positives": 3, "false_positives": 17}},
        "reliability": {"bins": [round(k / 10, 1) for k in range(11)],
                        "confidence": [None, 0.15, 0.25, 0.35, 0.46, 0.55, 0.64, 0.75, 0.86, 0.95],
                        "accuracy": [None, 0.1, 0.2, 0.3, 0.35, 0.6, 0.7, 0.7, 0.9, 1.0],
                        "count": [0, 3, 4, 5, 6, 7, 8, 9, 10, 11], "ece": 0.0512},
    }
    (output / "eval.json").write_text(json.dumps(ev, indent=2))
    return ev
