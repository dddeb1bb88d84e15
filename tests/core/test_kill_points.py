"""Kills at known points, and exactly what each one leaves committed.

A run of 12 images in batches of 4 is ended at image m005 (the second batch) in each way a run can end early: the
process dying inside a stage (``os._exit``, SIGKILL), inside the store's commit transaction, right after a
commit, SIGTERM, and Ctrl-C twice. The store must then hold exactly the batches the contract promises ("loses at
most the batch in flight", nothing duplicated, ``PRAGMA integrity_check`` ok), and a resume must run the model on
exactly what is missing and give the same export as an uninterrupted run.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from killpoints import EXIT_CODE as KILLPOINT_EXIT
from probes import EXIT_CODE, calls, coco_boxes, make_marker_images

from autolabel import Pipeline
from autolabel.errors import ExitCode

NAMES = [f"m{i:03d}.png" for i in range(12)]
FIRST_BATCH, TWO_BATCHES = NAMES[:4], NAMES[:8]



def pipeline_file(tmp: Path, how: str | None) -> Path:
    stages = [{"type": "probes:ModelMarkerBox", "name": "mark", "model": "m", "label": "marker",
               "calls_file": str(tmp / "calls.txt")}]
    if how is not None:  # after the model stage: the batch is labeled when it dies
        stages.append({"type": "probes:KillAt", "at": "m005.png", "how": how, "once_file": str(tmp / "killed")})
    stages.append({"type": "score_threshold", "threshold": 0.0})
    path = tmp / "p.yaml"
    path.write_text(yaml.safe_dump({
        "models": {"m": {"type": "florence2", "id": "unused/the-probe-needs-no-weights"}},
        "ontology": ["marker"],
        "batch_size": 4,
        "stages": stages,
        "exports": [{"format": "coco"}],
    }))
    return path


def launch(
    tmp: Path, env: dict[str, str], how: str | None, store_hook: str | None = None
) -> subprocess.CompletedProcess:
    command = ["run", str(pipeline_file(tmp, how)), "-i", str(tmp / "in"), "-o", str(tmp / "out"), "--no-progress"]
    prefix = ["-m", "killpoints", store_hook, "m005.png", "--"] if store_hook else ["-m", "autolabel"]
    return subprocess.run([sys.executable, *prefix, *command], env=env, capture_output=True, text=True, timeout=120,
                          check=False)


def committed(tmp: Path) -> tuple[list[str], int]:
    """(rel_paths of done images in id order, cached stage outputs); checks integrity and uniqueness first."""
    with sqlite3.connect(tmp / "out" / "autolabel.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        names = [r[0] for r in conn.execute("SELECT rel_path FROM images WHERE status = 'done' ORDER BY id")]
        total, distinct = conn.execute("SELECT COUNT(*), COUNT(DISTINCT path) FROM images").fetchone()
        cached = conn.execute("SELECT COUNT(*) FROM stage_outputs").fetchone()[0]
    assert total == distinct == len(names), "a row twice, or a row not done"
    return names, cached


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("clean")
    make_marker_images(tmp / "in", NAMES)
    summary = Pipeline.from_yaml(pipeline_file(tmp, None)).run(tmp / "in", tmp / "out")
    assert summary.counts["labeled"] == 12
    return json.loads((tmp / "out" / "coco.json").read_text())


def resume_and_compare(tmp: Path, how: str | None, done: list[str], uninterrupted: dict) -> None:
    """Run the killed run's pipeline again (its kill stage fires only once) and compare with a clean run."""
    calls(tmp / "calls.txt")
    summary = Pipeline.from_yaml(pipeline_file(tmp, how)).run(tmp / "in", tmp / "out")
    assert summary.exit_code == ExitCode.OK
    assert summary.counts == {"seen": 12, "labeled": 12 - len(done), "skipped": len(done), "failed": 0}
    assert calls(tmp / "calls.txt") == [n for n in NAMES if n not in done]  # the model ran on what was missing
    names, cached = committed(tmp)
    assert sorted(names) == NAMES and cached == 12
    resumed = json.loads((tmp / "out" / "coco.json").read_text())
    assert resumed == uninterrupted
    want = make_marker_images(tmp / "check", NAMES)
    assert coco_boxes(tmp / "out" / "coco.json") == {n: [b] for n, b in want.items()}


@pytest.mark.slow
@pytest.mark.parametrize("how,store_hook,code,left", [
    ("exit", None, EXIT_CODE, FIRST_BATCH),  # dies in a stage: the batch in flight is lost, the one before kept
    ("sigkill", None, -9, FIRST_BATCH),
    (None, "in-commit", -9, FIRST_BATCH),  # dies inside the commit of m005's batch: rolled back as a whole
    (None, "after-commit", KILLPOINT_EXIT, TWO_BATCHES),  # dies right after it: that batch is there, whole
])
def test_a_kill_loses_at_most_the_batch_in_flight_and_resume_equals_an_uninterrupted_run(
    tmp_path: Path, subprocess_env: dict[str, str], uninterrupted: dict,
    how: str | None, store_hook: str | None, code: int, left: list[str],
) -> None:
    make_marker_images(tmp_path / "in", NAMES)
    proc = launch(tmp_path, subprocess_env, how, store_hook)
    assert proc.returncode == code, proc.stderr
    names, cached = committed(tmp_path)
    assert names == left and cached == len(left)
    assert not (tmp_path / "out" / "coco.json").exists()  # no export from a dead run
    resume_and_compare(tmp_path, how, left, uninterrupted)


@pytest.mark.slow
@pytest.mark.parametrize("how,left", [
    ("sigterm", TWO_BATCHES),  # asks to stop: the batch in flight finishes and is committed, nothing after it
    ("sigint", TWO_BATCHES),
    ("sigint-twice", FIRST_BATCH),  # a second Ctrl-C stops at once: the batch in flight is not committed
])
def test_signals_stop_where_they_promise_and_say_how_to_resume(
    tmp_path: Path, subprocess_env: dict[str, str], uninterrupted: dict, how: str, left: list[str]
) -> None:
    make_marker_images(tmp_path / "in", NAMES)
    proc = launch(tmp_path, subprocess_env, how)
    assert proc.returncode == ExitCode.INTERRUPTED, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "run the same command again to resume" in proc.stderr
    names, cached = committed(tmp_path)
    assert names == left and cached == len(left)
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["status"] == "interrupted" and run["counts"]["labeled"] == len(left)
    assert not (tmp_path / "out" / "coco.json").exists()
    resume_and_compare(tmp_path, how, left, uninterrupted)
