"""The runner's end of a run, in-process: a push that breaks, and the tally of what the quality checks decided."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from runs import make_images, pipeline_dict

from autolabel import Pipeline
from autolabel.errors import ExitCode, RunStatus
from autolabel.runner import decision_summary, tally_decisions


@pytest.mark.parametrize("pushed,line,status", [
    (True, "labelstudio push 3 tasks", RunStatus.OK),
    (False, "labelstudio push 1 of 3 tasks", RunStatus.PARTIAL),  # what did not go through: run again to resume
])
def test_the_push_line_goes_into_the_run_and_a_push_that_did_not_go_through_makes_it_partial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pushed: bool, line: str, status: RunStatus
) -> None:
    from autolabel.labelstudio import push

    from autolabel.store import Store

    def fake(store: Store, spec: object, options: object) -> tuple[str, bool]:
        assert isinstance(store, Store) and store.count("done") == 3  # the run's own store, its labels committed
        return line, pushed

    monkeypatch.setattr(push, "push_after_run", fake)
    make_images(tmp_path / "in", 3)
    data = pipeline_dict() | {"push": {"url": "http://127.0.0.1:9", "project": "p"}}
    summary = Pipeline.from_dict(data).run(tmp_path / "in", tmp_path / "out")
    assert summary.status is status and summary.exit_code == (ExitCode.OK if pushed else ExitCode.PARTIAL)
    assert summary.exports[0] == str(tmp_path / "out" / "coco.json") and summary.exports[-1] == line
    assert json.loads((tmp_path / "out" / "run.json").read_text())["exports"] == summary.exports


def test_a_push_that_raises_is_one_line_and_the_run_partial_with_its_exports_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from autolabel.labelstudio import push

    def broken(store: object, spec: object, options: object) -> tuple[str, bool]:
        raise ConnectionResetError("peer went away\nmid-request")

    monkeypatch.setattr(push, "push_after_run", broken)
    make_images(tmp_path / "in", 2)
    data = pipeline_dict() | {"push": {"url": "http://127.0.0.1:9", "project": "p"}}
    summary = Pipeline.from_dict(data).run(tmp_path / "in", tmp_path / "out")
    assert summary.status is RunStatus.PARTIAL and summary.exit_code == ExitCode.PARTIAL
    assert summary.exports[-1] == "labelstudio push to http://127.0.0.1:9 failed: peer went away mid-request"
    assert (tmp_path / "out" / "coco.json").exists()


def record(classes: list[str], status: list[str], reason: list[str], texts: list[dict]) -> dict:
    return {"boxes": {"data": {"class_name": classes, "status": status, "reason": reason}}, "texts": texts}


def test_decisions_count_boxes_and_texts_by_class_status_and_reason() -> None:
    decisions: Counter = Counter()
    tally_decisions(decisions, record(["cat", "cat", "dog"], ["kept", "dropped", "flagged"],
                                      ["", "low_score", "overlap"],
                                      [{"kind": "caption", "text": "a cat", "status": "flagged", "reason": "short"},
                                       {"kind": "ocr", "text": "EXIT"}]))  # a text without status: kept
    tally_decisions(decisions, None)  # a failed image has no record
    tally_decisions(decisions, record(["cat"], ["dropped"], ["low_score"], []))
    assert decisions == Counter({
        ("cat", "kept", ""): 1, ("cat", "dropped", "low_score"): 2, ("dog", "flagged", "overlap"): 1,
        ("<text:caption>", "flagged", "short"): 1, ("<text:ocr>", "kept", ""): 1,
    })
    assert decision_summary(decisions) == {
        "by_reason": {"dropped/low_score": 2, "flagged/overlap": 1, "flagged/short": 1},
        "by_class": {"<text:caption>": {"flagged": 1}, "<text:ocr>": {"kept": 1},
                     "cat": {"dropped": 2, "kept": 1}, "dog": {"flagged": 1}},
    }


def test_boxes_without_a_class_are_counted_under_a_name_of_their_own() -> None:
    decisions: Counter = Counter({("", "kept", ""): 2, ("", "dropped", "unmapped"): 1})
    assert decision_summary(decisions) == {"by_reason": {"dropped/unmapped": 1},
                                           "by_class": {"<no class>": {"dropped": 1, "kept": 2}}}


def test_run_json_says_what_ran_where_how_long_and_with_what(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import socket
    import time
    from datetime import datetime

    from autolabel import runner

    monkeypatch.setattr(runner, "MAX_FAILURES_LISTED", 2)
    make_images(tmp_path / "in", 12)
    data = pipeline_dict(fail_on="img00") | {"name": "boxes"}  # img000..img009 fail: 10 failures, 2 listed
    data["stages"].append({"type": "score_threshold", "threshold": 0.0})
    Pipeline.from_dict(data).run(tmp_path / "in" / "img010.png", tmp_path / "out")  # run 1: one good image
    t0 = time.perf_counter()
    summary = Pipeline.from_dict(data).run(tmp_path / "in", tmp_path / "out")
    wall = time.perf_counter() - t0
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run == json.loads((tmp_path / "out" / "runs" / f"run-{summary.run_id:05d}.json").read_text())
    assert run["run_id"] == summary.run_id == 2 and run["status"] == "partial" and run["error"] is None
    assert run["counts"] == {"seen": 12, "labeled": 1, "skipped": 1, "failed": 10, "inputs": 12}
    assert len(run["failures"]) == run["failures_listed"] == 2
    assert [f["path"] for f in run["failures"]] == [str(tmp_path / "in" / f"img00{i}.png") for i in range(2)]
    started, ended = (datetime.fromisoformat(run[k].replace("Z", "+00:00")) for k in ("started", "ended"))
    assert 0 <= (ended - started).total_seconds() <= run["seconds"] + 1  # the ISO times are to the second
    assert 0 < run["seconds"] <= wall
    seconds = run["seconds"]  # rounded to the millisecond: the rate was computed before rounding
    assert 11 / (seconds + 6e-4) <= run["images_per_second"] <= 11 / (seconds - 6e-4)  # skipped images not counted
    assert run["stage_images"] == {"box": 1, "score_threshold": 1}  # images a stage labeled: failures are not
    assert set(run["stage_seconds"]) == {"box", "score_threshold"}
    assert run["loop_seconds"]["commit"] > 0 and run["executor"] == {"type": "local"}
    loop = run["loop_seconds"]  # the loop's own clock, summed over the batches (3 of them here, retried ones too)
    assert {"cache lookup", "stages", "waiting for decode", "commit"} <= set(loop)
    assert all(0 <= t <= run["seconds"] for t in loop.values()), loop  # each a part of the run's time
    assert loop["stages"] >= sum(run["stage_seconds"].values()) - 1e-3
    assert run["pipeline"] == {"name": "boxes", "file": None, "hash": Pipeline.from_dict(data).spec.hash}
    assert run["host"] == {"hostname": socket.gethostname(), "pid": os.getpid()}
    assert set(run["versions"]) == {"autolabel", "python", "torch", "transformers", "models"}
    assert run["versions"]["python"].count(".") == 2 and run["versions"]["torch"]
    assert run["decisions"]["by_class"] == {"thing": {"kept": 1}}  # this run's boxes only


@pytest.mark.parametrize("blocked,more", [(["coco.json"], ""), (["coco.json", "coco_results.json"], " (and 1 more")])
def test_failed_exports_are_one_error_that_counts_the_others(tmp_path: Path, blocked: list[str], more: str) -> None:
    from autolabel.errors import ExportError

    make_images(tmp_path / "in", 2)
    for name in blocked:  # a folder where the export's file must go
        (tmp_path / "out" / name).mkdir(parents=True)
    data = pipeline_dict() | {"exports": [{"format": "coco"}, {"format": "coco-results"}]}
    with pytest.raises(ExportError) as err:
        Pipeline.from_dict(data).run(tmp_path / "in", tmp_path / "out")
    message = str(err.value)
    assert message.startswith(f"export coco to {tmp_path / 'out' / 'coco.json'} failed: ")
    assert (" (and 1 more: see run.json); the labels are kept" in message) is bool(more)
    assert " more: see run.json" not in message or more


def test_a_run_summary_that_cannot_be_written_fails_the_run_in_one_line_after_the_store_recorded_it(
    tmp_path: Path,
) -> None:
    from autolabel.errors import ExportError
    from autolabel.store import Store

    make_images(tmp_path / "in", 2)
    (tmp_path / "out" / "run.json").mkdir(parents=True)  # where the summary must go
    with pytest.raises(ExportError) as err:
        Pipeline.from_dict(pipeline_dict()).run(tmp_path / "in", tmp_path / "out")
    assert str(err.value).startswith(f"{tmp_path / 'out' / 'run.json'}: cannot write the run summary (")
    with Store(tmp_path / "out") as store:
        assert [r["status"] for r in store.runs()] == ["ok"] and store.count("done") == 2


def test_missing_input_or_output_is_one_line_naming_the_flag_and_the_key(tmp_path: Path) -> None:
    from autolabel.errors import ConfigError
    from autolabel.runner import run

    pipeline = Pipeline.from_dict(pipeline_dict())
    for args, message in [
        ((None, tmp_path), "input: none given (pass --input PATH or set input: in the pipeline file)"),
        (([], tmp_path), "input: none given (pass --input PATH or set input: in the pipeline file)"),
        ((tmp_path, None), "output: none given (pass --output DIR or set output: in the pipeline file)"),
    ]:
        with pytest.raises(ConfigError) as err:
            run(pipeline, *args)
        assert str(err.value) == message


def test_the_loops_stage_clock_adds_up_over_every_batch(tmp_path: Path) -> None:
    make_images(tmp_path / "in", 8)
    data = pipeline_dict(sleep=0.02) | {"batch_size": 2}  # four batches of 20 ms in the stage each
    Pipeline.from_dict(data).run(tmp_path / "in", tmp_path / "out")
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["stage_seconds"]["box"] >= 0.08
    assert run["loop_seconds"]["stages"] >= run["stage_seconds"]["box"] - 1e-3
