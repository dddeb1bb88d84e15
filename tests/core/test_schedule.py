"""The in-process scheduler, the run history and fsspec sources."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import fsspec
import pytest
import yaml
from PIL import Image

from autolabel import Pipeline
from autolabel.cli import main
from autolabel.errors import ExitCode
from autolabel.schedule import next_fire
from runs import coco_by_file, make_images, pipeline_dict


def test_next_fire_follows_the_cron_expression() -> None:
    base = datetime(2026, 11, 25, 1, 30, 0)
    assert next_fire("0 2 * * *", base) == datetime(2026, 11, 25, 2, 0, 0)
    assert next_fire("0 2 * * *", datetime(2026, 11, 25, 2, 0, 0)) == datetime(2026, 11, 26, 2, 0, 0)
    assert next_fire("* * * * * */10", base) == datetime(2026, 11, 25, 1, 30, 10)  # 6th field: seconds


def test_bad_cron_is_a_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(pipeline_dict()))
    assert main(["schedule", str(tmp_path / "p.yaml"), "--cron", "every night"]) == ExitCode.CONFIG
    assert "--cron 'every night': not a cron expression" in capsys.readouterr().err


@pytest.mark.slow
def test_scheduler_fires_on_a_seconds_cron_and_records_each_run(tmp_path: Path, subprocess_env: dict) -> None:
    make_images(tmp_path / "in", 3)
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(pipeline_dict()))
    done = subprocess.run(
        [sys.executable, "-m", "autolabel", "schedule", str(tmp_path / "p.yaml"), "--cron", "* * * * * */1",
         "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--max-runs", "3", "--no-progress"],
        env=subprocess_env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == ExitCode.OK, done.stderr
    assert done.stderr.count("next run at ") == 3
    assert "run 1: ok: 3 labeled, 0 already done, 0 failed" in done.stderr
    assert "run 3: ok: 0 labeled, 3 already done, 0 failed" in done.stderr

    history = subprocess.run([sys.executable, "-m", "autolabel", "runs", str(tmp_path / "out"), "--json"],
                             env=subprocess_env, capture_output=True, text=True, timeout=60)
    runs = [json.loads(line) for line in history.stdout.splitlines()]
    assert [r["status"] for r in runs] == ["ok", "ok", "ok"]
    assert [r["counts"]["labeled"] for r in runs] == [3, 0, 0]
    starts = [datetime.fromisoformat(r["started"]) for r in runs]
    assert all(b > a for a, b in zip(starts, starts[1:]))
    assert sorted(p.name for p in (tmp_path / "out" / "runs").iterdir()) == [
        "run-00001.json", "run-00002.json", "run-00003.json"]


def test_runs_table_and_missing_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_images(tmp_path / "in", 2)
    Pipeline.from_dict(pipeline_dict(fail_on="img001")).run(tmp_path / "in", tmp_path / "out")
    assert main(["runs", str(tmp_path / "out")]) == ExitCode.OK
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:4] == ["run", "status", "started", "seconds"]
    assert table[1].split()[1] == "partial" and table[1].split()[4:8] == ["2", "1", "0", "1"]
    assert main(["runs", str(tmp_path / "nothing")]) == ExitCode.FATAL
    assert "no run store" in capsys.readouterr().err


def _put_images(fs: fsspec.AbstractFileSystem, root: str, names: list[str]) -> None:
    for i, name in enumerate(names):
        buf = io.BytesIO()
        Image.new("RGB", (40 + 4 * i, 20), (10 * i, 0, 0)).save(buf, "PNG")
        fs.pipe(f"{root}/{name}", buf.getvalue())


def test_fsspec_memory_source_is_labeled_and_incremental(tmp_path: Path) -> None:
    fs = fsspec.filesystem("memory")
    root = "/autolabel-test-bucket/photos"
    _put_images(fs, root, ["a.png", "sub/b.png"])
    fs.pipe(f"{root}/notes.txt", b"ignored")
    calls = tmp_path / "calls"
    first = Pipeline.from_dict(pipeline_dict(calls_file=str(calls))).run("memory://" + root, tmp_path / "out")
    assert first.counts == {"seen": 2, "labeled": 2, "skipped": 0, "failed": 0}
    assert sorted(coco_by_file(tmp_path / "out" / "coco.json")) == ["a.png", "sub/b.png"]

    _put_images(fs, root, ["a.png", "sub/b.png", "sub/c.png"])  # the bucket grew (a, b rewritten identically)
    second = Pipeline.from_dict(pipeline_dict(calls_file=str(calls))).run("memory://" + root, tmp_path / "out")
    assert second.counts == {"seen": 3, "labeled": 1, "skipped": 2, "failed": 0}
    assert len(calls.read_text().splitlines()) == 3
    fs.rm(root, recursive=True)


def test_file_url_source_and_unknown_protocol(tmp_path: Path) -> None:
    make_images(tmp_path / "in", 2)
    summary = Pipeline.from_dict(pipeline_dict()).run(f"file://{tmp_path / 'in'}", tmp_path / "out")
    assert summary.counts["labeled"] == 2
    from autolabel.errors import ConfigError

    with pytest.raises(ConfigError, match="no filesystem for nosuchfs://"):
        Pipeline.from_dict(pipeline_dict()).run("nosuchfs://bucket/x", tmp_path / "out2")
