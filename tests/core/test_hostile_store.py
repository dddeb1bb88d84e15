"""The run store when its file goes wrong (issue 20), through the commands a user types: a damaged page, rows that
do not read back, a truncated store beside a history, a run killed without recording its end. Each is one line
naming the fix, nothing already done is lost, and "run again" repairs what can be repaired."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
import yaml

from autolabel.cli import main
from autolabel.errors import ExitCode
from autolabel.history import NEVER_ENDED, write_record
from autolabel.lock import RunLock
from autolabel.store import Store
from runs import coco_by_file, make_images, pipeline_dict


def _run(tmp: Path, capsys: pytest.CaptureFixture[str], calls: bool = True) -> tuple[int, list[str]]:
    """``autolabel run`` over tmp/in into tmp/out (model calls counted in tmp/calls.txt); (exit code, stderr)."""
    path = tmp / "p.yaml"
    if not path.exists():
        path.write_text(yaml.safe_dump(pipeline_dict(calls_file=str(tmp / "calls.txt")) if calls else pipeline_dict()))
    capsys.readouterr()
    code = main(["run", str(path), "-i", str(tmp / "in"), "-o", str(tmp / "out"), "--no-progress"])
    return code, capsys.readouterr().err.strip().splitlines()


def _calls(tmp: Path) -> list[str]:
    """The images the model saw since the last call (and forget them)."""
    path = tmp / "calls.txt"
    seen = [Path(line).name for line in path.read_text().splitlines()] if path.exists() else []
    path.unlink(missing_ok=True)
    return seen


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str]]:
    capsys.readouterr()
    code = main(list(argv))
    return code, capsys.readouterr().err.strip().splitlines()


def _damage_a_page_of_images(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        size = conn.execute("PRAGMA page_size").fetchone()[0]
        pages = [r[0] for r in conn.execute("SELECT pageno FROM dbstat WHERE name = 'images' AND pagetype = 'leaf' "
                                            "ORDER BY pageno")]
    with open(db, "r+b") as f:  # a page in the middle of the table: what a bad sector or a bad copy does
        f.seek((pages[len(pages) // 2] - 1) * size + 8)
        f.write(os.urandom(size - 8))


def test_a_damaged_page_is_one_line_and_recover_then_run_again_repairs_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_images(tmp_path / "in", 120)
    assert _run(tmp_path, capsys)[0] == ExitCode.OK and len(_calls(tmp_path)) == 120
    out = tmp_path / "out"
    ids = {im["file_name"]: im["id"] for im in json.loads((out / "coco.json").read_text())["images"]}
    _damage_a_page_of_images(out / "autolabel.db")

    recover = f"recover what it holds with `autolabel recover {out}` (see docs/how-to/recover-a-store.md)"
    code, err = _run(tmp_path, capsys)
    assert code == ExitCode.FATAL and len(err) == 1, err
    assert err[0].startswith(f"autolabel: error: {out / 'autolabel.db'}: the run store is damaged (quick_check: ")
    assert err[0].endswith(f"); it was not changed: {recover}")
    code, err = _cli(capsys, "export", str(out), "--path", str(tmp_path / "x.json"))
    assert (code, err) == (ExitCode.FATAL, [f"autolabel: error: {out / 'autolabel.db'}: the run store is damaged "
                                            f"(database disk image is malformed); cannot read images: {recover}"])

    code, err = _cli(capsys, "recover", str(out))
    assert code == ExitCode.OK and len(err) == 1
    (aside,) = [p for p in out.glob("autolabel.db.damaged-*") if not p.name.endswith("-wal")]
    assert err[0].startswith(f"autolabel: recovered {out / 'autolabel.db'}: ") and f"kept as {aside}" in err[0]
    assert "could not read images: ids " in err[0]
    with sqlite3.connect(out / "autolabel.db") as conn:
        left = conn.execute("SELECT COUNT(*) FROM images").fetchone()[0]
    assert 0 < left < 120

    assert _run(tmp_path, capsys)[0] == ExitCode.OK
    assert len(_calls(tmp_path)) == 120 - left  # only what the damaged page held was labeled again
    again = {im["file_name"]: im["id"] for im in json.loads((out / "coco.json").read_text())["images"]}
    assert len(again) == 120
    kept = [n for n in again if again[n] <= max(ids.values())]
    assert all(again[n] == ids[n] for n in kept)  # a recovered image keeps its id: exports stay stable
    assert [(r["id"], r["status"]) for r in json.loads(_cli_json(capsys, out))] == [(1, "ok"), (2, "ok")]


def _cli_json(capsys: pytest.CaptureFixture[str], out: Path) -> str:
    capsys.readouterr()
    assert main(["runs", str(out), "--json"]) == ExitCode.OK
    return "[" + ",".join(capsys.readouterr().out.splitlines()) + "]"


def test_rows_that_do_not_read_back_are_skipped_with_a_count_and_relabeled_by_the_next_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_images(tmp_path / "in", 5)
    assert _run(tmp_path, capsys)[0] == ExitCode.OK
    _calls(tmp_path)
    out = tmp_path / "out"
    with sqlite3.connect(out / "autolabel.db") as conn:
        conn.execute("UPDATE images SET labels = '{\"width\": 3' WHERE rel_path = 'img001.png'")  # invalid JSON
        (text,) = conn.execute("SELECT labels FROM images WHERE rel_path = 'img003.png'").fetchone()
        record = json.loads(text)
        del record["boxes"]["data"]["class_name"]  # valid JSON, wrong shape: every box would vanish silently
        conn.execute("UPDATE images SET labels = ? WHERE rel_path = 'img003.png'", (json.dumps(record),))

    code, err = _cli(capsys, "export", str(out))
    assert code == ExitCode.PARTIAL
    assert err == [f"autolabel: wrote {out / 'coco.json'}", f"autolabel: wrote {out / 'captions.json'}",
                   "autolabel: warning: 2 labeled images left out: their stored labels cannot be read (img001.png: "
                   "invalid JSON (Expecting ',' delimiter: line 1 column 12 (char 11)); img003.png: "
                   "boxes.data.class_name is missing); run the pipeline again on them to label them again"]
    assert sorted(coco_by_file(out / "coco.json")) == ["img000.png", "img002.png", "img004.png"]

    assert _run(tmp_path, capsys)[0] == ExitCode.OK
    assert sorted(_calls(tmp_path)) == ["img001.png", "img003.png"]  # exactly the two: "run again" repairs them
    assert len(coco_by_file(out / "coco.json")) == 5
    assert _cli(capsys, "export", str(out))[0] == ExitCode.OK


def test_a_truncated_store_beside_a_history_is_refused_and_history_is_never_overwritten(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_images(tmp_path / "in", 3)
    assert _run(tmp_path, capsys)[0] == ExitCode.OK
    out = tmp_path / "out"
    first = (out / "runs" / "run-00001.json").read_text()
    (out / "autolabel.db").write_bytes(b"")  # a restore gone wrong, a full disk while copying

    code, err = _run(tmp_path, capsys)
    assert (code, err) == (ExitCode.FATAL, [
        f"autolabel: error: {out / 'autolabel.db'}: the run store is empty (0 bytes) but {out / 'runs'} records runs "
        f"up to run 1: it was truncated; restore it from a backup, or start a new one that keeps the history: "
        f"recover what it holds with `autolabel recover {out}` (see docs/how-to/recover-a-store.md)"])
    assert (out / "autolabel.db").stat().st_size == 0  # not silently recreated

    assert _cli(capsys, "recover", str(out))[0] == ExitCode.OK
    assert _run(tmp_path, capsys)[0] == ExitCode.OK
    assert (out / "runs" / "run-00001.json").read_text() == first  # run 1's record untouched: the new store's
    assert json.loads((out / "runs" / "run-00002.json").read_text())["run_id"] == 2  # runs are numbered on

    (out / "autolabel.db").unlink()  # a store deleted on purpose: a new one, numbered after the history
    (out / "runs" / "run-00003.json").write_text("{}")  # a file put there by hand
    assert _run(tmp_path, capsys)[0] == ExitCode.OK
    assert json.loads((out / "run.json").read_text())["run_id"] == 4
    assert (out / "runs" / "run-00003.json").read_text() == "{}"
    assert write_record(out, 4, "again") == out / "runs" / "run-00004~2.json"  # a name taken: never replaced
    assert json.loads((out / "runs" / "run-00004.json").read_text())["run_id"] == 4


def test_a_run_killed_without_recording_its_end_shows_as_interrupted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    with Store(out) as store:  # what `kill -9` leaves: a run begun, never ended, and no process holding the lock
        store.begin_run("h", {"stages": []})

    def statuses() -> list[tuple[str, str | None]]:
        return [(r["status"], r["error"]) for r in json.loads(_cli_json(capsys, out))]

    assert statuses() == [("interrupted", NEVER_ENDED)]
    with RunLock(out, "run"):  # a live run holds the lock: the newest "running" is that run
        assert statuses() == [("running", None)]
    make_images(tmp_path / "in", 2)
    assert _run(tmp_path, capsys)[0] == ExitCode.OK
    with sqlite3.connect(out / "autolabel.db") as conn:  # the next run recorded it for good
        assert conn.execute("SELECT status FROM runs ORDER BY id").fetchall() == [("interrupted",), ("ok",)]
    assert statuses() == [("interrupted", NEVER_ENDED), ("ok", None)]


def test_a_database_that_is_not_a_store_and_a_folder_in_its_place_are_one_line(tmp_path: Path) -> None:
    from autolabel.store import StoreError

    (tmp_path / "other").mkdir()
    with sqlite3.connect(tmp_path / "other" / "autolabel.db") as conn:
        conn.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY)")
    with pytest.raises(StoreError) as err:
        Store(tmp_path / "other")
    assert str(err.value) == (f"{tmp_path / 'other' / 'autolabel.db'}: not a run store of autolabel (no table meta, "
                              "but tables runs); pass the output folder of a run, or move this file away")
    with sqlite3.connect(tmp_path / "other" / "autolabel.db") as conn:  # nothing was added to it
        assert conn.execute("SELECT name FROM sqlite_master").fetchall() == [("runs",)]
        conn.execute("CREATE TABLE meta (key TEXT, value TEXT)")
    with pytest.raises(StoreError, match=r"\(table runs lacks ended, pipeline, pipeline_hash, started, status, "
                                         r"summary\); pass"):
        Store(tmp_path / "other")
    (tmp_path / "dir" / "autolabel.db").mkdir(parents=True)
    with pytest.raises(StoreError, match=r"autolabel\.db: a folder where the run store belongs; move it away$"):
        Store(tmp_path / "dir")
