"""Datumaro for the tests, in a virtualenv of its own (it pins pandas and pillow versions older than ours), run as a
subprocess that reads an export and prints what it found as JSON.

The install is cached in ``$AUTOLABEL_TEST_CACHE`` (default ``~/.cache/autolabel-tests``) under
``datumaro-<version>`` (~400 MB, a minute or two the first time). A failed install raises :class:`InstallError`:
the tests that need it fail with its message; they never skip.
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

DATUMARO_VERSION = "1.13.12"


class InstallError(RuntimeError):
    """Datumaro could not be installed (no route to the package index?)."""


def cache_dir() -> Path:
    base = os.environ.get("AUTOLABEL_TEST_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "autolabel-tests")
    return Path(base) / f"datumaro-{DATUMARO_VERSION}"


def ensure_installed(timeout: float = 1800.0) -> Path:
    """The python of a cached venv holding ``datumaro==DATUMARO_VERSION``, installed on first use (file-locked)."""
    venv = cache_dir()
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
        steps = [[sys.executable, "-m", "venv", str(venv)],
                 [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q",
                  f"datumaro=={DATUMARO_VERSION}"]]
        for cmd in steps:
            try:
                done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
            except subprocess.TimeoutExpired:
                raise InstallError(f"installing datumaro=={DATUMARO_VERSION} took over {timeout:.0f} s") from None
            if done.returncode != 0:
                tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-5:])
                raise InstallError(f"cannot install datumaro=={DATUMARO_VERSION} into {venv} ({' '.join(cmd[-3:])} "
                                   f"exited {done.returncode}): {tail} — these tests need the package index (PyPI)")
        marker.write_text(f"datumaro=={DATUMARO_VERSION} installed in {time.monotonic() - started:.0f} s\n")
        return python


#: run inside the Datumaro venv: import each (path, format) and print every box as JSON
READER = r"""
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
    out.append({"path": path, "format": fmt, "items": len(dataset), "labels": [l.name for l in labels], "boxes": boxes})
print(json.dumps(out))
"""


def read(sources: list[tuple[str, str]], timeout: float = 300.0) -> list[dict]:
    """Import each ``(path, format)`` with Datumaro (one subprocess for all); every box found, per source."""
    python = ensure_installed()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"),
           "LANG": "C.UTF-8"}
    done = subprocess.run([str(python), "-c", READER, json.dumps([[str(p), f] for p, f in sources])],
                          capture_output=True, text=True, timeout=timeout, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"datumaro could not read {sources}: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
