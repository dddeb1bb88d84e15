"""Scheduled-job behaviour: only new images reach a model, re-filtering runs no model, one run at a time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from autolabel import Pipeline
from autolabel.cli import main
from autolabel.errors import ExitCode
from autolabel.lock import LOCK_NAME, LockedError, RunLock
from runs import coco_by_file, make_images, n_calls, two_model_pipeline


def test_growing_folder_only_new_images_reach_the_model(tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    for total in (4, 7, 10):  # the folder grows between three runs
        make_images(tmp_path / "in", total)
        before = n_calls(calls, "first")
        summary = Pipeline.from_dict(two_model_pipeline(calls)).run(tmp_path / "in", tmp_path / "out")
        assert summary.counts["labeled"] == total - before
        assert n_calls(calls, "first") == total and n_calls(calls, "second") == total
        assert len(coco_by_file(tmp_path / "out" / "coco.json")) == total


def test_changing_a_filter_runs_no_model_and_updates_the_export(tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    make_images(tmp_path / "in", 6)
    Pipeline.from_dict(two_model_pipeline(calls, threshold=0.0)).run(tmp_path / "in", tmp_path / "out")
    kept_before = sum(len(v) for v in coco_by_file(tmp_path / "out" / "coco.json").values())
    assert kept_before == 12

    summary = Pipeline.from_dict(two_model_pipeline(calls, threshold=0.5)).run(tmp_path / "in", tmp_path / "out")
    assert summary.counts["labeled"] == 6  # re-filtered...
    assert n_calls(calls, "first") == 6 and n_calls(calls, "second") == 6  # ...without a single model call
    assert summary.data["stage_images"] == {"score_threshold": 6}
    after = coco_by_file(tmp_path / "out" / "coco.json")
    scores = [s for boxes in after.values() for _, _, s in boxes]
    assert scores and min(scores) >= 0.5 and len(scores) < kept_before  # the export follows the new threshold


def test_changing_a_model_stage_reruns_only_that_stage_and_what_follows(tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    make_images(tmp_path / "in", 5)
    Pipeline.from_dict(two_model_pipeline(calls)).run(tmp_path / "in", tmp_path / "out")
    summary = Pipeline.from_dict(two_model_pipeline(calls, second_label="third")).run(tmp_path / "in", tmp_path / "out")
    assert n_calls(calls, "first") == 5  # cached
    assert n_calls(calls, "second") == 10  # its prompt changed: it ran again
    assert summary.data["stage_images"] == {"second": 5, "score_threshold": 5}
    categories = {c for boxes in coco_by_file(tmp_path / "out" / "coco.json").values() for c, _, _ in boxes}
    assert categories == {1, 3}  # thing and third; no stale 'other'


def test_a_second_overlapping_run_is_refused_naming_the_holder(tmp_path: Path, capsys) -> None:
    make_images(tmp_path / "in", 2)
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(two_model_pipeline(tmp_path / "calls")))
    with RunLock(tmp_path / "out", "run"):
        code = main(["run", str(tmp_path / "p.yaml"), "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"),
                     "--no-progress"])
    assert code == ExitCode.LOCKED
    err = capsys.readouterr().err.strip()
    assert f"locked by pid {os.getpid()} on host " in err and "run started 20" in err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "calls.first").exists()  # nothing ran


def test_lock_is_released_and_reusable(tmp_path: Path) -> None:
    with RunLock(tmp_path, "run"), pytest.raises(LockedError, match="locked by pid"):
        RunLock(tmp_path, "export").acquire()
    with RunLock(tmp_path, "run") as lock:
        assert lock.previous is None  # released cleanly last time: nothing to take over
    assert (tmp_path / LOCK_NAME).exists()  # never deleted (see lock.py)


@pytest.mark.slow
def test_lock_of_a_killed_run_is_taken_over(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from autolabel.lock import RunLock; RunLock(sys.argv[1]).acquire(); "
         "print('held', flush=True); time.sleep(60)", str(tmp_path)],
        stdout=subprocess.PIPE, text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(LockedError, match=f"pid {holder.pid}"):
        RunLock(tmp_path).acquire()
    holder.kill()
    holder.wait(timeout=10)
    deadline = time.time() + 10
    while True:
        try:
            lock = RunLock(tmp_path).acquire()
            break
        except LockedError:
            assert time.time() < deadline
            time.sleep(0.05)
    assert lock.previous is not None and lock.previous["pid"] == holder.pid  # known to be a takeover
    lock.release()


def test_run_json_records_the_stale_lock_taken_over(tmp_path: Path) -> None:
    make_images(tmp_path / "in", 1)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / LOCK_NAME).write_text(json.dumps({"pid": 999999, "host": "gone", "started": 0}))
    Pipeline.from_dict(two_model_pipeline(tmp_path / "calls")).run(tmp_path / "in", tmp_path / "out")
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["lock_taken_over_from"]["pid"] == 999999
