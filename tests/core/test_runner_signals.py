"""SIGTERM and Ctrl-C inside this process: where the run stops, what it says, and that it leaves no handler behind.

tests/core/test_kill_points.py checks the same stops through the ``autolabel`` command in a subprocess (exit code, no
traceback); here the run is called in-process, which is fast and lets the test see the signal handlers themselves.
"""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path

import pytest
from probes import make_marker_images
from test_kill_points import FIRST_BATCH, NAMES, TWO_BATCHES, committed, pipeline_file

from autolabel import Pipeline
from autolabel.errors import ExitCode, RunStatus


@pytest.mark.parametrize("how,left", [
    ("sigterm", TWO_BATCHES),  # the batch in flight finishes and is committed, nothing after it
    ("sigint", TWO_BATCHES),
    ("sigint-twice", FIRST_BATCH),  # the second one stops at once: the batch in flight is not committed
])
def test_a_signal_stops_the_run_where_it_promises_and_leaves_the_handlers_as_they_were(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], how: str, left: list[str]
) -> None:
    make_marker_images(tmp_path / "in", NAMES)
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    summary = Pipeline.from_yaml(pipeline_file(tmp_path, how)).run(tmp_path / "in", tmp_path / "out")
    assert {sig: signal.getsignal(sig) for sig in before} == before
    assert summary.status is RunStatus.INTERRUPTED and summary.exit_code == ExitCode.INTERRUPTED
    names, cached = committed(tmp_path)
    assert names == left and cached == len(left)
    assert summary.counts == {"seen": len(left), "labeled": len(left), "skipped": 0, "failed": 0}
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["status"] == "interrupted" and run["counts"]["labeled"] == len(left)
    assert not (tmp_path / "out" / "coco.json").exists()  # an interrupted run writes no export
    err = capsys.readouterr().err
    assert err.count("stopping after the batch in flight (press Ctrl-C again to stop at once)") == 1


def test_a_run_outside_the_main_thread_installs_no_handler_and_runs(tmp_path: Path) -> None:
    make_marker_images(tmp_path / "in", NAMES[:4])
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    out: dict = {}

    def work() -> None:
        try:
            out["summary"] = Pipeline.from_yaml(pipeline_file(tmp_path, None)).run(tmp_path / "in", tmp_path / "out")
        except Exception as err:  # noqa: BLE001 — handed to the main thread's assert
            out["error"] = err

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(60)
    assert "error" not in out, out.get("error")
    assert out["summary"].status is RunStatus.OK and committed(tmp_path)[0] == NAMES[:4]
    assert {sig: signal.getsignal(sig) for sig in before} == before
