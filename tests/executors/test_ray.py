"""The Ray executor on a real local Ray cluster (2 CPUs, loopback), shared by the tests of this module.

Each test compares a Ray run with what the local executor writes: the store is the one source of truth, so
equal stores and exports mean resume, caching, history and push work the same after a Ray run.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from localray import local_ray
from runs import n_calls, two_model_pipeline
from runs import coco_by_file, done_count, make_images, pipeline_dict
from tiny_models import noise_image, tiny

from autolabel import Pipeline
from autolabel.cli import main
from autolabel.errors import ExitCode

TESTS = Path(__file__).resolve().parents[1]
PIPELINES = TESTS.parent / "pipelines"
WORKER_TITLE = b"MapBatches(LabelWorker)"  # in the process title Ray gives the executor's actors


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A local Ray on loopback; its address."""
    with local_ray(num_cpus=2, _node_ip_address="127.0.0.1") as address:
        yield address


def on_ray(data: dict, workers: int = 2) -> dict:
    return data | {"executor": {"type": "ray", "workers": workers}}


def stored(out: Path) -> tuple[dict, dict]:
    """The store's content, independent of commit order: image rows by path, cached stage outputs by key."""
    with sqlite3.connect(out / "autolabel.db") as conn:
        images = {r[0]: [*r[1:-1], json.loads(r[-1]) if r[-1] else None] for r in conn.execute(
            "SELECT rel_path, sha256, width, height, status, reason, pipeline_hash, labels FROM images")}
        cache = {(r[0], r[1]): json.loads(r[2]) for r in conn.execute("SELECT sha256, key, labels FROM stage_outputs")}
    return images, cache


def differences(a: object, b: object, where: str = "") -> list[str]:
    """Where ``a`` and ``b`` differ; floats agree to 1e-5 relative. A model's float32 scores change in their last
    bits with the batch an image is in and the threads torch uses (a Ray actor gets ``cpus_per_worker``)."""
    if isinstance(a, float) and isinstance(b, float):
        return [] if math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-7) else [f"{where}: {a} != {b}"]
    if isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys():
        return [d for k in a for d in differences(a[k], b[k], f"{where}.{k}")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{where}[{i}]")]
    return [] if a == b else [f"{where}: {str(a)[:80]} != {str(b)[:80]}"]


def annotations_by_file(coco: Path) -> dict[str, list]:
    """COCO annotations per image file, without ids (ids follow commit order, which Ray does not fix)."""
    data = json.loads(coco.read_text())
    names = {im["id"]: (im["file_name"], im["width"], im["height"]) for im in data["images"]}
    out: dict = {name: [] for name in names.values()}
    for a in data["annotations"]:
        out[names[a["image_id"]]].append({k: v for k, v in a.items() if k not in ("id", "image_id")})
    return out


@pytest.mark.slow
def test_shipped_pipeline_on_ray_equals_local_then_labels_only_new_images(cluster, tmp_path) -> None:
    (tmp_path / "in").mkdir()
    for i in range(6):
        noise_image(64, 48, seed=i).save(tmp_path / "in" / f"img{i}.png")
    (tmp_path / "in" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    overrides = [f"models.detector.id={tiny('grounding_dino')}", f"models.segmenter.id={tiny('sam2')}",
                 "stages.0.box_threshold=0.0", "stages.0.text_threshold=0.0", "batch_size=2"]
    yaml_file = PIPELINES / "grounding-sam2.yaml"
    local = Pipeline.from_yaml(yaml_file, overrides).run(tmp_path / "in", tmp_path / "local")
    ray_run = Pipeline.from_yaml(yaml_file, [*overrides, "executor.type=ray", "executor.workers=2"]).run(
        tmp_path / "in", tmp_path / "ray")

    assert ray_run.status == local.status == "partial"
    assert ray_run.counts == local.counts == {"seen": 7, "labeled": 6, "skipped": 0, "failed": 1}
    (failure,) = ray_run.failures
    assert failure == local.failures[0] and failure["path"].endswith("broken.png")
    assert differences(stored(tmp_path / "ray"), stored(tmp_path / "local")) == []  # every row and cached output
    ray_coco = annotations_by_file(tmp_path / "ray" / "coco.json")
    assert differences(ray_coco, annotations_by_file(tmp_path / "local" / "coco.json")) == []
    assert len(ray_coco) == 6 and sum(map(len, ray_coco.values())) > 0
    run = json.loads((tmp_path / "ray" / "run.json").read_text())
    executor = run["executor"]
    assert executor["type"] == "ray" and executor["workers"] == 2 and executor["address"] == cluster
    assert sum(w["images"] for w in executor["per_worker"].values()) == 7
    # start-up (connecting, placing actors, the first batch) is recorded once, as part of the run's time
    assert 0 < executor["first_result_seconds"] <= run["seconds"]
    assert run["stage_images"] == {"boxes": 6, "masks": 6}  # counted in the workers, reported by the driver
    vision = run["vision_passes"]["segmenter"]  # so are the vision passes: one per image (Grounding DINO: not shared)
    assert (vision["images"], vision["passes"], vision["requests"], vision["per_image"]) == (6, 6, 6, 1.0)
    assert json.loads((tmp_path / "local" / "run.json").read_text())["executor"] == {"type": "local"}

    noise_image(64, 48, seed=10).save(tmp_path / "in" / "new.png")
    more = Pipeline.from_yaml(yaml_file, [*overrides, "executor.type=ray"]).run(tmp_path / "in", tmp_path / "ray")
    assert more.counts == {"seen": 8, "labeled": 1, "skipped": 6, "failed": 1}  # the broken file is tried again
    assert json.loads((tmp_path / "ray" / "run.json").read_text())["stage_images"] == {"boxes": 1, "masks": 1}
    Pipeline.from_yaml(yaml_file, overrides).run(tmp_path / "in", tmp_path / "local")
    assert differences(stored(tmp_path / "ray"), stored(tmp_path / "local")) == []


@pytest.mark.slow
def test_refiltering_on_ray_restores_the_cached_model_outputs_as_the_local_executor_does(cluster, tmp_path) -> None:
    calls = tmp_path / "calls"
    make_images(tmp_path / "in", 6)
    Pipeline.from_dict(two_model_pipeline(calls, threshold=0.0)).run(tmp_path / "in", tmp_path / "ray")
    shutil.copytree(tmp_path / "ray", tmp_path / "local")
    refilter = two_model_pipeline(calls, threshold=0.5)
    summary = Pipeline.from_dict(on_ray(refilter)).run(tmp_path / "in", tmp_path / "ray")
    assert summary.counts["labeled"] == 6
    assert n_calls(calls, "first") == 6 and n_calls(calls, "second") == 6  # no model ran on Ray: all from the cache
    assert summary.data["stage_images"] == {"score_threshold": 6}
    Pipeline.from_dict(refilter).run(tmp_path / "in", tmp_path / "local")
    assert differences(stored(tmp_path / "ray"), stored(tmp_path / "local")) == []
    assert coco_by_file(tmp_path / "ray" / "coco.json") == coco_by_file(tmp_path / "local" / "coco.json")


def _worker_pids() -> list[int]:
    """Processes of the executor's actors, found by the title Ray gives them."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if WORKER_TITLE in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


@pytest.mark.slow
def test_a_worker_killed_mid_run_is_replaced_and_nothing_is_lost_or_doubled(cluster, tmp_path) -> None:
    make_images(tmp_path / "in", 32)
    data = pipeline_dict(sleep=0.15)
    out = tmp_path / "ray"
    killed: list[int] = []

    def kill_one_worker_after_a_few_batches() -> None:
        deadline = time.time() + 60
        while time.time() < deadline and not killed:
            pids = _worker_pids()
            if pids and done_count(out / "autolabel.db") >= 8:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one_worker_after_a_few_batches, daemon=True)
    killer.start()
    summary = Pipeline.from_dict(on_ray(data)).run(tmp_path / "in", out)
    killer.join()
    assert killed, "no worker was killed"
    assert summary.status == "ok"
    assert summary.counts == {"seen": 32, "labeled": 32, "skipped": 0, "failed": 0}
    with sqlite3.connect(out / "autolabel.db") as conn:
        assert conn.execute("SELECT COUNT(*), COUNT(DISTINCT path) FROM images").fetchone() == (32, 32)
    Pipeline.from_dict(data).run(tmp_path / "in", tmp_path / "local")
    assert coco_by_file(out / "coco.json") == coco_by_file(tmp_path / "local" / "coco.json")
    workers = json.loads((out / "run.json").read_text())["executor"]["per_worker"]
    assert any(name.endswith(f":{killed[0]}") for name in workers) or len(workers) >= 2


def _driver_after_commits(
    tmp_path: Path, cluster: str, env: dict[str, str], db: Path, n: int, *args: str
) -> subprocess.Popen:
    """`autolabel run tmp_path/p.yaml` on the cluster in a subprocess, returned once ``n`` images are committed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "autolabel", "run", str(tmp_path / "p.yaml"), "-i", str(tmp_path / "in"),
         "-o", str(tmp_path / "out"), "--no-progress", "--ray-address", cluster, *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.time() + 90
    while done_count(db) < n:
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "the run made no progress"
        time.sleep(0.05)
    return proc


@pytest.mark.slow
def test_driver_killed_with_kill_9_then_resumed_on_ray_equals_an_uninterrupted_run(
    cluster, tmp_path, subprocess_env
) -> None:
    names = make_images(tmp_path / "in", 32)
    data = pipeline_dict(sleep=0.2, fail_on="img013")
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(data))
    db = tmp_path / "out" / "autolabel.db"
    proc = _driver_after_commits(tmp_path, cluster, subprocess_env, db, 4)
    proc.kill()
    proc.wait(timeout=30)
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    committed = done_count(db)
    assert 4 <= committed < 31

    resumed = Pipeline.from_dict(on_ray(data)).run(tmp_path / "in", tmp_path / "out")
    assert resumed.status == "partial"
    assert resumed.counts["skipped"] == committed and resumed.counts["labeled"] == 31 - committed
    Pipeline.from_dict(data).run(tmp_path / "in", tmp_path / "clean")
    resumed_coco = coco_by_file(tmp_path / "out" / "coco.json")
    assert resumed_coco == coco_by_file(tmp_path / "clean" / "coco.json")
    assert sorted(resumed_coco) == sorted(n for n in names if n != "img013.png")
    assert all(len(v) == 1 for v in resumed_coco.values())


@pytest.mark.slow
def test_ctrl_c_on_the_driver_commits_stops_the_cluster_work_and_resume_finishes(
    cluster, tmp_path, subprocess_env
) -> None:
    make_images(tmp_path / "in", 40)
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(pipeline_dict(sleep=0.3)))
    db = tmp_path / "out" / "autolabel.db"
    proc = _driver_after_commits(tmp_path, cluster, subprocess_env, db, 4, "--set", "executor.workers=2")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == ExitCode.INTERRUPTED, err
    assert "run the same command again to resume" in err and "Traceback" not in err
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["status"] == "interrupted" and run["counts"]["labeled"] == done_count(db) < 40
    deadline = time.time() + 30
    while _worker_pids():  # the dataset's actors end with the driver's run
        assert time.time() < deadline, "the cluster still runs the stopped run's workers"
        time.sleep(0.2)
    resumed = Pipeline.from_dict(on_ray(pipeline_dict(sleep=0.3))).run(tmp_path / "in", tmp_path / "out")
    assert resumed.status == "ok" and resumed.counts["skipped"] == run["counts"]["labeled"]
    assert len(coco_by_file(tmp_path / "out" / "coco.json")) == 40


def test_a_worker_answers_one_row_per_image_of_its_batch_in_its_order(cluster, tmp_path) -> None:
    """LabelWorker called here, in this process, with a real StoreReader actor: a done image comes back skipped,
    a labeled one with its record, an image a stage fails on and unreadable files as failed with their reasons."""
    import numpy as np
    import ray

    from autolabel.executors.ray import LabelWorker, StoreReader
    from autolabel.intake import sha256

    make_images(tmp_path / "in", 3)
    (tmp_path / "in" / "broken.png").write_bytes(b"not a png")
    data = pipeline_dict(fail_on="img002")
    local = Pipeline.from_dict(data)
    local.run(tmp_path / "in" / "img000.png", tmp_path / "out")  # img000 is done already
    reader = ray.remote(StoreReader).options(num_cpus=0).remote(str(tmp_path / "out"), local.spec.hash)
    worker = LabelWorker(local.spec.raw, reader)
    names = ["img000.png", "img001.png", "img002.png", "broken.png", "gone.png"]
    batch = {"index": np.array([7, 3, 9, 1, 4]), "path": np.array([str(tmp_path / "in" / n) for n in names]),
             "rel_path": np.array(names)}
    out = worker(batch)
    assert out["index"] == [7, 3, 9, 1, 4]
    assert out["status"] == ["skipped", "done", "failed", "failed", "failed"]
    assert out["sha256"][:4] == [sha256((tmp_path / "in" / n).read_bytes()) for n in names[:4]]
    assert out["sha256"][4] == ""
    assert (out["width"], out["height"]) == ([-1, 31, -1, -1, -1], [-1, 21, -1, -1, -1])
    reasons = out["reason"]
    assert reasons[:2] == ["", ""] and reasons[2] == "stage 'box': RuntimeError: cannot label img002.png"
    assert reasons[3] and reasons[4] and "\n" not in reasons[3] + reasons[4]
    labels = json.loads(out["labels"][1])
    assert labels["boxes"]["xyxy"] == [[7.75, 5.25, 23.25, 15.75]] and out["labels"][::2] == ["", "", ""]
    assert out["cache"] == ["[]"] * 5 and out["stats"][1:] == [""] * 4
    stats = json.loads(out["stats"][0])
    assert stats["images"] == 5 and stats["worker"].endswith(f":{os.getpid()}")
    assert stats["stage_images"] == {"box": 1} and set(stats["clock"]) >= {"read", "store lookup", "decode"}
    assert stats["seconds"] >= stats["clock"]["read"] and stats["ready_at"] == worker.ready_at
    again = worker(batch)  # the stage's own counters are per batch, not since the worker started
    assert json.loads(again["stats"][0])["stage_images"] == {"box": 1}
    ray.kill(reader)


def test_more_workers_than_the_local_ray_can_place_is_a_config_error(cluster, tmp_path, capsys) -> None:
    make_images(tmp_path / "in", 2)
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(on_ray(pipeline_dict(), workers=3)))
    code = main(["run", str(tmp_path / "p.yaml"), "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"),
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == ExitCode.CONFIG, err
    assert "executor.workers: 3 workers x 1 CPU (cpus_per_worker) need 3 CPUs; this machine's Ray has 2" in err
    assert "Traceback" not in err


def test_without_executor_ray_nothing_imports_ray(tmp_path, subprocess_env) -> None:
    make_images(tmp_path / "in", 3)
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(pipeline_dict()))
    script = (
        "import sys; from autolabel.cli import main\n"
        f"code = main(['run', {str(tmp_path / 'p.yaml')!r}, '-i', {str(tmp_path / 'in')!r}, "
        f"'-o', {str(tmp_path / 'out')!r}, '--no-progress'])\n"
        "print(code, 'ray' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=subprocess_env,
                         timeout=120)
    assert out.stdout.split() == ["0", "False"], out.stderr


def test_ray_address_with_the_local_executor_is_a_config_error(tmp_path, capsys) -> None:
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(pipeline_dict()))
    code = main(["run", str(tmp_path / "p.yaml"), "-i", str(tmp_path), "--executor", "local", "--ray-address", "auto"])
    assert code == ExitCode.CONFIG
    assert capsys.readouterr().err.strip() == (
        "autolabel: error: --ray-address: needs --executor ray (or leave --executor out)")


def test_a_model_that_cannot_load_in_a_worker_is_fatal_with_one_line(cluster, tmp_path, capsys) -> None:
    make_images(tmp_path / "in", 2)
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(on_ray({
        "models": {"m": {"type": "plugins:BrokenModel", "id": "/weights/missing"}},
        "stages": [{"type": "plugins:UsesModel", "model": "m"}],
    }, workers=1)))
    code = main(["run", str(tmp_path / "p.yaml"), "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"),
                 "--no-progress"])
    assert code == ExitCode.FATAL
    ours = [line for line in capsys.readouterr().err.splitlines() if line.startswith("autolabel:")]
    assert ours == ["autolabel: error: model 'm' (/weights/missing): cannot load: OSError: "
                    "no file named model.safetensors in /weights/missing"]
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["status"] == "failed" and "cannot load" in run["error"] and run["executor"]["type"] == "ray"


def test_the_executor_is_not_part_of_the_pipeline_hash_and_its_keys_are_checked() -> None:
    from autolabel.config import parse
    from autolabel.errors import ConfigError

    local, ray = parse(pipeline_dict()), parse(on_ray(pipeline_dict()))
    assert (ray.hash, ray.stage_keys) == (local.hash, local.stage_keys)  # done locally = done on Ray
    with pytest.raises(ConfigError) as err:
        parse(pipeline_dict() | {"executor": {"type": "ray", "worker": 2, "gpus_per_worker": -1}})
    assert sorted(err.value.problems) == [
        "executor.gpus_per_worker: input should be greater than or equal to 0 (got -1)",
        "executor.worker: unknown key (known: type, address, workers, cpus_per_worker, gpus_per_worker)",
    ]


@pytest.mark.slow
def test_a_name_that_is_not_utf8_is_labeled_on_ray_as_locally(cluster, tmp_path) -> None:
    """Arrow strings must be UTF-8; a file name need not be (issue 20): the executor carries names as bytes."""
    make_images(tmp_path / "in", 3)
    latin1 = os.path.join(os.fsencode(tmp_path / "in"), b"caf\xe9.png")
    with open(latin1, "wb") as f:
        f.write((tmp_path / "in" / "img001.png").read_bytes())
    ray = Pipeline.from_dict(on_ray(pipeline_dict())).run(tmp_path / "in", tmp_path / "ray")
    local = Pipeline.from_dict(pipeline_dict()).run(tmp_path / "in", tmp_path / "local")
    assert ray.counts == local.counts == {"seen": 4, "labeled": 4, "skipped": 0, "failed": 0}
    assert coco_by_file(tmp_path / "ray" / "coco.json") == coco_by_file(tmp_path / "local" / "coco.json")
    assert os.fsdecode(b"caf\xe9.png") in coco_by_file(tmp_path / "ray" / "coco.json")
