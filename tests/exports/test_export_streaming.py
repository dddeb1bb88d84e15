"""Exports stream: their peak memory does not grow with the number of images in the store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import supervision as sv
from PIL import Image
from plugins import EXPORT_ONTOLOGY, export_pipeline

from autolabel.config import parse
from autolabel.labels import Labels
from autolabel.records import to_record
from autolabel.store import ImageResult, Store


def fill(folder: Path, n: int) -> Path:
    """A store of ``n`` images (hard links to one 64x64 PNG), each with 5 boxes, 2 of them with masks."""
    image = folder / "one.png"
    folder.mkdir(parents=True)
    Image.new("RGB", (64, 64), (90, 90, 90)).save(image)
    masks = np.zeros((5, 64, 64), bool)
    masks[0, 5:20, 5:20] = masks[1, 30:40, 10:50] = True
    det = sv.Detections(xyxy=np.array([[5, 5, 20, 20], [10, 30, 50, 40], [1, 1, 9, 9], [2, 2, 60, 60], [0, 0, 5, 5]],
                                      dtype=np.float32), mask=masks,
                        confidence=np.linspace(0.5, 0.9, 5).astype(np.float32),
                        data={"class_name": np.array(["cat", "dog", "text", "cat", "dog"], dtype=object),
                              "has_mask": np.array([True, True, False, False, False])})
    labels = Labels(64, 64)
    labels.add(det, stage="s", provenance={"model": "m"})
    record = to_record(labels)
    with Store(folder / "out") as store:
        run = store.begin_run("h", {})
        results = []
        for i in range(n):
            path = folder / f"img{i:05d}.png"
            os.link(image, path)
            results.append(ImageResult(str(path), path.name, f"{i:064x}", "done", 64, 64, labels=record))
        store.commit(results, run, "h")
    return folder / "out"


_PEAK = """
import json, sys, tracemalloc
from plugins import export_pipeline
from autolabel.config import ExportSpec, parse
from autolabel.exports import write_export
from autolabel.store import Store
out, options = sys.argv[1], json.loads(sys.argv[2])
spec = parse(export_pipeline())
with Store(out) as store:
    write_export(store, spec, ExportSpec(**options), out)  # warm: first-use imports are not the export's
    tracemalloc.start()
    write_export(store, spec, ExportSpec(**options), out)
    print(tracemalloc.get_traced_memory()[1])
"""


def peak(out: Path, **options: object) -> int:
    """The export's peak traced memory, measured in a fresh process (nothing else allocating beside it)."""
    assert parse(export_pipeline()).ontology.classes == EXPORT_ONTOLOGY
    support = Path(__file__).parents[1] / "support"  # plugins, imported by the measured process
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(support), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", _PEAK, str(out), json.dumps(options)], capture_output=True,
                          text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(("options", "small_n"), [
    ({"format": "coco"}, 50), ({"format": "coco-results"}, 50), ({"format": "yolo", "task": "segment"}, 50),
    ({"format": "labelstudio", "masks": "brush"}, 50),
], ids=lambda o: "-".join(str(v) for v in o.values()) if isinstance(o, dict) else str(o))
def test_peak_memory_is_flat_in_the_number_of_images(tmp_path: Path, options: dict, small_n: int) -> None:
    small, big = fill(tmp_path / "small", small_n), fill(tmp_path / "big", 10 * small_n)
    small_peak, big_peak = peak(small, **options), peak(big, **options)
    # 10x the images: the same peak, give or take the 64 KiB chunks the COCO writer copies its spool in
    assert big_peak < small_peak * 1.25 + 128 * 1024, (small_peak, big_peak)
