"""The ``autolabel`` command against hostile disks and processes (issue 20), run as a user runs it: a subprocess,
its exit code, its stderr (one line, no traceback), and what the store holds afterwards.

* a decode thread stuck in a read (a hung network mount): SIGTERM, and Ctrl-C twice, still stop the run at once;
* the store's write-ahead log deleted while a run writes: the run stops and says exactly what the store holds;
* an archived (read-only) run folder: ``runs``, ``export --path``, ``report --out`` and ``eval --path`` read it,
  ``run`` into it and ``export`` onto a full disk each fail with one line.

Read-only folders and full disks are real: a bind mount remounted read-only and a 4 KiB tmpfs, in a private
mount namespace (``unshare -rm``) that vanishes with the command; skipped where namespaces are not allowed.
"""

from __future__ import annotations

import json
import re
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
from functools import cache
from pathlib import Path

import pytest
import yaml

from autolabel.errors import ExitCode
from runs import coco_by_file, make_images, pipeline_dict

pytestmark = pytest.mark.slow


def _done(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            return conn.execute("SELECT COUNT(*) FROM images WHERE status = 'done'").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def _wait(check, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while not check():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "the run made no progress"
        time.sleep(0.05)


def _command(tmp: Path, *prefix: str) -> list[str]:
    return [sys.executable, *prefix, "run", str(tmp / "p.yaml"), "-i", str(tmp / "in"), "-o", str(tmp / "out"),
            "--no-progress"]


def _one_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    (line,) = [x for x in stderr.splitlines() if x.startswith("autolabel: error:")]
    return line


@pytest.mark.parametrize("signals", [[signal.SIGTERM], [signal.SIGINT, signal.SIGINT]], ids=["sigterm", "ctrl-c-twice"])
def test_a_stop_is_prompt_while_a_decode_thread_hangs_and_the_run_says_what_was_kept(
    tmp_path: Path, subprocess_env: dict[str, str], signals: list[int]
) -> None:
    make_images(tmp_path / "in", 8)
    data = pipeline_dict()
    data["decode_workers"] = 2
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(data))
    marker = tmp_path / "stuck"
    proc = subprocess.Popen(_command(tmp_path, "-m", "stuckread", "img005.png", str(marker), "--"),
                            env=subprocess_env, stderr=subprocess.PIPE, text=True)
    _wait(lambda: marker.exists() and _done(tmp_path / "out" / "autolabel.db") >= 4, proc)
    time.sleep(0.3)  # the loop has taken img004 and waits on the stuck img005
    sent = time.monotonic()
    for sig in signals:
        proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert time.monotonic() - sent < 10, "the stop waited on the stuck read"
    assert proc.returncode == ExitCode.INTERRUPTED, err
    assert "Traceback" not in err
    assert "the 4 results committed before the stop are kept in the store" in err, err
    assert _done(tmp_path / "out" / "autolabel.db") == 4  # the first batch; img004 was not labeled yet
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["status"] == "interrupted" and run["counts"]["labeled"] == 4


def test_a_log_deleted_during_a_run_stops_it_and_the_store_holds_what_it_says(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    make_images(tmp_path / "in", 20)  # five batches: seconds of slack between the first commit and the last
    data = pipeline_dict(sleep=0.4)
    data["decode_workers"] = 1
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(data))
    db = tmp_path / "out" / "autolabel.db"
    proc = subprocess.Popen(_command(tmp_path, "-m", "autolabel"), env=subprocess_env, stderr=subprocess.PIPE,
                            text=True)
    _wait(lambda: _done(db) >= 4, proc)
    Path(f"{db}-wal").unlink()  # another program "cleaning up"
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == ExitCode.FATAL, err
    line = _one_line(err)
    said = re.fullmatch(rf"autolabel: error: {re.escape(str(db))}-wal: deleted during the run \(by another "
                        r"program\?\); the run stopped: all (\d+) results committed by this run were saved into "
                        r"autolabel\.db from the open log; run again to label the rest", line)
    assert said, line
    assert "kept in the store" not in err and not (tmp_path / "out" / "coco.json").exists()
    held = _done(db)
    assert held == int(said.group(1)) and 4 <= held < 20  # what it claims is what a new process finds

    again = subprocess.run(_command(tmp_path, "-m", "autolabel"), env=subprocess_env, capture_output=True, text=True,
                           timeout=120, check=False)
    assert again.returncode == ExitCode.OK, again.stderr
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert (run["counts"]["skipped"], run["counts"]["labeled"]) == (held, 20 - held)
    assert len(coco_by_file(tmp_path / "out" / "coco.json")) == 20


@cache
def _namespaces() -> bool:
    try:
        return subprocess.run(["unshare", "-rm", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _in_namespace(setup: str, script: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run ``script`` (shell) after ``setup`` (mounts) in a private mount namespace; each command's stderr is kept."""
    if not _namespaces():
        pytest.skip("no private mount namespaces here (unshare -rm)")
    return subprocess.run(["unshare", "-rm", "sh", "-c", f"set -e; {setup}; {script}"], env=env, capture_output=True,
                          text=True, timeout=180, check=False)


def test_an_archived_read_only_run_folder_is_readable_and_a_full_disk_is_one_line(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    from autolabel import Pipeline

    make_images(tmp_path / "in", 20)
    out, elsewhere, full = tmp_path / "out", tmp_path / "elsewhere", tmp_path / "full"
    Pipeline.from_dict(pipeline_dict()).run(tmp_path / "in", out)
    (tmp_path / "gt.json").write_text((out / "coco.json").read_text())  # ground truth: the run's own labels
    elsewhere.mkdir()
    full.mkdir()
    py = shlex.quote(sys.executable)

    def autolabel(args: str, name: str) -> str:  # each command's exit code and stderr into files of their own
        return f"{{ {py} -m autolabel {args} 2>{elsewhere}/{name}.err; echo $? >{elsewhere}/{name}.rc; }}"

    setup = f"mount --bind {out} {out} && mount -o remount,bind,ro {out} && mount -t tmpfs -o size=4k tmpfs {full}"
    script = "; ".join([
        "set +e",
        autolabel(f"runs {out} --json >{elsewhere}/runs.json", "runs"),
        autolabel(f"export {out} --path {elsewhere}/coco.json", "export"),
        autolabel(f"report {out} --out {elsewhere}/report", "report"),
        autolabel(f"eval {out} --gt {tmp_path}/gt.json --path {elsewhere}/eval.json", "eval"),
        autolabel(f"export {out}", "export_here"),
        autolabel(f"run {tmp_path}/p.yaml -i {tmp_path}/in -o {out} --no-progress", "run_here"),
        autolabel(f"export {out} --path {full}/coco.json", "export_full"),
        f"ls -A {full} >{elsewhere}/full.ls",
    ])
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(pipeline_dict()))
    proc = _in_namespace(setup, script, subprocess_env)
    assert proc.returncode == 0, proc.stderr

    def result(name: str) -> tuple[int, str]:
        return int((elsewhere / f"{name}.rc").read_text()), (elsewhere / f"{name}.err").read_text()

    for name in ("runs", "export", "report", "eval"):
        code, err = result(name)
        assert code == ExitCode.OK and "Traceback" not in err, (name, err)
    assert [json.loads(line)["status"] for line in (elsewhere / "runs.json").read_text().splitlines()] == ["ok"]
    assert len(coco_by_file(elsewhere / "coco.json")) == 20
    assert (elsewhere / "report" / "index.html").is_file()
    assert json.loads((elsewhere / "eval.json").read_text())["overall"]["ap"] > 0.99

    code, err = result("export_here")
    assert code == ExitCode.EXPORT
    assert _one_line(err) == (
        f"autolabel: error: export coco to {out}/coco.json failed: Read-only file system; no file was left "
        "half-written and the store is unchanged: the run's folder is read-only: write elsewhere with --path "
        "/SOMEWHERE/FILE")
    code, err = result("run_here")
    assert code == ExitCode.FATAL
    assert _one_line(err) == (
        f"autolabel: error: output {out}: the folder cannot be written (read-only); pass a writable folder (an "
        f"existing run's folder stays readable: `autolabel export {out} --path ELSEWHERE`)")
    code, err = result("export_full")
    assert code == ExitCode.EXPORT
    assert _one_line(err) == (f"autolabel: error: export coco to {full}/coco.json failed: No space left on device; "
                              "no file was left half-written and the store is unchanged: free space or remove what "
                              "is in the way, then export again")
    assert (elsewhere / "full.ls").read_text() == ""  # no half-written file or temp file left on the full disk
