"""The end of a run: an export or push that cannot be delivered still ends as a recorded run, labels kept."""

from __future__ import annotations

import errno
import json
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator

import pytest
import yaml

from autolabel.cli import main
from autolabel.errors import ExitCode
from autolabel.exports import coco
from runs import coco_by_file, make_images, pipeline_dict


def _run(tmp_path: Path, data: dict) -> int:
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(data))
    return main(["run", str(tmp_path / "p.yaml"), "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"),
                 "--no-progress"])


def _runs(out: Path, capsys: pytest.CaptureFixture[str]) -> list[dict]:
    capsys.readouterr()
    assert main(["runs", str(out), "--json"]) == ExitCode.OK
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def _store_rows(out: Path) -> tuple[str, int]:
    with sqlite3.connect(out / "autolabel.db") as conn:
        check = conn.execute("PRAGMA integrity_check").fetchone()[0]
        done = conn.execute("SELECT COUNT(*) FROM images WHERE status = 'done' AND labels IS NOT NULL").fetchone()[0]
    return check, done


def test_a_folder_where_the_export_must_go_fails_the_run_on_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_images(tmp_path / "in", 5)
    blocker = tmp_path / "out" / "coco.json"
    blocker.mkdir(parents=True)
    (blocker / "keep.txt").write_text("someone's file")
    data = pipeline_dict()
    data["exports"] = [{"format": "coco"}, {"format": "coco-results"}]

    assert _run(tmp_path, data) == ExitCode.EXPORT
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"autolabel: error: export coco to {blocker} failed: ")
    assert "autolabel export" in err[0] and "Traceback" not in err[0]

    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["status"] == "failed" and run["counts"]["labeled"] == 5
    assert run["error"].startswith("ExportError: export coco to") and len(run["export_failures"]) == 1
    assert run["exports"] == [str(tmp_path / "out" / "coco_results.json")]  # the other export was still written
    assert (tmp_path / "out" / "runs" / f"run-{run['run_id']:05d}.json").is_file()
    runs = _runs(tmp_path / "out", capsys)
    assert [(r["id"], r["status"], r["error"]) for r in runs] == [(1, "failed", run["error"])]
    assert (blocker / "keep.txt").read_text() == "someone's file"  # nothing of the user's was touched
    assert _store_rows(tmp_path / "out") == ("ok", 5)

    # the fix the message names: remove the cause, then rewrite from the store (no model) or run again
    (blocker / "keep.txt").unlink()
    blocker.rmdir()
    assert main(["export", str(tmp_path / "out")]) == ExitCode.OK
    assert len(coco_by_file(blocker)) == 5
    blocker.unlink()
    calls = tmp_path / "calls.txt"
    data["stages"][0]["calls_file"] = str(calls)  # counts model calls from here on (changes the hash: relabels)
    assert _run(tmp_path, data) == ExitCode.OK
    assert _run(tmp_path, data) == ExitCode.OK
    assert len(calls.read_text().splitlines()) == 5 and len(coco_by_file(blocker)) == 5
    assert [r["status"] for r in _runs(tmp_path / "out", capsys)] == ["failed", "ok", "ok"]


def test_a_full_disk_during_an_export_is_recorded_and_the_next_export_still_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = coco.atomic_open

    @contextmanager
    def full_disk(path: str | Path, *args: Any, **kwargs: Any) -> Iterator[IO]:  # the disk is full for coco.json
        with real(path, *args, **kwargs) as f:
            if Path(path).name == "coco.json":
                f.write("{")
                raise OSError(errno.ENOSPC, "No space left on device")
            yield f

    monkeypatch.setattr(coco, "atomic_open", full_disk)
    make_images(tmp_path / "in", 4)
    data = pipeline_dict()
    data["exports"] = [{"format": "coco"}, {"format": "yolo"}]
    assert _run(tmp_path, data) == ExitCode.EXPORT
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "export coco to" in line and "No space left on device" in line
    out = tmp_path / "out"
    assert not (out / "coco.json").exists() and not list(out.glob(".coco.json.*"))  # no half-written file
    assert (out / "yolo" / "data.yaml").is_file()
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "failed" and run["counts"]["labeled"] == 4
    assert _store_rows(out) == ("ok", 4)


def test_an_export_that_cannot_be_written_from_the_store_names_the_image(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_images(tmp_path / "in", 4)
    data = pipeline_dict()
    data["exports"] = []
    assert _run(tmp_path, data) == ExitCode.OK
    (tmp_path / "in" / "img002.png").unlink()  # labeled, then moved away: a copy export cannot be written
    capsys.readouterr()
    data["exports"] = [{"format": "yolo", "images": "copy"}]
    assert _run(tmp_path, data) == ExitCode.EXPORT
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("autolabel: error: export yolo to ") and "img002.png" in line
    assert [r["status"] for r in _runs(tmp_path / "out", capsys)] == ["ok", "failed"]
    assert not (tmp_path / "out" / "yolo").exists()
    assert _store_rows(tmp_path / "out") == ("ok", 4)


def test_a_push_to_a_server_that_is_not_there_makes_the_run_partial_on_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "test-token")
    make_images(tmp_path / "in", 3)
    data = pipeline_dict()
    data["push"] = {"url": f"http://127.0.0.1:{port}", "project": "p", "retry_for": 0, "timeout": 2}
    assert _run(tmp_path, data) == ExitCode.PARTIAL
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["status"] == "partial" and run["counts"]["labeled"] == 3
    assert any("push" in line and "failed" in line for line in run["exports"])
    assert (tmp_path / "out" / "coco.json").is_file()
    assert [r["status"] for r in _runs(tmp_path / "out", capsys)] == ["partial"]


def test_a_full_store_stops_the_run_with_one_line_and_keeps_what_was_committed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from autolabel.store import Store

    real = Store.commit
    commits = []

    def commit_then_fill(self: Store, *args: Any, **kwargs: Any) -> None:
        if commits:  # from the second batch on, the database may not grow: SQLite's own "disk is full"
            pages = self._conn.execute("PRAGMA page_count").fetchone()[0]
            self._conn.execute(f"PRAGMA max_page_count = {pages}")
        commits.append(len(args[0]))
        real(self, *args, **kwargs)

    monkeypatch.setattr(Store, "commit", commit_then_fill)
    make_images(tmp_path / "in", 12)
    data = pipeline_dict()
    data["batch_size"] = 4
    assert _run(tmp_path, data) == ExitCode.FATAL
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "database or disk is full" in lines[0] and "cannot commit" in lines[0], lines
    assert "Traceback" not in lines[0]
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["status"] == "failed" and "database or disk is full" in run["error"]
    check, done = _store_rows(tmp_path / "out")
    assert check == "ok" and done == run["counts"]["labeled"]  # every batch committed before the disk filled ...
    assert 4 <= done < 12 and done % 4 == 0  # ... whole: none half-written
