"""``autolabel serve``'s app in-process (the ASGI app over a real :class:`Backend`, model-free test stages, a tiny SAM):
the guard, the streamed body limit, the limits of a predict request, admission and deadlines, answers from the
store keyed by content and status and never waiting on the model, and setup's trust rules, end to end through the
routes. The subprocess tests (tests/serve/test_serve_security.py) attack a real server; these run where mutmut sees
them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from pathlib import Path

import httpx
import pytest
from recording_server import Recorder, body, trickle
from starlette.testclient import TestClient
from tiny_models import noise_image, tiny

from autolabel import Pipeline
from autolabel.serve import backend as backend_module
from autolabel.serve.access import Access, Trust
from autolabel.serve.answers import StoreAnswers
from autolabel.serve.app import create_app
from autolabel.serve.backend import Backend
from autolabel.serve.limits import Budget, Limits
from autolabel.serve.protocol import RequestError
from autolabel.store import ImageResult, Store

CONFIG = """<View><Image name="img" value="$image"/>
  <RectangleLabels name="bbox" toName="img"><Label value="cat"/><Label value="dog"/></RectangleLabels>
  <BrushLabels name="seg" toName="img"><Label value="cat"/><Label value="dog"/></BrushLabels>
  <KeyPointLabels name="kp" toName="img" smart="true"><Label value="cat"/></KeyPointLabels></View>"""
LIMITS = Limits(max_body_bytes=64 * 1024, max_tasks=5, max_prompt_regions=3, max_request_pixels=200_000,
                max_request_seconds=15, max_concurrent=3, max_queued=2)


def spec(sleep: float = 0.0, **extra: object) -> dict:
    return {"name": "center", "ontology": ["cat", "dog"], "batch_size": 2,
            "stages": [{"type": "plugins:CenterBox", "label": "cat", "sleep": sleep, "fail_on": "fails"}]} | extra


def predict(tasks: list[str], context: dict | None = None, project: str = "1.1") -> dict:
    return {"tasks": [{"id": i + 1, "data": {"image": ref}} for i, ref in enumerate(tasks)], "project": project,
            "label_config": CONFIG, "params": {"context": context}}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    """Images (one labeled into a store, one failed there), a web server, and two apps: a quick one and a slow one
    whose model takes a while (both over the same store)."""
    root = tmp_path_factory.mktemp("app")
    (root / "in").mkdir()
    noise_image(60, 40, seed=1).save(root / "in" / "known.png")
    noise_image(50, 30, seed=2).save(root / "failed.png")
    noise_image(40, 40, seed=3).save(root / "new.png")
    noise_image(600, 400, seed=4).save(root / "big.png")  # 240,000 pixels: over the request's pixel budget
    (root / "copy-of-known.png").write_bytes((root / "in" / "known.png").read_bytes())
    assert Pipeline.from_dict(spec()).run(input=root / "in", output=root / "out").counts["labeled"] == 1
    with Store(root / "out") as store:  # a failed row of failed.png's content: never an answer
        run = store.begin_run("x", {})
        digest = backend_module.sha256((root / "failed.png").read_bytes())
        store.commit([ImageResult(str(root / "failed.png"), "failed.png", digest, "failed", reason="boom")], run, "x",
                     [])
        store.end_run(run, "ok", {})
    web = Recorder()
    web.routes |= {"/web.png": body((root / "new.png").read_bytes()), "/slow.png": trickle(0.05)}

    def app(sleep: float = 0.0, extra: dict | None = None, app: dict | None = None, limits: Limits = LIMITS,
            **kwargs: object) -> tuple[TestClient, Backend]:
        backend = Backend(Pipeline.from_dict(spec(sleep, **(extra or {}))), StoreAnswers(root / "out"),
                          allowed_hosts=["127.0.0.1"], local_roots=[str(root)], limits=limits, **kwargs)
        backend.load()
        client = TestClient(create_app(backend, load=False, **(app or {})), base_url="http://localhost")
        return client, backend

    quick, quick_backend = app()
    slow, slow_backend = app(sleep=0.8)
    yield {"root": root, "web": web, "quick": quick, "backend": quick_backend, "slow": slow,
           "slow_backend": slow_backend, "app": app}
    for b in (quick_backend, slow_backend):
        b.close()
    web.close()


def refusal(response: httpx.Response, status: int, words: str) -> str:
    assert response.status_code == status, response.text
    assert list(response.json()) == ["error"], response.text
    message = response.json()["error"]
    assert words in message and "\n" not in message
    return message


# -- the guard ------------------------------------------------------------------------------------------------------
def test_a_host_header_naming_another_site_is_refused(world) -> None:
    client = world["quick"]
    message = refusal(client.get("/health", headers={"Host": "rebind.attacker.example:9090"}), 421,
                      "Host 'rebind.attacker.example' is not a name this backend answers to")
    assert "--public-host rebind.attacker.example" in message
    for host in ("localhost:9090", "127.0.0.1:9090", "[::1]:9090", "192.168.1.20"):
        assert client.get("/health", headers={"Host": host}).status_code == 200, host


def test_posts_must_be_json_so_a_web_page_cannot_send_them_without_asking(world) -> None:
    client = world["quick"]
    for headers in ({"Content-Type": "text/plain"}, {"Content-Type": "application/x-www-form-urlencoded"}, {}):
        refusal(client.post("/predict", content=json.dumps(predict(["x"])), headers=headers), 415,
                "a POST body must be sent as Content-Type: application/json")
    r = client.post("/webhook", content=b'{"action": "x"}', headers={"Content-Type": "Application/JSON; charset=utf-8"})
    assert r.status_code == 201 and r.json() == {"status": "ok", "action": "x", "trained": False}


def test_basic_auth_guards_every_route_in_constant_time(world) -> None:
    client, _ = world["app"](app={"auth": ("label-studio", "pw:with:colons")})
    for method, path in (("GET", "/health"), ("GET", "/metrics"), ("POST", "/predict"), ("GET", "/nowhere")):
        r = client.request(method, path, json={})
        assert refusal(r, 401, "authentication required") == ("authentication required: set the model's Basic "
                                                               "Authentication user and password in Label Studio")
        assert r.headers["www-authenticate"] == 'Basic realm="autolabel"'
    for auth in (("label-studio", "wrong"), ("x", "pw:with:colons"), ("label-studio", "pw")):
        assert client.get("/health", auth=auth).status_code == 401
    assert client.get("/health", headers={"Authorization": "Bearer pw:with:colons"}).status_code == 401
    assert client.get("/health", auth=("label-studio", "pw:with:colons")).status_code == 200
    # the host check comes first: a rebinding page learns nothing, not even that auth is on
    r = client.get("/health", headers={"Host": "evil.example"})
    assert r.status_code == 421


# -- the body -------------------------------------------------------------------------------------------------------
def asgi_post(app, chunks, headers: dict[str, str]) -> tuple[int, dict, int]:
    """POST /predict straight through ASGI with a body sent in ``chunks`` (None: the client stops sending);
    returns (status, JSON answer, chunks the app read)."""
    read = [0]
    out: dict = {}

    async def receive() -> dict:
        if read[0] < len(chunks):
            read[0] += 1
            return {"type": "http.request", "body": chunks[read[0] - 1], "more_body": read[0] < len(chunks)}
        await asyncio.sleep(3600)  # a client that stops sending (never reached by these tests)
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            out["status"] = message["status"]
        elif message["type"] == "http.response.body":
            out["body"] = out.get("body", b"") + message.get("body", b"")

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/predict", "raw_path": b"/predict", "query_string": b"", "root_path": "",
             "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 9090),
             "headers": [(k.lower().encode(), v.encode()) for k, v in ({"host": "localhost"} | headers).items()]}
    asyncio.run(app(scope, receive, send))
    return out["status"], json.loads(out["body"]), read[0]


def test_a_chunked_body_is_refused_as_it_crosses_the_limit_not_after(world) -> None:
    app = world["quick"].app
    chunk = b" " * 16384
    status, answer, read = asgi_post(app, [chunk] * 1000, {"content-type": "application/json"})  # 16 MB, no length
    assert status == 413 and answer["error"] == ("a body of over 65536 bytes: more than the limit of 65536 bytes of "
                                                 "one request body (raise it with --max-body-bytes N or "
                                                 "AUTOLABEL_SERVE_MAX_BODY_BYTES)")
    assert read == 5  # 4 chunks fit (65,536 bytes), the 5th crosses: nothing more was read
    status, answer, read = asgi_post(app, [chunk] * 1000, {"content-type": "application/json",
                                                            "content-length": str(16384 * 1000)})
    assert status == 413 and answer["error"].startswith("a body of 16384000 bytes: more than") and read == 0
    status, answer, _ = asgi_post(app, [b"{}"], {"content-type": "application/json", "content-length": "x2"})
    assert status == 400 and answer["error"] == "Content-Length 'x2' is not a number of bytes"
    body_ = json.dumps(predict([str(world["root"] / "in" / "known.png")])).encode()
    status, answer, _ = asgi_post(app, [body_[:10], body_[10:]], {"content-type": "application/json"})
    assert status == 200 and len(answer["results"]) == 1  # a body in pieces, under the limit


def test_600000_tiny_tasks_never_reach_the_parser(world) -> None:
    many = json.dumps({"tasks": [{"data": {"image": "a"}}] * 600_000}).encode()
    r = world["quick"].post("/predict", content=many, headers={"Content-Type": "application/json"})
    refusal(r, 413, "--max-body-bytes")


@pytest.mark.parametrize("raw, words", [
    (b'{"tasks": [{"data": {"image": 1e999}}]}', "out of range"), (b'{"tasks": NaN}', "NaN is not a JSON number"),
    (b"[" * 50_000, "nested too deeply"),
])
def test_bodies_that_are_not_plain_json_are_400s(world, raw: bytes, words: str) -> None:
    refusal(world["quick"].post("/predict", content=raw, headers={"Content-Type": "application/json"}), 400, words)


# -- predict: limits and answers ------------------------------------------------------------------------------------
def test_too_many_tasks_or_pixels_are_413s_naming_the_flag(world) -> None:
    client, root = world["quick"], world["root"]
    refusal(client.post("/predict", json=predict([str(root / "new.png")] * 6)), 413,
            "6 tasks: more than the limit of 5 tasks in one predict request (raise it with --max-tasks N")
    refusal(client.post("/predict", json=predict([str(root / "big.png")])), 413,
            "240000 pixels to decode: more than the limit of 200000 image pixels decoded for one request "
            "(raise it with --max-request-pixels N")


def test_answers_from_the_store_are_keyed_by_content_and_status(world) -> None:
    client, backend, root = world["quick"], world["backend"], world["root"]
    before = dict(backend.stats)
    refs = [str(root / "in" / "known.png"), str(root / "copy-of-known.png"), str(root / "failed.png"),
            str(root / "new.png"), str(root / "in" / "known.png")]
    r = client.post("/predict", json=predict(refs))
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [res["result"][0]["value"]["rectanglelabels"] for res in results] == [["cat"]] * 5
    assert backend.stats["from_store"] - before.get("from_store", 0) == 3  # the same content under two names
    assert backend.stats["model_images"] - before.get("model_images", 0) == 2  # a failed row is no answer
    values = [[(x["value"], x["score"]) for x in res["result"]] for res in results]
    assert values[0] == values[1] == values[4] and results[1]["result"][0]["id"] == "2_0"  # each its task's ids
    assert results[0]["result"][0]["value"]["width"] == pytest.approx(50.0)  # the middle half, in percent


def test_each_distinct_reference_is_fetched_once(world) -> None:
    client, web = world["quick"], world["web"]
    before = len(web.seen)
    r = client.post("/predict", json=predict([web.url + "/web.png"] * 4))
    assert r.status_code == 200 and len(r.json()["results"]) == 4
    assert len(web.seen) - before == 1


def test_a_failing_stage_is_a_one_line_500_and_the_server_keeps_serving(world) -> None:
    client, root = world["quick"], world["root"]
    (root / "fails.png").write_bytes((root / "new.png").read_bytes()[:-1] + b"\x01")
    message = refusal(client.post("/predict", json=predict([str(root / "fails.png")])), 500, "task(s) 1: ")
    assert "RuntimeError: cannot label fails.png" in message
    assert client.post("/predict", json=predict([str(root / "new.png")])).status_code == 200


def test_a_bug_in_a_handler_is_a_one_line_500_logged_once_and_the_server_keeps_serving(caplog) -> None:
    """The last resort of :func:`answer`: an exception no handler meant (here a KeyError standing for a bug) is a 500
    naming its type, one ERROR line in the log with the route, no traceback; the next request is served."""
    backend = Backend(Pipeline.from_dict(spec()), limits=LIMITS)
    backend.webhook = lambda body, ticket, budget: {}["action"]
    with TestClient(create_app(backend, load=False), base_url="http://localhost") as client:
        with caplog.at_level(logging.INFO, "autolabel.serve"):
            assert refusal(client.post("/webhook", json={}), 500, "") == "KeyError: 'action'"
        assert client.post("/setup", json={}).status_code == 200
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in errors] == ["POST /webhook: 500 KeyError: 'action'"] and not errors[0].exc_info


def test_a_requests_fetches_run_on_threads_named_for_them(world) -> None:
    """A thread dump of a busy server (py-spy, faulthandler) tells a stuck fetch from the rest by its name."""
    client, web = world["quick"], world["web"]
    gate, names = threading.Event(), []
    png = (world["root"] / "new.png").read_bytes()

    def held(h) -> None:  # answers once the test has looked at the threads
        names.append(threading.current_thread().name)
        gate.wait(10)
        body(png)(h)

    web.routes |= {"/held-1.png": held, "/held-2.png": held}
    answers: list = []
    thread = threading.Thread(target=lambda: answers.append(client.post("/predict", json=predict(
        [web.url + "/held-1.png", web.url + "/held-2.png"])).status_code))
    thread.start()
    deadline = time.monotonic() + 10
    while len(names) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    fetching = sorted(t.name for t in threading.enumerate() if t.name.startswith("autolabel-fetch"))
    gate.set()
    thread.join(10)
    assert fetching == ["autolabel-fetch-0", "autolabel-fetch-1"] and answers == [200]


def test_a_request_over_its_time_is_a_408_and_its_place_is_freed(world) -> None:
    client, backend = world["app"](limits=Limits(max_request_seconds=1))
    t0 = time.monotonic()
    refusal(client.post("/predict", json=predict([world["web"].url + "/slow.png"])), 408,
            "the request took too long: more than the limit of 1 seconds one request may take (raise it with "
            "--max-request-seconds N")
    assert time.monotonic() - t0 < 3
    deadline = time.monotonic() + 5
    while backend.admission.counts != {"active": 0, "queued": 0} and time.monotonic() < deadline:
        time.sleep(0.05)
    assert backend.admission.counts == {"active": 0, "queued": 0}
    backend.close()


def test_a_full_server_answers_429_at_once(world, caplog) -> None:
    client, backend = world["quick"], world["backend"]
    tickets = [backend.admission.enter() for _ in range(3)]
    try:
        t0 = time.monotonic()
        with caplog.at_level(logging.WARNING, "autolabel.serve"):
            message = refusal(client.post("/predict", json=predict(["x"])), 429,
                              "too many requests at once: more than the limit of 3 requests being read, fetched or "
                              "answered")
        assert f"POST /predict: 429 {message}" in caplog.text  # the log names the route
        assert time.monotonic() - t0 < 1
        assert client.get("/health").json()["stats"]["in_flight"] == {"active": 3, "queued": 0}
    finally:
        for ticket in tickets:
            ticket.leave()


def test_store_answers_never_wait_on_the_model(world) -> None:
    """The slow app's model takes 0.8 s a batch. With two requests queued on it, an image from the store is
    answered at once; a third model request is refused (the model's queue holds two)."""
    client, backend, root = world["slow"], world["slow_backend"], world["root"]
    fresh = [root / f"fresh{i}.png" for i in range(3)]
    for i, path in enumerate(fresh):
        noise_image(30, 20, seed=100 + i).save(path)
    codes: list[int] = []
    threads = [threading.Thread(target=lambda p=p: codes.append(client.post("/predict", json=predict([str(p)])).
                                                                 status_code)) for p in fresh[:2]]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 5
    while backend.admission.counts["queued"] < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    t0 = time.monotonic()
    r = client.post("/predict", json=predict([str(root / "in" / "known.png")]))
    store_seconds = time.monotonic() - t0
    assert r.status_code == 200 and store_seconds < 0.5, store_seconds
    refusal(client.post("/predict", json=predict([str(fresh[2])])), 429,
            "the model is busy with too many requests: more than the limit of 2 requests waiting for or using the "
            "model at once (raise it with --max-queued N")
    for t in threads:
        t.join(10)
    assert codes == [200, 200]


def test_a_request_queued_past_its_deadline_never_runs_the_model(world) -> None:
    client, backend = world["app"](sleep=1.5, limits=Limits(max_request_seconds=1, max_queued=4))
    root = world["root"]
    try:
        before = backend.stats["model_batches"]
        results: list[int] = []
        threads = [threading.Thread(target=lambda p=p: results.append(client.post("/predict", json=predict(
            [str(root / p)])).status_code)) for p in ("new.png", "failed.png")]
        for t in threads:
            t.start()
            time.sleep(0.2)
        for t in threads:
            t.join(10)
        assert sorted(results) == [408, 408]
        time.sleep(1.6)  # the first batch ends; the second, queued past its deadline, is skipped
        assert backend.stats["model_batches"] - before == 1
    finally:
        backend.close()


# -- setup: Label Studio's URL and token ----------------------------------------------------------------------------
def test_an_anonymous_setup_cannot_point_the_backend_or_its_token_anywhere(world, caplog) -> None:
    client, backend = world["app"](trust=Trust(Access(None, "operator-token"), authenticated=False))
    with Recorder() as attacker:
        with caplog.at_level(logging.WARNING, "autolabel.serve"):
            r = client.post("/setup", json={"project": "1.1", "hostname": attacker.url, "access_token": "x"})
        assert r.status_code == 200 and r.json() == {"model_version": "center"}
        assert "not proven to come from Label Studio" in caplog.text
        refusal(client.post("/predict", json=predict(["/data/upload/1/a.png"])), 400, "set LABEL_STUDIO_URL")
        assert attacker.seen == [] and backend.label_studio_origins() == []
    backend.close()


def test_a_proven_setup_tells_where_label_studio_is_per_project(world, monkeypatch) -> None:
    client, backend = world["app"](trust=Trust(Access(), authenticated=True))
    monkeypatch.setattr(backend_module, "MAX_SETUPS", 2)
    png = (world["root"] / "new.png").read_bytes()
    with Recorder() as ls, Recorder() as other_ls:
        ls.routes["/data/upload/1/a.png"] = body(png)
        other_ls.routes["/data/upload/1/a.png"] = body(png)
        for project, server, token in (("1.1", ls, "t1"), ("2.2", other_ls, "t2")):
            r = client.post("/setup", json={"project": project, "hostname": server.url, "access_token": token,
                                            "schema": CONFIG})
            assert r.status_code == 200
        assert client.post("/predict", json=predict(["/data/upload/1/a.png"], project="1.1")).status_code == 200
        assert client.post("/predict", json=predict(["/data/upload/1/a.png"], project="2.2")).status_code == 200
        assert [s.authorization for s in ls.seen] == ["Token t1"]
        assert [s.authorization for s in other_ls.seen] == ["Token t2"]
        assert backend.label_studio_origins() == [("127.0.0.1", ls.port), ("127.0.0.1", other_ls.port)]
        client.post("/setup", json={"project": "3.3", "hostname": ls.url, "access_token": "t3"})
        assert list(backend._setups) == ["2.2", "3.3"]  # the oldest project's setup is forgotten
        refusal(client.post("/setup", json={"schema": "<View/>"}), 400, "no <Image> tag")
        refusal(client.post("/setup", json=[1]), 400, "the setup body must be a JSON object")
    backend.close()


# -- smart tools ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clicks(world):
    client, backend = world["app"](extra={"models": {"seg": {"type": "sam", "id": tiny("sam")}}})
    yield client, backend
    backend.close()


def test_a_click_gets_a_mask_with_the_score_clipped_to_0_1(clicks, world) -> None:
    client, backend = clicks
    point = {"type": "keypointlabels", "from_name": "kp", "to_name": "img", "is_positive": True,
             "value": {"x": 50, "y": 50, "keypointlabels": ["cat"]}}
    r = client.post("/predict", json=predict([str(world["root"] / "new.png")], {"result": [point]}))
    assert r.status_code == 200, r.text
    (region,) = r.json()["results"][0]["result"]
    assert region["type"] == "brushlabels" and 0.0 <= region["score"] <= 1.0
    assert backend.stats["clicks"] == 1 and backend.interactive.encoder_calls == 1
    refusal(client.post("/predict", json=predict([str(world["root"] / "new.png")], {"result": [point] * 4})), 413,
            "4 smart-tool regions: more than the limit of 3 smart-tool regions in one predict request")
    nan = point | {"value": {"x": "NaN", "y": 50, "keypointlabels": ["cat"]}}
    refusal(client.post("/predict", json=predict([str(world["root"] / "new.png")], {"result": [nan]})), 400,
            "as numbers in 0..100")


def test_without_a_sam_model_smart_tools_are_a_400(world) -> None:
    point = {"type": "keypointlabels", "from_name": "kp", "value": {"x": 5, "y": 5}}
    refusal(world["quick"].post("/predict", json=predict([str(world["root"] / "new.png")], {"result": [point]})), 400,
            "smart tools need a SAM, SAM 2 or SAM 3 tracker model")


def test_health_reports_loading_and_failure(world) -> None:
    backend = Backend(Pipeline.from_dict(spec()), limits=LIMITS)
    client = TestClient(create_app(backend, load=False), base_url="http://localhost")
    r = client.get("/health")
    assert r.status_code == 503 and r.json()["status"] == "LOADING"
    refusal(client.post("/predict", json=predict(["x"])), 503, "models are still loading")
    backend.state, backend.error = "failed", "no weights"
    refusal(client.post("/predict", json=predict(["x"])), 503, "models failed to load: no weights")
    assert client.get("/health").json()["error"] == "no weights"
    backend.close()


def test_local_root_images_keep_their_own_path_in_write_back(world, tmp_path) -> None:
    answers = StoreAnswers(tmp_path / "wb", write_back=True)
    try:
        data = (world["root"] / "new.png").read_bytes()
        assert answers.image_path("ab" * 32, data, "x/new.png", "/srv/new.png") == "/srv/new.png"
        kept = Path(answers.image_path("cd" * 32, data, "upload/3/new.PNG", None))
        assert kept == tmp_path / "wb" / "serve-images" / "cd" / ("cd" * 32 + ".png") and kept.read_bytes() == data
        assert Path(answers.image_path("ef" * 32, data, "img?id=3", None)).name == "ef" * 32
        kept.write_bytes(b"kept once")  # the same content again: not written twice
        assert Path(answers.image_path("cd" * 32, data, "a.png", None)).read_bytes() == b"kept once"
        assert list((tmp_path / "wb" / "serve-images" / "cd").iterdir()) == [kept]  # no temporary file left
    finally:
        answers.close({})


def test_requests_in_flight_answer_503_once_the_server_is_stopping(world) -> None:
    client, backend = world["app"](limits=Limits(max_request_seconds=30))
    answers: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: answers.append(client.post("/predict", json=predict(
        [world["web"].url + "/slow.png"]))))
    thread.start()
    deadline = time.monotonic() + 5
    while backend.admission.counts["active"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    t0 = time.monotonic()
    client.app.state.stopping.set()
    thread.join(5)
    assert time.monotonic() - t0 < 1
    refusal(answers[0], 503, "the server is stopping; send the request again in a moment")
    refusal(client.post("/predict", json=predict(["x"])), 503, "the server is stopping")
    backend.close()


def test_building_answers_from_the_store_stops_at_the_deadline(world) -> None:
    """Answers from the store cost time too (a brush mask's RLE: ~0.1 s): the request's thread checks its deadline
    before each task (here the clock moves a second per reading: the fifth task is past it)."""
    backend, root = world["backend"], world["root"]
    ticks = iter(range(1000))
    budget = Budget(Limits(max_request_seconds=6), clock=lambda: float(next(ticks)))
    ticket = backend.admission.enter()
    try:
        with pytest.raises(RequestError) as err:
            backend.predict(predict([str(root / "in" / "known.png")] * 5), ticket, budget)
    finally:
        ticket.leave()
    assert err.value.status == 408 and err.value.message.startswith("the request took too long")


# -- the app's routes, life cycle and log, on an app of their own ---------------------------------------------------
def test_every_route_answers_what_and_how_it_says(world, caplog) -> None:
    backend = Backend(Pipeline.from_dict(spec()), limits=LIMITS)
    with TestClient(create_app(backend), base_url="http://localhost") as client:  # the lifespan loads the models
        deadline = time.monotonic() + 30
        while client.get("/health").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        health = client.get("/health").json()
        assert client.get("/").json() == health | {"stats": client.get("/").json()["stats"]}
        assert set(health) == {"status", "model_class", "ready", "model_version", "pipeline", "interactive", "stats"}
        assert (health["status"], health["model_class"], health["ready"], health["model_version"],
                health["pipeline"], health["interactive"]) == ("UP", "autolabel", True, "center", "center", None)
        assert client.get("/metrics").json() == client.get("/health").json()["stats"]
        assert set(health["stats"]) == {"encoder_calls", "embeddings_cached", "model_loads", "in_flight"}
        assert client.post("/setup", json={"project": "1.1"}).json() == {"model_version": "center"}
        r = client.post("/webhook", json={"action": "PROJECT_UPDATED"})
        assert (r.status_code, r.json()) == (201, {"status": "ok", "action": "PROJECT_UPDATED", "trained": False})
        assert client.post("/webhook", json=[]).json()["action"] is None
        refusal(client.get("/predict"), 405, "GET /predict: no such route (routes: /health, /setup, /predict, "
                                             "/webhook, /metrics)")
        refusal(client.post("/health", json={}), 405, "POST /health: no such route")
        refusal(client.get("/nowhere"), 404, "GET /nowhere: no such route")
        assert client.get("/metrics").json()["setups"] == 1 and client.get("/metrics").json()["webhooks"] == 2
        assert [t.name for t in backend.requests.threads][:2] == ["autolabel-request-0", "autolabel-request-1"]
        assert backend.model.threads[0].name == "autolabel-model-0"
    assert backend.model.submit(print).cancelled()  # the lifespan's end closed the backend


def test_a_model_that_cannot_load_fails_health_and_calls_back(tmp_path) -> None:
    failed = threading.Event()
    backend = Backend(Pipeline.from_dict(spec(models={"m": {"type": "plugins:BrokenModel", "id": "x"}})),
                      limits=LIMITS)
    with TestClient(create_app(backend, on_failure=failed.set), base_url="http://localhost") as client:
        assert failed.wait(30)
        r = client.get("/health")
        assert r.status_code == 503 and r.json()["status"] == "FAILED"
        assert "no file named model.safetensors" in r.json()["error"]


def test_refusals_are_json_and_free_their_place(world) -> None:
    client, backend = world["quick"], world["backend"]
    r = client.post("/predict", content=b"x" * 70_000, headers={"Content-Type": "application/json"})
    refusal(r, 413, "--max-body-bytes")
    assert r.headers["content-type"] == "application/json"
    r = client.get("/health", headers={"Host": "evil.example"})
    assert r.headers["content-type"] == "application/json" and int(r.headers["content-length"]) == len(r.content)
    assert backend.admission.counts == {"active": 0, "queued": 0}


def test_a_request_without_a_host_header_is_refused(world) -> None:
    app = world["quick"].app
    out: dict = {}

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        out.setdefault(message["type"], message)

    scope = {"type": "http", "method": "GET", "path": "/health", "raw_path": b"/health", "query_string": b"",
             "headers": [], "scheme": "http", "http_version": "1.0", "root_path": "", "asgi": {"version": "3.0"},
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 9090)}
    asyncio.run(app(scope, receive, send))
    assert out["http.response.start"]["status"] == 421
    assert json.loads(out["http.response.body"]["body"])["error"] == (
        "Host '' is not a name this backend answers to (a guard against DNS rebinding): start it with --public-host "
        "NAME if Label Studio reaches it by that name")


def test_the_model_log_says_what_each_batch_did(world, caplog) -> None:
    client, root = world["quick"], world["root"]
    noise_image(22, 22, seed=77).save(root / "logged.png")
    with caplog.at_level(logging.INFO, "autolabel.serve"):
        assert client.post("/predict", json=predict([str(root / "logged.png")])).status_code == 200
    assert "predict: batch 1/1: 1 image(s) labeled in" in caplog.text
    assert "predict: 1 task(s): 0 from the store, 1 labeled by the model in" in caplog.text


def test_store_rows_the_ontology_cannot_use_are_labeled_again(world, tmp_path, caplog) -> None:
    """A row labeled with a class the pipeline no longer has: a warning, and the model labels the image."""
    noise_image(30, 30, seed=5).save(tmp_path / "x.png")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "x.png").write_bytes((tmp_path / "x.png").read_bytes())
    old = spec() | {"ontology": ["cat", "zebra"],
                    "stages": [{"type": "plugins:CenterBox", "label": "zebra"}]}
    Pipeline.from_dict(old).run(input=tmp_path / "in", output=tmp_path / "out")
    backend = Backend(Pipeline.from_dict(spec()), StoreAnswers(tmp_path / "out"), local_roots=[str(tmp_path)],
                      limits=LIMITS)
    backend.load()
    client = TestClient(create_app(backend, load=False), base_url="http://localhost")
    with caplog.at_level(logging.WARNING, "autolabel.serve"):
        r = client.post("/predict", json=predict([str(tmp_path / "x.png")]))
    assert r.status_code == 200 and r.json()["results"][0]["result"][0]["value"]["rectanglelabels"] == ["cat"]
    assert "task 1: the store's labels cannot be used (" in caplog.text and "labeling it again" in caplog.text
    assert "zebra" in caplog.text  # why: the class the ontology lost
    assert backend.stats["model_images"] == 1 and backend.stats["from_store"] == 0
    backend.close()


def test_a_setup_with_only_a_token_is_not_used_either(world, caplog) -> None:
    client, backend = world["app"]()
    with caplog.at_level(logging.WARNING, "autolabel.serve"):
        assert client.post("/setup", json={"access_token": "tok"}).status_code == 200
    assert "not proven to come from Label Studio" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, "autolabel.serve"):
        assert client.post("/setup", json={"project": "9"}).status_code == 200
    assert "not proven" not in caplog.text
    backend.close()


def test_label_studio_from_a_proven_setup_is_reachable_without_allowed_hosts(world) -> None:
    png = (world["root"] / "new.png").read_bytes()
    backend = Backend(Pipeline.from_dict(spec()), trust=Trust(Access(), authenticated=True), limits=LIMITS)
    backend.load()
    client = TestClient(create_app(backend, load=False), base_url="http://localhost")
    with Recorder() as ls, Recorder() as other:
        ls.routes["/data/upload/1/a.png"] = body(png)
        other.routes["/a.png"] = body(png)
        client.post("/setup", json={"project": "1.1", "hostname": ls.url, "access_token": "t"})
        assert client.post("/predict", json=predict(["/data/upload/1/a.png"])).status_code == 200
        refusal(client.post("/predict", json=predict([other.url + "/a.png"])), 403, "not a public address")
        assert other.seen == []
    backend.close()


# -- write-back -----------------------------------------------------------------------------------------------------
def test_write_back_stores_labels_and_closes_its_run_with_the_servers_counts(world, tmp_path) -> None:
    root, web = world["root"], world["web"]
    answers = StoreAnswers(tmp_path / "wb", write_back=True)
    backend = Backend(Pipeline.from_dict(spec()), answers, allowed_hosts=["127.0.0.1"], local_roots=[str(root)],
                      limits=LIMITS)
    backend.load()
    client = TestClient(create_app(backend, load=False), base_url="http://localhost")
    local_ref = str(root / "failed.png")  # its content differs from web.png's
    assert client.post("/predict", json=predict([local_ref, web.url + "/web.png"])).status_code == 200
    assert client.post("/predict", json=predict([local_ref])).status_code == 200  # now from the store
    assert (backend.stats["written_back"], backend.stats["from_store"], answers.written) == (2, 1, 2)
    backend.close()
    with Store(tmp_path / "wb") as store:
        rows = {row["rel_path"]: row for row in store.images()}
        (run,) = store.runs()
    assert set(rows) == {"failed.png", "web.png"}  # a local image named relative to its --local-root
    local = rows["failed.png"]
    assert local["path"] == local_ref and local["status"] == "done" and local["labels"]["boxes"]
    kept = Path(rows["web.png"]["path"])
    assert kept.parent.parent == tmp_path / "wb" / "serve-images"
    assert kept.read_bytes() == (root / "new.png").read_bytes()
    summary = run["summary"]
    assert (run["status"], summary["status"], summary["kind"]) == ("ok", "ok", "serve")
    assert summary["run_id"] == run["id"] and run["pipeline_hash"] == backend.pipeline.spec.hash
    assert summary["counts"] == {"seen": 2, "labeled": 2, "skipped": 0, "failed": 0}
    assert 0 <= summary["seconds"] < 60 and summary["serve"]["written_back"] == 2
    with Store(tmp_path / "wb") as store:  # committed under the pipeline's hash: a later run skips them
        assert store.is_done(local["path"], local["sha256"], backend.pipeline.spec.hash)
        assert store.last_pipeline() == json.loads(json.dumps(backend.pipeline.spec.raw, default=str))  # and spec
    assert summary["serve"]["model_loads"] == {}


def test_write_back_without_new_images_leaves_no_run(tmp_path) -> None:
    answers = StoreAnswers(tmp_path / "wb", write_back=True)
    answers.write([], "h", {}, [])
    answers.close({"requests": 1})
    answers.close({})  # twice: nothing more
    with Store(tmp_path / "wb") as store:
        assert store.runs() == []


def test_write_back_from_many_request_threads_goes_through_one_store_thread(tmp_path) -> None:
    """Request threads write at once; the store's connection belongs to the one thread that opened it, so every
    commit runs there (a second writer thread would be refused by SQLite), and it is named for a thread dump."""
    answers = StoreAnswers(tmp_path / "wb", write_back=True)
    assert [t.name for t in threading.enumerate() if t.name.startswith("autolabel-store")] == ["autolabel-store_0"]
    start, failed = threading.Barrier(8), []

    def write(n: int) -> None:
        start.wait()
        for k in range(3):
            try:
                answers.write([ImageResult(f"/i/{n}-{k}.png", f"{n}-{k}.png", f"{n:02x}{k:02x}" * 16, "done",
                                           labels={})], "h", {}, [])
            except Exception as err:  # noqa: BLE001 — collected, asserted below
                failed.append(err)

    writers = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for t in writers:
        t.start()
    for t in writers:
        t.join(30)
    answers.close({})
    assert failed == [] and answers.written == 24
    with Store(tmp_path / "wb") as store:
        assert store.count("done") == 24 and store.runs()[0]["summary"]["counts"]["labeled"] == 24


def test_write_backs_run_lasts_from_its_first_write_to_the_close_in_milliseconds(tmp_path, monkeypatch) -> None:
    """The serve run's ``seconds`` are a run summary's (run.json's: rounded to the millisecond), counted from the
    first image written, not from the start of the server."""
    from types import SimpleNamespace

    from autolabel.serve import answers as answers_module

    answers = StoreAnswers(tmp_path / "wb", write_back=True)
    clock = iter([1000.0, 1000.12345])
    monkeypatch.setattr(answers_module, "time", SimpleNamespace(time=lambda: next(clock)))
    answers.write([ImageResult("/i/a.png", "a.png", "ab" * 32, "done", labels={})], "h", {}, [])
    answers.close({"requests": 1})
    with Store(tmp_path / "wb") as store:
        (run,) = store.runs()
    assert run["summary"]["seconds"] == 0.123 and run["summary"]["serve"] == {"requests": 1}


def test_kept_images_share_their_prefix_folder(world, tmp_path) -> None:
    answers = StoreAnswers(tmp_path / "wb", write_back=True)
    try:
        first = answers.image_path("ab" + "0" * 62, b"one", "a.png", None)
        second = answers.image_path("ab" + "1" * 62, b"two", "b.png", None)
        assert Path(first).parent == Path(second).parent and Path(second).read_bytes() == b"two"
    finally:
        answers.close({})


def test_a_store_folder_without_a_store_is_refused_unless_writing_back(tmp_path) -> None:
    from autolabel.errors import AutolabelError

    with pytest.raises(AutolabelError) as err:
        StoreAnswers(tmp_path / "none")
    assert str(err.value) == (f"{tmp_path / 'none'}: no run store (autolabel.db) here; pass the output folder of a "
                              "run (autolabel run ... --output DIR), or add --write-back to start one")
    StoreAnswers(tmp_path / "new", write_back=True).close({})
    assert (tmp_path / "new" / "autolabel.db").is_file()


def test_models_are_counted_as_they_load(world, caplog) -> None:
    import re

    from autolabel.serve.backend import CountingPool

    pipeline = Pipeline.from_dict(spec(models={"seg": {"type": "sam", "id": tiny("sam")}}))
    pipeline.models = CountingPool(pipeline.config.models)
    backend = Backend(pipeline, limits=LIMITS)
    with caplog.at_level(logging.INFO, "autolabel.serve"):
        backend.load()
    assert re.search(r"models ready in \d+\.\d s: seg$", caplog.text, re.MULTILINE), caplog.text
    backend.pipeline.models.get("seg")  # the pool keeps it: not a second load
    assert backend.health()["stats"]["model_loads"] == {"seg": 1} and backend.interactive_model == "seg"
    backend.close()


def test_masks_become_brush_regions_or_polygons_as_the_config_asks(world, caplog) -> None:
    """A pipeline that makes masks: a project with BrushLabels gets them as brushes, one with PolygonLabels as
    polygons (one region per object: the mask, not the box too), one with neither gets the boxes alone."""
    seg = {"models": {"seg": {"type": "sam", "id": tiny("sam")}},
           "stages": [{"type": "plugins:CenterBox", "label": "cat"}, {"type": "segment", "model": "seg"}]}
    client, backend = world["app"](extra=seg)
    ref = str(world["root"] / "new.png")
    polygons = CONFIG.replace("BrushLabels", "PolygonLabels")
    boxes = '<View><Image name="img" value="$image"/><RectangleLabels name="bbox" toName="img">' \
            '<Label value="cat"/></RectangleLabels></View>'
    kinds = {}
    for name, config in (("brush", CONFIG), ("polygon", polygons), ("boxes", boxes)):
        r = client.post("/predict", json=predict([ref]) | {"label_config": config})
        assert r.status_code == 200, r.text
        kinds[name] = sorted({x["type"] for x in r.json()["results"][0]["result"]})
    assert kinds == {"brush": ["brushlabels"], "polygon": ["polygonlabels"],  # one region per object: its mask
                     "boxes": ["rectanglelabels"]}
    point = {"type": "keypointlabels", "from_name": "kp", "value": {"x": 50, "y": 50, "keypointlabels": ["cat"]}}
    with caplog.at_level(logging.INFO, "autolabel.serve"):
        assert client.post("/predict", json=predict([ref], {"result": [point]})).status_code == 200
    assert "smart tool: task 1: mask of " in caplog.text and " px in " in caplog.text
    backend.close()


def test_store_connections_are_one_per_thread_and_a_broken_store_is_named(tmp_path) -> None:
    import sqlite3

    Store(tmp_path).close()
    answers = StoreAnswers(tmp_path)
    assert answers._conn() is answers._conn()
    other: list = []
    thread = threading.Thread(target=lambda: other.append(answers._conn()))
    thread.start()
    thread.join()
    assert other[0] is not answers._conn()
    with sqlite3.connect(tmp_path / "autolabel.db") as conn:
        conn.execute("DROP TABLE images")
    from autolabel.errors import AutolabelError

    with pytest.raises(AutolabelError) as err:
        answers.find("0" * 64)
    assert str(err.value) == f"{tmp_path / 'autolabel.db'}: cannot read the run store (no such table: images)"


def test_a_request_whose_model_work_outlasts_its_time_is_a_408_naming_the_wait(world) -> None:
    """The deadline also bounds the wait for the model's thread (a pipeline that sleeps 3 s, a 1 s request)."""
    client, backend = world["app"](sleep=3.0, limits=Limits(max_request_seconds=1))
    # the request's two timers (the wait for the model, the app's own) share one deadline, and on a loaded machine
    # either may fire first: both name the limit (a 200 would mean the model's 3 s were waited for)
    message = refusal(client.post("/predict", json=predict([str(world["root"] / "new.png")])), 408,
                      ": more than the limit of 1 seconds one request may take (raise it with --max-request-seconds N "
                      "or AUTOLABEL_SERVE_MAX_REQUEST_SECONDS)")
    assert message.startswith("the request took too long")
    # the wait itself, without the app's timer: the model's thread is not waited for past the deadline
    with pytest.raises(RequestError) as err:  # (the 3 s sleep would return: a raise is the wait cut short)
        backend._on_model(time.sleep, 3.0, budget=Budget(Limits(max_request_seconds=1)), priority=0)
    assert err.value.status == 408
    assert str(err.value.message).startswith("the request took too long waiting for the model: more than the limit")
    backend.close()

