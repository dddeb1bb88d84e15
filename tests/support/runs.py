"""Small runs for the tests: images, pipeline files made of the test stages (support/plugins.py), and reading back
what a run wrote (its COCO export, its store, the calls its stages counted)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
from PIL import Image


def make_images(folder: Path, n: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        name = f"img{i:03d}.png"
        Image.fromarray(np.full((20 + i % 7, 30 + i % 5, 3), (i * 37) % 256, dtype=np.uint8)).save(folder / name)
        names.append(name)
    return names


def pipeline_dict(**stage: object) -> dict:
    return {
        "ontology": {"thing": "thing"},
        "batch_size": 4,
        "stages": [{"type": "plugins:CenterBox", "name": "box", "label": "thing", **stage}],
        "exports": [{"format": "coco"}],
    }


def coco_by_file(path: Path) -> dict[str, list]:
    coco = json.loads(path.read_text())
    names = {im["id"]: im["file_name"] for im in coco["images"]}
    assert len(names) == len(set(names.values())), "an image appears twice"
    out: dict[str, list] = {name: [] for name in names.values()}
    for a in coco["annotations"]:
        out[names[a["image_id"]]].append((a["category_id"], a["bbox"], a["score"]))
    return out


def two_model_pipeline(calls: Path, threshold: float = 0.0, second_label: str = "other") -> dict:
    """Two model stages (counted in calls.<name>) and a filter after them."""
    return {
        "models": {"m": {"type": "florence2", "id": "unused/because-the-test-stage-needs-no-weights"}},
        "ontology": {"thing": "thing", "other": "other", "third": "third"},
        "batch_size": 3,
        "stages": [
            {"type": "plugins:ModelCenterBox", "name": "first", "model": "m", "label": "thing",
             "calls_file": str(calls) + ".first"},
            {"type": "plugins:ModelCenterBox", "name": "second", "model": "m", "label": second_label,
             "calls_file": str(calls) + ".second"},
            {"type": "score_threshold", "threshold": threshold},
        ],
        "exports": [{"format": "coco"}],
    }


def n_calls(calls: Path, stage: str) -> int:
    path = Path(f"{calls}.{stage}")
    return len(path.read_text().splitlines()) if path.exists() else 0


def done_count(db: Path) -> int:
    """Images labeled so far in the store ``db`` (read-only, while a run may be writing it)."""
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            return conn.execute("SELECT COUNT(*) FROM images WHERE status = 'done'").fetchone()[0]
    except sqlite3.OperationalError:  # tables not created yet
        return 0
