"""The Ray executor's worker code, run in this process on a real local Ray (1 CPU, started once for the module): what
:class:`LabelWorker` answers for a batch (its store lookups go to a real :class:`StoreReader` actor), and how the
executor joins a Ray that is already running. In Ray runs (test_ray.py) this code runs inside Ray's worker
processes, where no in-process test reaches it; here each of its columns is checked row by row."""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from localray import local_ray
from runs import make_images, two_model_pipeline

from autolabel import Pipeline
from autolabel.accounting import Account
from autolabel.config import ExecutorSpec
from autolabel.errors import ConfigError
from autolabel.executors.ray import LabelWorker, RayExecutor, StoreReader
from autolabel.intake import sha256
from autolabel.records import from_record, to_record
from autolabel.store import Store


TESTS = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    """A local Ray of 1 CPU for this module's tests (about 4 s to start); its address."""
    with local_ray(num_cpus=1) as address:
        yield address


def rows(out: Path) -> dict[str, tuple]:
    """The store's image rows by name: what a run committed, whatever the order."""
    with Store(out) as store:
        return {r["rel_path"]: (r["sha256"], r["status"], r["reason"], r["width"], r["height"],
                                to_record(from_record(r["labels"])) if r["labels"] else None)
                for r in store.images()}


def test_a_run_on_ray_commits_what_a_local_run_does(ray_address: str, tmp_path: Path) -> None:
    """The driver side in this process (its worker in a Ray actor): 8 images in batches of 1 over blocks of 2 batches
    (8 // (1 × 1 worker × 4)), one unreadable, one failed by the stage. (Resuming, more workers, killed workers:
    test_ray.py.)"""
    make_images(tmp_path / "in", 7)
    (tmp_path / "in" / "broken.png").write_bytes(b"not a png")
    data = two_model_pipeline(tmp_path / "calls") | {"batch_size": 1}
    data["stages"][0]["fail_on"] = "img004"
    local = Pipeline.from_dict(data).run(tmp_path / "in", tmp_path / "local")
    on_ray = Pipeline.from_dict(data | {"executor": {"type": "ray"}}).run(tmp_path / "in", tmp_path / "ray")
    assert on_ray.counts == local.counts == {"seen": 8, "labeled": 6, "skipped": 0, "failed": 2}
    assert rows(tmp_path / "ray") == rows(tmp_path / "local")
    run = json.loads((tmp_path / "ray" / "run.json").read_text())
    executor = run["executor"]
    assert executor["address"] == ray_address and run["stage_images"] == {"first": 6, "second": 6,
                                                                        "score_threshold": 6}
    ((worker, figures),) = executor["per_worker"].items()
    assert worker.startswith(socket.gethostname() + ":") and figures["batches"] == 8 and figures["images"] == 8
    assert 0 < executor["first_result_seconds"] <= run["seconds"]


def test_the_executor_joins_a_running_ray_and_leaves_it_running(ray_address: str) -> None:
    import ray

    for address in (None, "auto"):  # a Ray already running in this process is joined, whatever the address says
        executor = RayExecutor(ExecutorSpec(type="ray", address=address))
        assert executor._connect(ray) is False  # not started here: not the executor's to stop
        assert executor.address == ray_address
    executor = RayExecutor(ExecutorSpec(type="ray"))
    pipeline = Pipeline.from_dict(two_model_pipeline(Path(os.devnull)))
    assert executor.run(pipeline, None, [], None, None, Account()) is False  # nothing to label
    assert ray.is_initialized() and executor.address == ray_address  # the caller's Ray still runs


def test_a_worker_answers_each_image_of_its_batch_in_order_with_what_the_driver_commits(
    ray_address: str, tmp_path: Path
) -> None:
    """One batch with an image already done, a copy of it under another name (its outputs cached), two to label,
    and four that fail before any stage: not an image, over max_file_bytes (not read), over max_image_pixels, gone."""
    import ray

    make_images(tmp_path / "in", 3)
    shutil.copy(tmp_path / "in" / "img000.png", tmp_path / "in" / "copy.png")
    (tmp_path / "in" / "broken.png").write_bytes(b"not a png")
    noise = np.random.default_rng(0).integers(0, 256, (120, 120, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "in" / "heavy.png")  # ~43 kB: over 20,000 bytes
    Image.fromarray(np.zeros((100, 100, 3), np.uint8)).save(tmp_path / "in" / "wide.png")  # ~100 bytes, 10,000 px
    calls = tmp_path / "calls"
    data = two_model_pipeline(calls) | {"max_file_bytes": 20_000, "max_image_pixels": 5_000, "decode_workers": 3}
    local = Pipeline.from_dict(data)
    local.run(tmp_path / "in" / "img000.png", tmp_path / "out")  # img000 is done, its model outputs cached
    with Store(tmp_path / "out") as store:
        (stored,) = list(store.images())
    calls.with_suffix(".first").unlink()
    reader = ray.remote(StoreReader).options(num_cpus=0).remote(str(tmp_path / "out"), local.spec.hash)
    try:
        built = time.time()
        worker = LabelWorker(local.spec.raw, reader)
        assert built <= worker.ready_at <= time.time()  # when its start-up ended (the models load on first use)
        assert worker.fatal is None and worker.name == f"{socket.gethostname()}:{os.getpid()}"
        assert worker.threads._max_workers == 3  # the decoding threads: as many as decode_workers says
        names = ["img000.png", "copy.png", "img001.png", "broken.png", "heavy.png", "wide.png", "gone.png",
                 "img002.png"]
        paths = [str(tmp_path / "in" / n) for n in names]
        batch = {"index": np.array([7, 3, 9, 1, 4, 0, 2, 5]), "path": np.array([os.fsencode(p) for p in paths]),
                 "rel_path": np.array([os.fsencode(n) for n in names])}
        out = worker(batch)
        again = worker(batch | {"index": np.array([0, 1, 2, 3, 4, 5, 6, 7])})  # a second batch of the same images
    finally:
        ray.kill(reader)

    assert out["index"] == [7, 3, 9, 1, 4, 0, 2, 5] and all(type(i) is int for i in out["index"])
    assert out["status"] == ["skipped", "done", "done", "failed", "failed", "failed", "failed", "done"]
    read = {n: sha256((tmp_path / "in" / n).read_bytes()) for n in names if n not in ("heavy.png", "gone.png")}
    assert out["sha256"] == [read.get(n, "") for n in names]  # the unread files have none
    assert out["width"] == [-1, 30, 31, -1, -1, -1, -1, 32] and out["height"] == [-1, 20, 21, -1, -1, -1, -1, 22]
    reasons = dict(zip(names, out["reason"]))
    assert [reasons[n] for n in ("img000.png", "copy.png", "img001.png", "img002.png")] == ["", "", "", ""]
    assert reasons["broken.png"].startswith("not an image") and reasons["gone.png"] == "file not found"
    assert "43,393 bytes exceeds max_file_bytes 20,000" in reasons["heavy.png"]
    assert "10,000 pixels exceeds max_image_pixels 5,000" in reasons["wide.png"]

    assert [x != "" for x in out["labels"]] == [False, True, True, False, False, False, False, True]  # "": none
    labels = [json.loads(x) if x else None for x in out["labels"]]
    # the copy: its stages' outputs restored from the cache of img000's content (the stages saw only the new two)
    assert to_record(from_record(labels[1])) == to_record(from_record(stored["labels"]))
    assert calls.with_suffix(".first").read_text().split() == [paths[2], paths[7]] * 2  # in both batches
    assert [labels[k]["boxes"]["data"]["stage"] for k in (2, 7)] == [["first", "second"]] * 2
    assert labels[2]["boxes"]["xyxy"][0] == [7.75, 5.25, 23.25, 15.75]  # img001 is 31 × 21
    # the outputs to cache: each stage's of the images labeled here, under the stage's key; none for the rest
    cache = [json.loads(x) for x in out["cache"]]
    keys = [k for k in local.spec.stage_keys if k is not None]
    assert [[key for key, _ in c] for c in cache] == [[], [], keys, [], [], [], [], keys]
    first, second = (record for _, record in cache[7])
    assert first["boxes"]["data"]["stage"] == ["first"] and second == labels[7]

    stats = [json.loads(s) if s else None for s in out["stats"]]
    assert stats[1:] == [None] * 7  # the batch's account rides on its first row only
    account = stats[0]
    assert account["worker"] == worker.name and account["images"] == 8 and account["ready_at"] == worker.ready_at
    assert account["stage_images"] == {"first": 2, "second": 2, "score_threshold": 3}
    assert set(account["clock"]) >= {"read", "store lookup", "decode"} and min(account["clock"].values()) > 0
    assert account["seconds"] >= account["clock"]["store lookup"] > 0 and account["cpu_seconds"] > 0
    assert all(account["seconds"] >= account["clock"][k] for k in ("read", "decode"))  # parts of the batch's time

    assert json.loads(again["stats"][0])["stage_images"] == account["stage_images"]  # the account is per batch
    assert again["status"] == out["status"] and again["index"] == list(range(8))


def test_workers_the_local_ray_cannot_place_are_refused_naming_the_resource_and_its_key(ray_address: str) -> None:
    import ray

    RayExecutor(ExecutorSpec(type="ray", workers=2, cpus_per_worker=0.5))._check_resources(ray)  # 1 CPU: just fits
    with pytest.raises(ConfigError) as err:
        RayExecutor(ExecutorSpec(type="ray", workers=2))._check_resources(ray)
    assert err.value.problems == ["executor.workers: 2 workers x 1 CPU (cpus_per_worker) need 2 CPUs; this machine's "
                                  "Ray has 1 (lower workers or cpus_per_worker)"]
    with pytest.raises(ConfigError) as err:
        RayExecutor(ExecutorSpec(type="ray", cpus_per_worker=0.5, gpus_per_worker=0.5))._check_resources(ray)
    assert err.value.problems == ["executor.workers: 1 workers x 0.5 GPU (gpus_per_worker) need 0.5 GPUs; this "
                                  "machine's Ray has 0 (lower workers or gpus_per_worker)"]
