"""Real tools that read our video exports, each in a virtualenv of its own, run as subprocesses.

* Datumaro 1.13 (reads MOT and CVAT for video) pins pandas and pillow versions older than the project's.
* py-motmetrics 1.4.0 (MOTA, ID switches), the latest release, calls ``np.asfarray``, which numpy 2 removed
  (fixed upstream in cheind/py-motmetrics#200, not released): its venv gets ``numpy<2``.

Installs are cached in ``$AUTOLABEL_TEST_CACHE`` (default ``~/.cache/autolabel-tests``) under ``<tool>-<version>``
(Datumaro ~560 MB and ~40 s, motmetrics ~330 MB and ~25 s, the first time). A failed install raises
:class:`InstallError`: the tests that need the tool fail with its message; they never skip.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

#: tool → (venv folder name, pip requirements)
TOOLS = {
    "datumaro": ("datumaro-1.13.12", ["datumaro==1.13.12"]),
    "motmetrics": ("motmetrics-1.4.0", ["motmetrics==1.4.0", "numpy<2"]),
}


class InstallError(RuntimeError):
    """A tool could not be installed (no route to the package index?)."""


def cache_dir(tool: str) -> Path:
    base = os.environ.get("AUTOLABEL_TEST_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "autolabel-tests")
    return Path(base) / TOOLS[tool][0]


def ensure_installed(tool: str, timeout: float = 1800.0) -> Path:
    """The python of the tool's cached venv, installed on first use (file-locked: one installer at a time)."""
    venv = cache_dir(tool)
    python = venv / "bin" / "python"
    marker = venv / ".autolabel-installed"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f".{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.is_file() and python.exists():
            return python
        if venv.exists():
            shutil.rmtree(venv)
        started = time.monotonic()
        requirements = TOOLS[tool][1]
        steps = [[sys.executable, "-m", "venv", str(venv)],
                 [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", *requirements]]
        for cmd in steps:
            try:
                done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
            except subprocess.TimeoutExpired:
                raise InstallError(f"installing {' '.join(requirements)} took over {timeout:.0f} s") from None
            if done.returncode != 0:
                tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-5:])
                raise InstallError(f"cannot install {' '.join(requirements)} into {venv} (exited {done.returncode}): "
                                   f"{tail} — these tests need the package index (PyPI)")
        marker.write_text(f"{' '.join(requirements)} installed in {time.monotonic() - started:.0f} s\n")
        return python


def run(tool: str, script: str, payload: object, timeout: float = 300.0) -> object:
    """Run ``script`` with the tool's python, ``payload`` as JSON in ``argv[1]``; return the JSON it prints last."""
    python = ensure_installed(tool)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"), "LANG": "C.UTF-8"}
    done = subprocess.run([str(python), "-c", script, json.dumps(payload)], capture_output=True, text=True,
                          timeout=timeout, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{tool} failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


#: Datumaro: import each [path, format] and print every box (and its attributes) as JSON
DATUMARO_READ = r"""
import json, sys
import datumaro as dm
from datumaro.components.annotation import AnnotationType
out = []
for path, fmt in json.loads(sys.argv[1]):
    dataset = dm.Dataset.import_from(path, fmt)
    labels = dataset.categories()[AnnotationType.label]
    boxes = []
    for item in dataset:
        frame = item.attributes.get("frame", item.id)
        for ann in item.annotations:
            if ann.type != AnnotationType.bbox:
                continue
            plain = {k: v for k, v in ann.attributes.items() if isinstance(v, (int, float, str, bool))}
            boxes.append({"item": str(item.id), "frame": int(frame), "label": labels[ann.label].name,
                          "xywh": [ann.x, ann.y, ann.w, ann.h], "attributes": plain})
    out.append({"path": path, "format": fmt, "items": len(dataset), "labels": [l.name for l in labels],
                "boxes": boxes})
print(json.dumps(out))
"""

#: py-motmetrics: for each [gt.txt, hypothesis.txt], MOTA, ID switches and IDF1 at IoU 0.5
MOT_SCORES = r"""
import json, sys
import motmetrics as mm
out = []
for gt_path, hyp_path in json.loads(sys.argv[1]):
    gt = mm.io.loadtxt(gt_path, fmt="mot15-2D", min_confidence=1)
    hyp = mm.io.loadtxt(hyp_path, fmt="mot15-2D")
    acc = mm.utils.compare_to_groundtruth(gt, hyp, "iou", distth=0.5)
    summary = mm.metrics.create().compute(acc, metrics=["mota", "num_switches", "idf1", "num_frames"], name="x")
    out.append({k: float(summary[k].iloc[0]) for k in summary.columns})
print(json.dumps(out))
"""
