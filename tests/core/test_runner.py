"""The run loop: per-image retry, resume, pipeline changes, kill -9, Ctrl-C, fatal errors."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from PIL import Image

from autolabel import Pipeline
from autolabel.cli import main
from autolabel.errors import ExitCode
from runs import coco_by_file, done_count, make_images, pipeline_dict


def test_one_bad_image_costs_one_image(tmp_path: Path) -> None:
    make_images(tmp_path / "in", 6)
    summary = Pipeline.from_dict(pipeline_dict(fail_on="img002")).run(tmp_path / "in", tmp_path / "out")
    assert summary.exit_code == ExitCode.PARTIAL
    assert summary.counts == {"seen": 6, "labeled": 5, "skipped": 0, "failed": 1}
    (failure,) = summary.failures
    assert failure["path"].endswith("img002.png")
    assert failure["reason"] == "stage 'box': RuntimeError: cannot label img002.png"
    assert len(coco_by_file(tmp_path / "out" / "coco.json")) == 5


def test_rerun_skips_done_images_and_relabels_on_change(tmp_path: Path) -> None:
    make_images(tmp_path / "in", 5)
    calls = tmp_path / "calls.txt"
    first = Pipeline.from_dict(pipeline_dict(calls_file=str(calls))).run(tmp_path / "in", tmp_path / "out")
    assert first.counts["labeled"] == 5 and first.exit_code == ExitCode.OK
    again = Pipeline.from_dict(pipeline_dict(calls_file=str(calls))).run(tmp_path / "in", tmp_path / "out")
    assert again.counts == {"seen": 5, "labeled": 0, "skipped": 5, "failed": 0}
    assert len(calls.read_text().splitlines()) == 5  # the model saw each image once

    Image.new("RGB", (12, 12), "white").save(tmp_path / "in" / "img001.png")  # new content, same name
    make_images(tmp_path / "more", 0)
    changed = Pipeline.from_dict(pipeline_dict(calls_file=str(calls))).run(tmp_path / "in", tmp_path / "out")
    assert changed.counts == {"seen": 5, "labeled": 1, "skipped": 4, "failed": 0}
    assert coco_by_file(tmp_path / "out" / "coco.json")["img001.png"][0][1] == [3.0, 3.0, 6.0, 6.0]

    other = pipeline_dict(calls_file=str(calls))
    other["stages"][0]["label"] = "thing"
    other["ontology"] = {"thing": ["thing", "object"]}  # a pipeline change: everything is labeled again
    assert Pipeline.from_dict(other).run(tmp_path / "in", tmp_path / "out").counts["labeled"] == 5


def test_store_keeps_stable_image_ids_across_runs(tmp_path: Path) -> None:
    make_images(tmp_path / "in", 3)
    Pipeline.from_dict(pipeline_dict()).run(tmp_path / "in", tmp_path / "out")
    before = json.loads((tmp_path / "out" / "coco.json").read_text())["images"]
    Image.new("RGB", (12, 12), "white").save(tmp_path / "in" / "img000.png")
    Pipeline.from_dict(pipeline_dict()).run(tmp_path / "in", tmp_path / "out")
    after = json.loads((tmp_path / "out" / "coco.json").read_text())["images"]
    assert [(i["id"], i["file_name"]) for i in before] == [(i["id"], i["file_name"]) for i in after]


def test_model_that_cannot_load_is_fatal_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_images(tmp_path / "in", 2)
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({
        "models": {"m": {"type": "plugins:BrokenModel", "id": "/weights/missing"}},
        "stages": [{"type": "plugins:UsesModel", "model": "m"}],
    }))
    code = main(["run", str(tmp_path / "p.yaml"), "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"),
                 "--no-progress"])
    assert code == ExitCode.FATAL
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["autolabel: error: model 'm' (/weights/missing): cannot load: OSError: "
                   "no file named model.safetensors in /weights/missing"]
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["status"] == "failed" and "cannot load" in run["error"]


def test_missing_input_and_output_are_config_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(pipeline_dict()))
    assert main(["run", str(tmp_path / "p.yaml"), "-o", str(tmp_path / "out")]) == ExitCode.CONFIG
    assert "input: none given (pass --input PATH" in capsys.readouterr().err
    assert main(["run", str(tmp_path / "p.yaml"), "-i", str(tmp_path / "nope")]) == ExitCode.CONFIG


def _start(tmp_path: Path, env: dict[str, str], out: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "autolabel", "run", str(tmp_path / "p.yaml"), "-i", str(tmp_path / "in"),
         "-o", str(tmp_path / out), "--no-progress"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _wait_for_done(db: Path, at_least: int, proc: subprocess.Popen, timeout: float = 60) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline:
        n = done_count(db)
        if n >= at_least:
            return n
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("the run made no progress")


@pytest.mark.slow
def test_kill_9_then_resume_equals_an_uninterrupted_run(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    names = make_images(tmp_path / "in", 24)
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(pipeline_dict(sleep=0.25, fail_on="img013")))
    proc = _start(tmp_path, subprocess_env, "out")
    _wait_for_done(tmp_path / "out" / "autolabel.db", 5, proc)
    proc.kill()  # SIGKILL: no handler runs, no cleanup
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    db = tmp_path / "out" / "autolabel.db"
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    committed = done_count(db)
    assert 5 <= committed < 23
    assert not (tmp_path / "out" / "coco.json").exists()  # no half-written export either

    resumed = _start(tmp_path, subprocess_env, "out")
    _, err = resumed.communicate(timeout=120)
    assert resumed.returncode == ExitCode.PARTIAL, err
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["counts"]["skipped"] == committed
    assert run["counts"]["labeled"] == 23 - committed

    Pipeline.from_yaml(tmp_path / "p.yaml").run(tmp_path / "in", tmp_path / "clean")
    resumed_coco = coco_by_file(tmp_path / "out" / "coco.json")
    assert resumed_coco == coco_by_file(tmp_path / "clean" / "coco.json")
    assert sorted(resumed_coco) == sorted(n for n in names if n != "img013.png")
    assert all(len(v) == 1 for v in resumed_coco.values())


@pytest.mark.slow
def test_ctrl_c_commits_the_batch_in_flight_and_says_how_to_resume(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    make_images(tmp_path / "in", 24)
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(pipeline_dict(sleep=0.3)))
    proc = _start(tmp_path, subprocess_env, "out")
    _wait_for_done(tmp_path / "out" / "autolabel.db", 4, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == ExitCode.INTERRUPTED, err
    assert "run the same command again to resume" in err
    assert "Traceback" not in err
    done = done_count(tmp_path / "out" / "autolabel.db")
    assert done % 4 == 0 and 4 <= done < 24  # whole batches only
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["status"] == "interrupted" and run["counts"]["labeled"] == done

    resumed = _start(tmp_path, subprocess_env, "out")
    resumed.communicate(timeout=120)
    assert resumed.returncode == ExitCode.OK
    assert len(coco_by_file(tmp_path / "out" / "coco.json")) == 24
