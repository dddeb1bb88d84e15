"""``autolabel serve`` over HTTP, started as a subprocess on a free loopback port with tiny checkpoints (Grounding DINO
boxes, SAM masks), spoken to with the request bodies Label Studio sends (its ``ml/api_connector.py``: setup,
predict with ``params.context``; smart keypoints as its image editor sends them).

The server's ``/health`` counts what it did (answers from the store, images through the pipeline, vision-encoder
runs, model loads), so the tests can tell an answer from the store from a model call.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread

import httpx
import numpy as np
import pytest
import yaml
from label_studio_sdk.converter.brush import decode_rle
from label_studio_sdk.label_interface import LabelInterface
from lsserver import free_port
from tiny_models import noise_image, tiny

from autolabel.config import ModelSpec
from autolabel.exports.labelstudio import task as export_task
from autolabel.exports.rows import class_ids, image_row
from autolabel.models.sam import Sam
from autolabel import Pipeline
from autolabel.serve.interactive import Interactive
from autolabel.serve.protocol import Prompt
from autolabel.store import Store

SUPPORT = Path(__file__).resolve().parents[1] / "support"
pytestmark = pytest.mark.slow  # every test here talks to a server subprocess

#: a project's own labeling config: control names unlike the export's, a smart keypoint tool for SAM clicks
CONFIG = """<View>
  <Image name="img" value="$photo"/>
  <RectangleLabels name="bbox" toName="img"><Label value="cat"/><Label value="dog"/></RectangleLabels>
  <BrushLabels name="seg" toName="img"><Label value="cat"/><Label value="dog"/></BrushLabels>
  <KeyPointLabels name="kp" toName="img" smart="true"><Label value="cat"/><Label value="dog"/></KeyPointLabels>
</View>"""
BOXES_CONFIG = """<View><Image name="img" value="$photo"/>
  <RectangleLabels name="bbox" toName="img"><Label value="cat"/><Label value="dog"/></RectangleLabels></View>"""
PROJECT = "3.1764600000"  # Label Studio's project uid: "<id>.<created_at timestamp>"


def tiny_pipeline(folder: Path) -> Path:
    """Grounding DINO (every box kept: thresholds 0) then SAM masks, tiny checkpoints copied into ``folder``."""
    models = {}
    for name, kind in (("det", "grounding_dino"), ("seg", "sam")):
        shutil.copytree(tiny(kind), folder / kind, dirs_exist_ok=True)
        models[name] = {"type": kind, "id": str(folder / kind)}
    spec = {"name": "serve-test", "ontology": {"cat": "cat", "dog": "dog"}, "batch_size": 2, "models": models,
            "stages": [{"name": "boxes", "type": "detect", "model": "det", "box_threshold": 0.0,
                        "text_threshold": 0.0},
                       {"name": "masks", "type": "segment", "model": "seg"}]}
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def env() -> dict[str, str]:
    out = dict(os.environ)
    out["PYTHONPATH"] = os.pathsep.join([str(SUPPORT), out.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    for key in ("BASIC_AUTH_USER", "BASIC_AUTH_PASS", "LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY"):
        out.pop(key, None)
    return out


class Served:
    """An ``autolabel serve`` subprocess; ``stop()`` sends SIGTERM and waits."""

    def __init__(self, args: list[str], log: Path, extra_env: dict[str, str] | None = None, timeout: float = 300):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "autolabel", "serve", *args, "--port", str(self.port)],
                                         env=env() | (extra_env or {}), stdout=out, stderr=subprocess.STDOUT)
        self.loading_seen = False
        deadline = time.monotonic() + timeout
        auth = self.auth(extra_env)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"autolabel serve exited with {self.proc.returncode}: {self.log_text()[-2000:]}")
            try:
                r = httpx.get(self.url + "/health", timeout=2, auth=auth)
                if r.status_code == 200:
                    return
                self.loading_seen |= r.status_code == 503 and r.json()["status"] == "LOADING"
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"autolabel serve was not ready within {timeout} s: {self.log_text()[-2000:]}")

    @staticmethod
    def auth(extra_env: dict[str, str] | None) -> tuple[str, str] | None:
        e = extra_env or {}
        return (e["BASIC_AUTH_USER"], e["BASIC_AUTH_PASS"]) if "BASIC_AUTH_USER" in e else None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        return self.proc.returncode


def predict_body(tasks: list[dict], context: dict | None = None, config: str = CONFIG) -> dict:
    """A predict body exactly as Label Studio's MLApi._prep_prediction_req builds it."""
    return {"tasks": tasks, "project": PROJECT, "label_config": config,
            "params": {"login": None, "password": None, "context": context}}


def ls_task(task_id: int, ref: str) -> dict:
    """A task as Label Studio's TaskSimpleSerializer sends it."""
    return {"id": task_id, "data": {"photo": ref}, "meta": {}, "created_at": "2026-12-01T20:00:00.000000Z",
            "updated_at": "2026-12-01T20:00:00.000000Z", "is_labeled": False, "overlap": 1, "inner_id": task_id,
            "total_annotations": 0, "cancelled_annotations": 0, "total_predictions": 0, "comment_count": 0,
            "unresolved_comment_count": 0, "last_comment_updated_at": None, "project": 3, "updated_by": None,
            "file_upload": None, "comment_authors": [], "annotations": [], "predictions": []}


def keypoint(x: float, y: float, width: int, height: int, label: str = "cat", positive: bool = True) -> dict:
    """A smart keypoint as Label Studio's image editor sends it in ``context.result`` (x, y in percent)."""
    return {"original_width": width, "original_height": height, "image_rotation": 0,
            "value": {"x": x, "y": y, "width": 0.6666, "keypointlabels": [label]}, "is_positive": positive,
            "id": "k1X2y3", "from_name": "kp", "to_name": "img", "type": "keypointlabels", "origin": "manual"}


def stats(served: Served, auth=None) -> dict:
    return httpx.get(served.url + "/health", timeout=10, auth=auth).json()["stats"]


# -- the server the tests share -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Images (two labeled into a run store, two not), the pipeline, and one server over that store."""
    root = tmp_path_factory.mktemp("serve")
    (root / "in").mkdir()
    images = {"wide": (150, 60, 1), "tall": (80, 120, 3), "new": (120, 90, 5), "other": (100, 70, 7)}
    paths = {}
    for name, (w, h, seed) in images.items():
        folder = root / "in" if name in ("wide", "tall") else root
        paths[name] = folder / f"{name}.png"
        noise_image(w, h, seed=seed).save(paths[name])
    pipeline = tiny_pipeline(root)
    summary = Pipeline.from_yaml(pipeline).run(input=root / "in", output=root / "out")
    assert summary.counts["labeled"] == 2
    served = Served([str(pipeline), "--output", str(root / "out"), "--local-root", str(root),
                     "--allowed-hosts", "127.0.0.1", "--max-concurrent", "24"], root / "serve.log")
    yield {"root": root, "paths": paths, "pipeline": pipeline, "served": served}
    assert served.stop() == 0  # SIGTERM: a clean stop


def test_health_says_loading_then_ready_with_each_model_loaded_once(world) -> None:
    served = world["served"]
    body = httpx.get(served.url + "/health").json()
    assert served.loading_seen  # /health answered 503 LOADING while the models loaded in the background
    assert body["status"] == "UP" and body["ready"] is True
    assert body["model_version"] == "serve-test" and body["interactive"] == "seg"
    assert body["stats"]["model_loads"] == {"det": 1, "seg": 1}


def test_setup_answers_the_model_version(world) -> None:
    body = {"project": PROJECT, "schema": CONFIG, "hostname": "http://localhost:8080",
            "access_token": "0123456789abcdef", "extra_params": None}
    r = httpx.post(world["served"].url + "/setup", json=body)
    assert r.status_code == 200 and r.json() == {"model_version": "serve-test"}
    assert "0123456789abcdef" not in world["served"].log_text()  # the token is never logged


def test_a_batch_is_answered_from_the_store_where_labeled_and_by_the_model_otherwise(world) -> None:
    served, paths = world["served"], world["paths"]
    before = stats(served)
    tasks = [ls_task(11, str(paths["wide"])), ls_task(12, str(paths["new"])), ls_task(13, str(paths["tall"]))]
    r = httpx.post(served.url + "/predict", json=predict_body(tasks), timeout=120)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == 3
    interface = LabelInterface(CONFIG)
    for prediction in results:
        assert prediction["model_version"] == "serve-test"
        assert interface.validate_prediction(prediction, return_errors=True) == []
        labeled = [x for x in prediction["result"] if x["type"].endswith("labels")]
        assert labeled and len({x["id"] for x in labeled}) == len(labeled)  # one region per object
        assert {x["from_name"] for x in labeled} <= {"bbox", "seg"}  # the project's names
        assert {x["to_name"] for x in prediction["result"]} == {"img"}
    after = stats(served)
    assert after["from_store"] - before.get("from_store", 0) == 2
    assert after["model_images"] - before.get("model_images", 0) == 1  # only the new image ran the pipeline

    # the stored images' predictions are the export's, renamed: same boxes, labels, scores, masks
    spec = Pipeline.from_yaml(world["pipeline"]).spec
    with Store(world["root"] / "out") as store:
        rows = {Path(row["path"]).name: row for row in store.images()}
    for task_id, name, prediction in ((11, "wide.png", results[0]), (13, "tall.png", results[2])):
        expected = export_task(image_row(dict(rows[name], id=task_id), class_ids(spec.ontology)),
                               model_version="serve-test")["predictions"][0]
        rename = {"label": "bbox", "mask": "seg"}
        assert prediction["score"] == expected["score"]
        assert prediction["result"] == [x | {"from_name": rename[x["from_name"]], "to_name": "img"}
                                         for x in expected["result"]]

    # the new image's prediction is what the same pipeline gives in-process, exported
    from autolabel.intake import decode
    from autolabel.records import to_record
    from autolabel.stage import Item

    pipeline = Pipeline.from_yaml(world["pipeline"])
    item = pipeline([Item.of(decode(paths["new"].read_bytes()), str(paths["new"]))])[0]
    row = {"id": 12, "path": str(paths["new"]), "rel_path": "new.png", "width": 120, "height": 90,
           "labels": to_record(item.labels)}
    expected = export_task(image_row(row, class_ids(spec.ontology)), model_version="serve-test")["predictions"][0]
    assert any(x["type"] in ("rectanglelabels", "brushlabels") for x in expected["result"])
    assert results[1]["result"] == [x | {"from_name": rename[x["from_name"]], "to_name": "img"}
                                    for x in expected["result"]]


def test_a_smart_keypoint_gets_a_sam_mask_and_the_second_click_reuses_the_embedding(world) -> None:
    served, paths = world["served"], world["paths"]
    before = stats(served)
    task = ls_task(21, str(paths["other"]))
    first = httpx.post(served.url + "/predict", json=predict_body([task], {"result": [keypoint(25, 40, 100, 70)]}),
                       timeout=60)
    assert first.status_code == 200, first.text
    (prediction,) = first.json()["results"]
    assert LabelInterface(CONFIG).validate_prediction(prediction, return_errors=True) == []
    (region,) = prediction["result"]
    assert (region["type"], region["from_name"], region["to_name"]) == ("brushlabels", "seg", "img")
    assert region["value"]["brushlabels"] == ["cat"]
    assert (region["original_width"], region["original_height"]) == (100, 70)
    mask = decode_rle(region["value"]["rle"]).reshape(70, 100, 4)[..., 3] > 0

    # the same mask as the same SAM decoding the click in-process
    sam = Sam.load(ModelSpec(type="sam", id=str(world["root"] / "sam")))
    image = noise_image(100, 70, seed=7)
    expected, iou = Interactive(sam).mask("x", image, Prompt(points=[(25.0, 28.0)], point_labels=[1]))
    np.testing.assert_array_equal(mask, expected)
    assert region["score"] == pytest.approx(iou, abs=1e-5)
    after_one = stats(served)
    assert after_one["encoder_calls"] - before["encoder_calls"] == 1

    # a second click (a negative one) on the same image: a new mask, no new embedding
    second = httpx.post(served.url + "/predict", timeout=60, json=predict_body(
        [task], {"result": [keypoint(25, 40, 100, 70), keypoint(70, 20, 100, 70, positive=False)]}))
    assert second.status_code == 200, second.text
    after_two = stats(served)
    assert after_two["encoder_calls"] == after_one["encoder_calls"]
    assert after_two["clicks"] - after_one["clicks"] == 1
    expected2, _ = Interactive(sam).mask("x", image, Prompt(points=[(25.0, 28.0), (70.0, 14.0)], point_labels=[1, 0]))
    region2 = second.json()["results"][0]["result"][0]
    np.testing.assert_array_equal(decode_rle(region2["value"]["rle"]).reshape(70, 100, 4)[..., 3] > 0, expected2)

    # another image costs one more encoder run
    other = httpx.post(served.url + "/predict", timeout=60, json=predict_body(
        [ls_task(22, str(paths["new"]))], {"result": [keypoint(50, 50, 120, 90, label="dog")]}))
    assert other.status_code == 200 and other.json()["results"][0]["result"][0]["value"]["brushlabels"] == ["dog"]
    assert stats(served)["encoder_calls"] == after_two["encoder_calls"] + 1


def test_bad_requests_get_one_line_json_errors_and_the_server_keeps_serving(world) -> None:
    served, paths = world["served"], world["paths"]
    good = ls_task(31, str(paths["wide"]))
    unknown = keypoint(10, 10, 150, 60) | {"from_name": "smart"}
    cases = [
        (predict_body([good], {"result": [unknown]}), 400, "unknown control name 'smart'"),
        (predict_body([good], config='<View><Text name="t" value="$text"/></View>'), 400, "no <Image> tag"),
        (predict_body([ls_task(32, str(world["root"] / "missing.png"))]), 404, "task 32: "),
        (predict_body([ls_task(33, f"http://127.0.0.1:{free_port()}/a.png")]), 502, "task 33: "),
        (predict_body([ls_task(34, "/data/upload/3/a.png")]), 400, "LABEL_STUDIO_URL"),  # setup unproven: unused
        (predict_body([{"id": 35, "data": {"text": "x"}}]), 400, "no image reference under data.photo"),
        (predict_body([good], {"result": [keypoint(10, 10, 150, 60, label="bird")]}), 400, "not a label of"),
        ({"tasks": []}, 400, "non-empty list"),
    ]
    for body, status, words in cases:
        r = httpx.post(served.url + "/predict", json=body, timeout=60)
        assert r.status_code == status, (words, r.text)
        assert list(r.json()) == ["error"] and words in r.json()["error"] and "\n" not in r.json()["error"]
    r = httpx.post(served.url + "/predict", content=b"{not json", timeout=10,
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    assert httpx.get(served.url + "/nowhere").status_code == 404
    webhook = {"action": "ANNOTATION_CREATED", "annotation": {}}
    assert httpx.post(served.url + "/webhook", json=webhook).status_code == 201
    r = httpx.post(served.url + "/predict", json=predict_body([good]), timeout=60)
    assert r.status_code == 200 and len(r.json()["results"]) == 1
    assert "Traceback" not in served.log_text()


@pytest.mark.slow
def test_load_sequential_and_concurrent_requests_all_answered_with_memory_flat(world) -> None:
    """200 sequential then 20 concurrent /predict on loopback — store answers, with a pipeline run every 20th —
    every one answered, RSS flat after warm-up, models loaded once."""
    served, paths = world["served"], world["paths"]
    stored = [ls_task(41, str(paths["wide"])), ls_task(42, str(paths["tall"]))]
    fresh = [ls_task(43, str(paths["new"]))]

    def tasks(i: int) -> list[dict]:
        return stored + fresh if i % 20 == 0 else stored[i % 2 :][:1]

    def predict_body(tasks: list[dict]) -> dict:  # a boxes-only project: the common case, no mask encoding
        return globals()["predict_body"](tasks, config=BOXES_CONFIG)

    with httpx.Client(timeout=60) as client:
        for i in range(20):  # warm-up: allocator pools, caches
            assert client.post(served.url + "/predict", json=predict_body(tasks(i))).status_code == 200
        rss_before = served.rss_kb()
        before = stats(served)
        t0 = time.monotonic()
        for i in range(200):
            r = client.post(served.url + "/predict", json=predict_body(tasks(i)))
            assert r.status_code == 200 and len(r.json()["results"]) == len(tasks(i))
        sequential = time.monotonic() - t0

        def one(i: int) -> int:
            r = client.post(served.url + "/predict", json=predict_body(tasks(i)))
            return r.status_code if len(r.json().get("results", [])) == len(tasks(i)) else -1

        with ThreadPoolExecutor(20) as pool:
            codes = list(pool.map(one, range(20)))
        assert codes == [200] * 20
    after = stats(served)
    rss_after = served.rss_kb()
    expected = [tasks(i) for i in range(200)] + [tasks(i) for i in range(20)]
    assert after["requests"] - before["requests"] == 220
    assert after["model_images"] - before["model_images"] == sum(t == stored + fresh for t in expected) == 11
    assert after["from_store"] - before["from_store"] == sum(len(t) for t in expected) - 11
    assert after["model_loads"] == {"det": 1, "seg": 1}
    assert rss_after - rss_before < 60_000, (rss_before, rss_after)  # kB: flat, not growing with requests
    print(f"\nserve load: 200 sequential in {sequential:.1f} s; "
          f"RSS {rss_before / 1024:.0f} → {rss_after / 1024:.0f} MB")


# -- a second server: a model-free pipeline, basic auth, allowed hosts, write-back ---------------------------------
class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("guarded")
    (root / "web").mkdir()
    noise_image(90, 50, seed=11).save(root / "web" / "a.png")
    noise_image(60, 40, seed=12).save(root / "web" / "b.png")

    def handler(*a: object, **k: object) -> _Quiet:
        return _Quiet(*a, directory=str(root / "web"), **k)

    web = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    Thread(target=web.serve_forever, daemon=True).start()
    pipeline = root / "center.yaml"
    pipeline.write_text(json.dumps({"name": "center", "ontology": ["cat", "dog"],
                                    "stages": [{"type": "plugins:CenterBox", "label": "cat"}]}))
    secrets = {"BASIC_AUTH_USER": "ls", "BASIC_AUTH_PASS": "s3cret-pass"}
    served = Served([str(pipeline), "--output", str(root / "out"), "--write-back", "--allowed-hosts", "127.0.0.1"],
                    root / "serve.log", extra_env=secrets)
    yield {"root": root, "web": f"http://127.0.0.1:{web.server_address[1]}", "served": served,
           "auth": (secrets["BASIC_AUTH_USER"], secrets["BASIC_AUTH_PASS"])}
    assert served.stop() == 0
    web.shutdown()
    with Store(root / "out") as store:  # the write-back run was closed at shutdown, with the server's counts
        (run,) = store.runs()
    assert run["status"] == "ok" and run["summary"]["kind"] == "serve" and run["summary"]["counts"]["labeled"] >= 1


CENTER_CONFIG = CONFIG.replace("$photo", "$image")


def test_basic_auth_guards_every_route(guarded) -> None:
    url = guarded["served"].url
    assert httpx.get(url + "/health").status_code == 401
    assert httpx.get(url + "/health", auth=("ls", "wrong")).status_code == 401
    assert httpx.post(url + "/predict", json={}).status_code == 401
    assert httpx.get(url + "/health", auth=guarded["auth"]).status_code == 200


def test_allowed_hosts_refuse_urls_resolving_elsewhere(guarded) -> None:
    url, auth = guarded["served"].url, guarded["auth"]
    body = predict_body([{"id": 1, "data": {"image": "/data/upload/3/a.png"}}], config=CENTER_CONFIG)
    r = httpx.post(url + "/predict", json=body, auth=auth, timeout=30)  # no setup yet: where is Label Studio?
    assert r.status_code == 400 and "LABEL_STUDIO_URL" in r.json()["error"]
    port = guarded["web"].rsplit(":", 1)[1]
    body = predict_body([{"id": 1, "data": {"image": f"http://127.0.0.2:{port}/a.png"}}], config=CENTER_CONFIG)
    r = httpx.post(url + "/predict", json=body, auth=auth, timeout=30)
    assert r.status_code == 403 and "outside --allowed-hosts" in r.json()["error"]
    body = predict_body([{"id": 2, "data": {"image": guarded["web"] + "/a.png"}}], config=CENTER_CONFIG)
    r = httpx.post(url + "/predict", json=body, auth=auth, timeout=30)
    assert r.status_code == 200 and r.json()["results"][0]["result"][0]["value"]["rectanglelabels"] == ["cat"]


def test_write_back_stores_new_images_and_answers_them_from_the_store_next_time(guarded) -> None:
    served, auth = guarded["served"], guarded["auth"]
    ref = guarded["web"] + "/b.png"
    body = predict_body([{"id": 5, "data": {"image": ref}}], config=CENTER_CONFIG)
    before = stats(served, auth)
    first = httpx.post(served.url + "/predict", json=body, auth=auth, timeout=30)
    assert first.status_code == 200
    middle = stats(served, auth)
    assert middle["model_images"] - before.get("model_images", 0) == 1 and middle["written_back"] >= 1
    with Store(guarded["root"] / "out") as store:
        (row,) = [row for row in store.images() if row["rel_path"] == "b.png"]
    assert (row["width"], row["height"]) == (60, 40)
    # the store's path is a copy of the fetched bytes in the output folder (a URL is not a file exports can read)
    kept = Path(row["path"])
    assert kept.parent.parent == guarded["root"] / "out" / "serve-images" and kept.name == row["sha256"] + ".png"
    assert kept.read_bytes() == (guarded["root"] / "web" / "b.png").read_bytes()
    from autolabel.cli import main

    assert main(["export", str(guarded["root"] / "out"), "--format", "yolo", "--split", "train=1"]) == 0
    exported = list((guarded["root"] / "out" / "yolo" / "images" / "train").iterdir())
    assert [p.read_bytes() for p in exported if p.name == "b.png"] == [kept.read_bytes()]
    second = httpx.post(served.url + "/predict", json=body, auth=auth, timeout=30)
    after = stats(served, auth)
    assert after["model_images"] == middle["model_images"]
    assert after["from_store"] - middle.get("from_store", 0) == 1
    assert second.json()["results"] == first.json()["results"]


def test_bad_arguments_exit_2_with_one_line(tmp_path) -> None:
    pipeline = tmp_path / "center.yaml"
    pipeline.write_text(json.dumps({"name": "c", "ontology": ["cat"], "stages": [{"type": "plugins:CenterBox",
                                                                                  "label": "cat"}]}))
    for args, words in ((["--write-back"], "--write-back: needs --output"),
                        (["--set", "batch_size=0"], "batch_size")):
        out = subprocess.run([sys.executable, "-m", "autolabel", "serve", str(pipeline), "--port", str(free_port()),
                              *args], check=False, capture_output=True, text=True, env=env(), timeout=60)
        assert out.returncode == 2, out.stderr
        assert len(out.stderr.strip().splitlines()) == 1 and words in out.stderr
