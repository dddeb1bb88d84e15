"""The Ray executor's driver side, in this process: what it commits of the rows its workers return (each image once,
in one call a batch, failures with their reason, skipped ones counted), how worker timings fold into run.json, and
how a worker's error comes back as the same one line. The cluster runs are in test_ray.py."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from runs import make_images, pipeline_dict

from autolabel import Pipeline
from autolabel.accounting import Account
from autolabel.config import ExecutorSpec
from autolabel.errors import AutolabelError, ConfigError, ExitCode
from autolabel.executors.ray import (LabelWorker, RayExecutor, StoreReader, _decode, _fatal, _import_ray,
                                     _read_and_hash, _unwrap)
from autolabel.intake import Source, sha256
from autolabel.store import ImageResult, Store


class Commits:
    """The driver's commit callback, recording each call."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[ImageResult], list, int]] = []

    def __call__(self, results: list[ImageResult], cache: list, skipped: int = 0) -> None:
        self.calls.append((results, cache, skipped))


def stats(worker: str = "host:1", images: int = 2, ready_at: float = 1000.5, **extra: object) -> str:
    return json.dumps({"worker": worker, "images": images, "seconds": 0.25, "cpu_seconds": 0.125,
                       "ready_at": ready_at, "clock": {"read": 0.5, "decode": 0.25},
                       "stage_seconds": {"box": 0.75}, "stage_images": {"box": images}, "vision": {}} | extra)


def row(index: int, status: str = "done", **kw: object) -> dict:
    labels = {"width": 8, "height": 6, "boxes": {}} if status == "done" else None
    return {"index": index, "status": status, "sha256": kw.get("sha256", f"{index:064x}"),
            "width": kw.get("width", 8 if status == "done" else -1), "height": kw.get("height", 6 if status == "done"
                                                                                    else -1),
            "reason": kw.get("reason", ""), "labels": json.dumps(labels) if labels else "",
            "cache": kw.get("cache", "[]"), "stats": kw.get("stats", "")}


@pytest.fixture
def executor() -> RayExecutor:
    ex = RayExecutor(ExecutorSpec(type="ray", workers=3, cpus_per_worker=0.5))
    ex._started = 1000.0
    return ex


SOURCES = [Source(f"/in/img{i}.png", f"img{i}.png") for i in range(4)]


def test_a_batch_is_committed_once_each_image_once(executor: RayExecutor) -> None:
    commit, account = Commits(), Account()
    committed = bytearray(len(SOURCES))
    cached = json.dumps([["box:abc", {"boxes": {}}]])
    rows = [row(2, cache=cached, stats=stats()), row(0, "failed", sha256="", reason="cannot decode"),
            row(3, "skipped"), row(2, cache=cached)]  # image 2 again (a retried batch): committed once
    executor._commit(rows, SOURCES, committed, commit, account)
    ((results, cache, skipped),) = commit.calls
    assert [(r.path, r.rel_path, r.status) for r in results] == [("/in/img2.png", "img2.png", "done"),
                                                                ("/in/img0.png", "img0.png", "failed")]
    done, failed = results
    assert (done.sha256, done.width, done.height, done.reason, done.labels) == (
        f"{2:064x}", 8, 6, None, {"width": 8, "height": 6, "boxes": {}})
    assert (failed.sha256, failed.width, failed.height, failed.reason, failed.labels) == (
        None, None, None, "cannot decode", None)
    assert cache == [(f"{2:064x}", "box:abc", {"boxes": {}})] and skipped == 1
    assert list(committed) == [1, 0, 1, 1]
    # the same rows again (Ray retried the whole batch): nothing new, but still one commit call (an empty batch)
    executor._commit(rows[:3], SOURCES, committed, commit, account)
    assert commit.calls[1] == ([], [], 0)


def test_worker_timings_fold_into_the_runs_stage_times_and_per_worker_figures(executor: RayExecutor) -> None:
    account = Account()
    account.clock["workers: read"] = 1.0
    commit = Commits()
    executor._commit([row(0, stats=stats()), row(1)], SOURCES, bytearray(4), commit, account)
    executor._commit([row(2, stats=stats("host:2", images=1, ready_at=1002.0))], SOURCES, bytearray(4), commit,
                     account)
    executor._commit([row(3, stats=stats())], SOURCES, bytearray(4), commit, account)
    assert account.stage_seconds["box"] == pytest.approx(2.25) and account.stage_images["box"] == 5
    assert account.clock == {"workers: read": 2.5, "workers: decode": 0.75}
    assert executor.per_worker == {
        "host:1": Counter(batches=2, images=4, seconds=0.5, cpu_seconds=0.25, ready_after_seconds=0.5),
        "host:2": Counter(batches=1, images=1, seconds=0.25, cpu_seconds=0.125, ready_after_seconds=2.0)}
    executor.first_result_s = 1.23456
    executor.address = "127.0.0.1:6379"
    executor.per_worker["host:1"]["seconds"] = 0.123456
    assert executor.describe() == {
        "type": "ray", "address": "127.0.0.1:6379", "workers": 3, "cpus_per_worker": 0.5, "gpus_per_worker": 0.0,
        "first_result_seconds": 1.235,
        "per_worker": {"host:1": {"batches": 2, "images": 4, "seconds": 0.1235, "cpu_seconds": 0.25,
                                  "ready_after_seconds": 0.5},
                       "host:2": {"batches": 1, "images": 1, "seconds": 0.25, "cpu_seconds": 0.125,
                                  "ready_after_seconds": 2.0}}}
    assert RayExecutor(ExecutorSpec(type="ray")).describe()["first_result_seconds"] is None


def test_a_fatal_row_ends_the_run_with_the_workers_error_before_anything_is_committed(executor: RayExecutor) -> None:
    commit = Commits()
    fatal = json.dumps({"exit_code": int(ExitCode.FATAL), "problems": ["model 'm': cannot load", "(really)"]})
    with pytest.raises(AutolabelError) as err:
        executor._commit([row(0), row(1, "fatal", stats=fatal)], SOURCES, bytearray(4), commit, Account())
    assert str(err.value) == "model 'm': cannot load (really)" and err.value.exit_code == ExitCode.FATAL
    assert commit.calls == []
    config = _fatal({"exit_code": int(ConfigError.exit_code), "problems": ["a: bad", "b: worse"]})
    assert isinstance(config, ConfigError) and config.problems == ["a: bad", "b: worse"]


def test_a_worker_that_cannot_build_the_pipeline_answers_fatal_rows_for_every_image() -> None:
    worker = LabelWorker({"stages": [{"type": "no_such_module:Stage"}]}, reader=None)
    assert isinstance(worker.fatal, AutolabelError)
    out = worker({"index": np.array([4, 9]), "path": np.array(["/a", "/b"]), "rel_path": np.array(["a", "b"])})
    assert out["index"] == [4, 9] and out["status"] == ["fatal", "fatal"]
    assert out["sha256"] == ["", ""] and out["width"] == out["height"] == [-1, -1]
    assert out["labels"] == ["", ""] and out["cache"] == ["[]", "[]"] and out["reason"] == ["", ""]
    report = json.loads(out["stats"][0])
    assert report["exit_code"] == int(worker.fatal.exit_code) and report["problems"] == worker.fatal.problems
    assert _fatal(report).problems == worker.fatal.problems  # the driver raises the same lines


def test_ray_errors_become_the_autolabel_error_inside_or_one_line() -> None:
    inner = ConfigError(["x: bad"])
    try:
        try:
            raise inner
        except ConfigError as err:
            raise RuntimeError("ray wrapper\nTraceback ...") from err
    except RuntimeError as wrapped:
        found = _unwrap(wrapped)
    assert isinstance(found, ConfigError) and found.problems == ["x: bad"] and found is not inner

    class RayTaskError(Exception):  # Ray keeps the original as .cause
        def __init__(self, cause: BaseException) -> None:
            super().__init__("remote traceback\n  lines")
            self.cause = cause

    model = AutolabelError("model 'm':\n   cannot load")
    model.exit_code = ExitCode.FATAL
    found = _unwrap(RayTaskError(RayTaskError(model)))
    assert type(found) is AutolabelError and str(found) == "model 'm': cannot load"
    assert found.exit_code == ExitCode.FATAL
    plain = _unwrap(ValueError("x" * 600 + "\n tail"))
    assert str(plain) == "Ray: ValueError: " + "x" * 500 + "…"  # the first 500 characters of one line
    loop = RayTaskError(ValueError("a"))
    loop.cause.__cause__ = loop  # a cycle ends the walk
    assert str(_unwrap(loop)) == "Ray: RayTaskError: remote traceback lines"


def test_reading_and_decoding_in_a_worker_give_reasons_not_exceptions(tmp_path: Path) -> None:
    make_images(tmp_path, 1)
    good = next(tmp_path.glob("*.png"))
    data, digest, reason = _read_and_hash(Source(str(good), good.name), 10**8)
    assert data == good.read_bytes() and digest == sha256(data) and reason is None
    assert _read_and_hash(Source(str(tmp_path / "gone.png"), "gone.png"), 10**8)[:2] == (None, None)
    assert _read_and_hash(Source(str(tmp_path / "gone.png"), "gone.png"), 10**8)[2]
    big = _read_and_hash(Source(str(good), good.name), len(data) - 1)  # a byte over the limit: not read
    assert big[:2] == (None, None) and "exceeds max_file_bytes" in big[2]
    image, why = _decode(data, 10**8)
    assert image is not None and image.size == (30, 20) and why is None
    assert _decode(b"not an image", 10**8)[0] is None and _decode(b"not an image", 10**8)[1]
    assert _decode(data, 100) == (None, _decode(data, 100)[1]) and "pixels" in _decode(data, 100)[1]


def test_without_ray_installed_the_executor_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError) as err:
        _import_ray()
    assert err.value.problems == ["executor.type: ray needs Ray: pip install 'autolabel[ray]'"]


def test_ray_client_addresses_are_refused_and_a_cluster_address_skips_the_local_resource_check() -> None:
    import ray

    assert not ray.is_initialized()
    executor = RayExecutor(ExecutorSpec(type="ray", address="ray://head:10001"))
    with pytest.raises(ConfigError) as err:
        executor._connect(ray)
    assert err.value.problems[0].startswith("executor.address: ray://head:10001: Ray Client is not supported")
    assert err.value.problems[0].endswith("(the driver writes the store); run autolabel on the cluster, e.g. with ray "
                                          "job submit, and use address: auto")
    RayExecutor(ExecutorSpec(type="ray", address="auto", workers=10_000))._check_resources(None)  # asks nothing


def test_the_store_reader_says_what_is_done_and_returns_cached_outputs_of_the_rest(tmp_path: Path) -> None:
    make_images(tmp_path / "in", 3)
    pipeline = Pipeline.from_dict(pipeline_dict())
    pipeline.run(tmp_path / "in", tmp_path / "out")
    with Store(tmp_path / "out") as store:
        rows = {r["rel_path"]: (r["path"], r["sha256"]) for r in store.images(labels=False)}
    (path0, sha0), (path1, sha1) = rows["img000.png"], rows["img001.png"]
    reader = StoreReader(str(tmp_path / "out"), pipeline.spec.hash)
    paths, shas = [path0, path1, "/elsewhere.png", "/unread.png"], [sha0, "f" * 64, sha1, None]
    done, outputs = reader.lookup(paths, shas, ["box:key"])
    assert done == [True, False, False, False]  # the same path with other content, or another path: not done
    assert set(outputs.hits) == {"f" * 64, sha1}  # the cached outputs asked for: of the contents not done
    assert reader.lookup(paths, shas, [None])[1].hits == {}  # no cached stage: nothing read
    other = StoreReader(str(tmp_path / "out"), "another-hash")
    assert other.lookup([path0], [sha0], pipeline.spec.stage_keys)[0] == [False]


def test_a_skipped_image_in_the_middle_of_a_batch_is_counted_and_the_rest_committed(executor: RayExecutor) -> None:
    commit = Commits()
    committed = bytearray(len(SOURCES))
    executor._commit([row(1), row(3, "skipped"), row(0, "skipped"), row(2, "failed", reason="gone")], SOURCES,
                     committed, commit, Account())
    ((results, _, skipped),) = commit.calls
    assert [(r.rel_path, r.status) for r in results] == [("img1.png", "done"), ("img2.png", "failed")]
    assert skipped == 2 and list(committed) == [1, 1, 1, 1]


def test_an_address_ray_cannot_use_is_one_line_that_names_it_and_the_fix() -> None:
    import ray

    assert not ray.is_initialized()
    with pytest.raises(AutolabelError) as err:  # Ray refuses an address without a port at once, before connecting
        RayExecutor(ExecutorSpec(type="ray", address="nohost"))._connect(ray)
    assert str(err.value).startswith("executor.address: cannot start or join nohost (Invalid address format: nohost);")
    assert "`ray start --head`" in str(err.value) and "--ray-address auto" in str(err.value)
    assert not ray.is_initialized()  # nothing was started instead
    with pytest.raises(AutolabelError) as err:  # a long reason is cut to its first 500 characters
        RayExecutor(ExecutorSpec(type="ray", address="h" * 600))._connect(ray)
    assert f"({'Invalid address format: ' + 'h' * 476}…); start a cluster" in str(err.value)


def test_a_run_that_starts_its_own_ray_stops_it_at_the_end() -> None:
    import ray

    assert not ray.is_initialized()
    executor = RayExecutor(ExecutorSpec(type="ray"))  # no address: a local Ray, started here
    try:
        assert executor.run(Pipeline.from_dict(pipeline_dict()), None, [], None, None, Account()) is False
        assert not ray.is_initialized()  # nothing to label: Ray started (its address recorded) and stopped
        assert executor.address is not None and executor.address.rsplit(":", 1)[1].isdigit()
    finally:
        if ray.is_initialized():
            ray.shutdown()
