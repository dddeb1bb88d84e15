"""The store's read side (runs, last pipeline, counts) and the one-line errors of its writes, checked directly.
Written to kill what mutation testing found unchecked (BENCHMARKS.md, "Mutation testing")."""

from __future__ import annotations

from pathlib import Path

import pytest

from autolabel.errors import AutolabelError, RunStatus
from autolabel.records import SCHEMA_VERSION as RECORD_VERSION
from autolabel.store import ImageResult, Store


#: the smallest record that reads back (records.problem): a 1x1 image without boxes or texts
RECORD = {"width": 1, "height": 1, "boxes": {"xyxy": [], "confidence": [], "data": {}}}


def _result(i: int, status: str = "done") -> ImageResult:
    labels = RECORD if status == "done" else None
    return ImageResult(path=f"/in/{i}.png", rel_path=f"{i}.png", sha256=f"s{i}", status=status, width=1, height=1,
                       reason=None if status == "done" else "corrupt image (x)", labels=labels)


def test_runs_lists_every_run_in_order_with_its_summary_parsed(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        assert store.runs() == [] and store.last_pipeline() is None
        first = store.begin_run("h1", {"stages": ["a"]})
        store.end_run(first, "ok", {"counts": {"seen": 2}})
        second = store.begin_run("h2", {"stages": ["b"]})
        runs = store.runs()
    assert [r["id"] for r in runs] == [first, second] and first < second
    assert [set(r) for r in runs] == [{"id", "started", "ended", "status", "pipeline_hash", "summary"}] * 2
    assert runs[0]["summary"] == {"counts": {"seen": 2}} and runs[1]["summary"] is None  # not ended yet
    assert [r["status"] for r in runs] == [RunStatus.OK.value, RunStatus.RUNNING.value]
    assert [r["pipeline_hash"] for r in runs] == ["h1", "h2"]
    assert runs[0]["started"] <= runs[0]["ended"] and runs[1]["ended"] is None


def test_last_pipeline_is_the_most_recent_runs(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        store.begin_run("h1", {"stages": ["a"]})
        store.begin_run("h2", {"stages": ["b"]})
        assert store.last_pipeline() == {"stages": ["b"]}


def test_count_counts_all_rows_or_those_of_one_status(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        assert store.count() == 0
        run = store.begin_run("h", {})
        store.commit([_result(0), _result(1), _result(2, "failed")], run, "h")
        assert (store.count(), store.count("done"), store.count("failed")) == (3, 2, 1)


def test_a_write_that_fails_names_what_it_was_doing(tmp_path: Path) -> None:
    store = Store(tmp_path)
    run = store.begin_run("h", {})
    store.close()  # any sqlite3.Error will do: a closed connection is one that needs no full disk
    with pytest.raises(AutolabelError, match=rf"cannot record the end of run {run} \(.*\); what was committed"):
        store.end_run(run, "ok", {})
    with pytest.raises(AutolabelError, match=r"autolabel\.db: cannot commit 1 results \("):
        store.commit([_result(0)], run, "h")


def test_summaries_and_pipelines_with_paths_are_stored_as_text(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        run = store.begin_run("h", {"out": tmp_path})
        store.end_run(run, RunStatus.PARTIAL, {"out": tmp_path, "counts": {"failed": 1}})
        assert store.last_pipeline() == {"out": str(tmp_path)}
        (row,) = store.runs()
    assert row["summary"] == {"out": str(tmp_path), "counts": {"failed": 1}} and row["status"] == "partial"


def test_image_rows_have_the_documented_keys_and_json_stays_compact(tmp_path: Path) -> None:
    import sqlite3

    with Store(tmp_path) as store:
        run = store.begin_run("h", {})
        store.commit([_result(0), _result(1, "failed")], run, "h", [("s0", "k", RECORD)])
        (done,) = store.images()
        (failed,) = store.images("failed")
        (bare,) = store.images(labels=False)
    base = {"id", "path", "rel_path", "sha256", "width", "height", "status", "reason"}
    assert set(done) == set(failed) == base | {"labels"} and set(bare) == base
    assert (done["sha256"], done["status"], done["reason"], done["labels"]) == ("s0", "done", None, RECORD)
    assert (failed["status"], failed["reason"], failed["labels"]) == ("failed", "corrupt image (x)", None)
    with sqlite3.connect(tmp_path / "autolabel.db") as conn:  # compact JSON, and NULL (not "null") for no labels
        compact = '{"width":1,"height":1,"boxes":{"xyxy":[],"confidence":[],"data":{}}}'
        assert conn.execute("SELECT labels FROM images ORDER BY id").fetchall() == [(compact,), (None,)]
        assert conn.execute("SELECT labels FROM stage_outputs").fetchall() == [(compact,)]


def test_meta_of_an_unknown_key_is_none_and_a_newer_store_is_refused(tmp_path: Path) -> None:
    import sqlite3

    with Store(tmp_path) as store:
        assert store.meta("no-such-key") is None
        assert (store.meta("schema_version"), store.meta("record_version")) == ("1", str(RECORD_VERSION))
    for key, what in (("schema_version", "store schema"), ("record_version", "label record version")):
        with sqlite3.connect(tmp_path / "autolabel.db") as conn:
            conn.execute("UPDATE meta SET value = '99' WHERE key = ?", (key,))
        with pytest.raises(AutolabelError) as err:
            Store(tmp_path)
        expected = f"{tmp_path / 'autolabel.db'}: written by a newer autolabel ({what} 99); upgrade autolabel"
        assert str(err.value) == expected
        with sqlite3.connect(tmp_path / "autolabel.db") as conn:
            conn.execute("UPDATE meta SET value = '1' WHERE key = ?", (key,))


def test_a_file_that_is_not_a_store_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "autolabel.db").write_bytes(b"this is not a database, just some text " * 40)
    with pytest.raises(AutolabelError) as err:
        Store(tmp_path)
    assert str(err.value) == (f"{tmp_path / 'autolabel.db'}: the run store is damaged (file is not a database); cannot "
                              f"open the run store: recover what it holds with `autolabel recover {tmp_path}` (see "
                              "docs/how-to/recover-a-store.md)")


def test_the_main_connection_stays_in_its_thread_and_each_thread_reuses_its_own(tmp_path: Path) -> None:
    import sqlite3
    import threading

    errors: list[BaseException] = []
    with Store(tmp_path) as store:
        run = store.begin_run("h", {})
        store.commit([_result(0)], run, "h")

        def other() -> None:
            try:
                store.meta("schema_version")
            except sqlite3.ProgrammingError as err:
                errors.append(err)

        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        assert [store.is_done("/in/0.png", "s0", "h"), store.is_done("/in/0.png", "s1", "h")] == [True, False]
        assert len(store._others) == 1  # one connection for this thread, not one per call
    assert len(errors) == 1 and "thread" in str(errors[0])


def test_the_start_of_a_run_that_cannot_be_written_is_named(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.close()
    with pytest.raises(AutolabelError, match=r"cannot record the start of a run \("):
        store.begin_run("h", {})
