"""Every attack of issue 19 against a real ``autolabel serve`` subprocess on 127.0.0.1, with limits set small so
crossing them is cheap: each is refused with its 4xx and a one-line JSON error naming the flag, the server's
memory stays bounded while it happens (RSS sampled from /proc), and recording HTTP servers — an attacker's, a
stand-in for Label Studio — show that no byte or token reaches the wrong place.

The servers run a model-free pipeline (tests/support/plugins.py's CenterBox, one second per batch: "the model is busy"
is cheap to arrange) over a run store with one labeled image.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from lsserver import free_port
from recording_server import Recorder, body, redirect, trickle
from test_serve import Served, env
from tiny_models import noise_image

from autolabel import Pipeline

pytestmark = pytest.mark.slow

MiB = 1024 * 1024
CONFIG = """<View><Image name="img" value="$image"/>
  <RectangleLabels name="bbox" toName="img"><Label value="cat"/></RectangleLabels></View>"""
LIMITS = ["--max-body-bytes", str(MiB), "--max-tasks", "50", "--max-image-bytes", str(2 * MiB),
          "--max-request-bytes", str(4 * MiB), "--max-request-seconds", "3", "--max-concurrent", "4",
          "--max-queued", "2", "--shutdown-timeout", "2"]
SECRET = b"DB_PASSWORD=hunter2"


def predict(*refs: str, project: str = "1.1") -> dict:
    return {"tasks": [{"id": i + 1, "data": {"image": ref}} for i, ref in enumerate(refs)], "project": project,
            "label_config": CONFIG, "params": {"login": None, "password": None, "context": None}}


def refused(r: httpx.Response, status: int, words: str) -> str:
    assert r.status_code == status, r.text
    assert list(r.json()) == ["error"] and "\n" not in r.json()["error"], r.text
    assert words in r.json()["error"], r.text
    return r.json()["error"]


class RSS:
    """The peak resident memory of a process while the block runs (sampled every 20 ms), in MB above the start."""

    def __init__(self, served: Served):
        self.served, self.peak, self.start = served, 0, 0
        self._stop = threading.Event()

    def __enter__(self) -> RSS:
        self.start = self.peak = self.served.rss_kb()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            try:
                self.peak = max(self.peak, self.served.rss_kb())
            except (OSError, AssertionError):
                return

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.start) / 1024


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory):
    """The files and the two recording servers every server of this module uses."""
    root = tmp_path_factory.mktemp("security")
    images, outside = root / "images", root / "outside"
    images.mkdir()
    outside.mkdir()
    noise_image(40, 30, seed=1).save(images / "known.png")
    noise_image(30, 20, seed=2).save(images / "fresh.png")
    (outside / "secret.png").write_bytes(SECRET)
    (images / "big.png").write_bytes(os.urandom(3 * MiB))  # over --max-image-bytes
    for i in range(5):  # 1.5 MB each: three of them pass --max-request-bytes 4 MiB
        (images / f"part{i}.png").write_bytes(os.urandom(3 * MiB // 2))
    os.mkfifo(images / "fifo.png")
    (images / "zero.png").symlink_to("/dev/zero")
    (images / "secret-link.png").symlink_to(outside / "secret.png")
    pipeline = root / "center.json"
    spec = {"name": "center", "ontology": ["cat"], "batch_size": 1,
            "stages": [{"type": "plugins:CenterBox", "label": "cat", "sleep": 1.0}]}
    pipeline.write_text(json.dumps(spec))
    (root / "in").mkdir()
    (root / "in" / "known.png").write_bytes((images / "known.png").read_bytes())
    assert Pipeline.from_yaml(pipeline).run(input=root / "in", output=root / "out").counts["labeled"] == 1
    with Recorder() as attacker, Recorder() as ls:
        yield {"root": root, "images": images, "outside": outside, "pipeline": pipeline, "attacker": attacker,
               "ls": ls}


def serve(site: dict, name: str, *args: str, extra_env: dict[str, str] | None = None) -> Served:
    return Served([str(site["pipeline"]), "--output", str(site["root"] / "out"), "--local-root", str(site["images"]),
                   "--allowed-hosts", "127.0.0.1", *LIMITS, *args], site["root"] / f"{name}.log",
                  extra_env=extra_env, timeout=120)


@pytest.fixture(scope="module")
def open_server(site):
    """No auth (loopback), the operator's token set but not Label Studio's URL: the setup of issue 19's token theft."""
    served = serve(site, "open", extra_env={"LABEL_STUDIO_API_KEY": "operator-token"})
    yield served
    assert served.stop() == 0
    assert "Traceback" not in served.log_text() and "operator-token" not in served.log_text()


# -- 1. reading the backend's disk ----------------------------------------------------------------------------------
def test_no_file_outside_the_roots_and_no_existence_oracle(open_server, site) -> None:
    images = site["images"]
    answers = []
    for ref in ("/etc/passwd", "file:///etc/passwd", str(site["outside"] / "secret.png"),
                str(images / "secret-link.png"), f"{images}/../outside/secret.png",
                str(site["outside"] / "does-not-exist.png")):
        r = httpx.post(open_server.url + "/predict", json=predict(ref), timeout=30)
        message = refused(r, 403, "outside the folders this backend reads (--local-root)")
        answers.append(message.replace(ref, "REF"))
        assert b"hunter2" not in r.content and b"root:" not in r.content
    assert len(set(answers)) == 1  # an existing and a missing file get the same answer


def test_devices_fifos_and_links_to_them_are_refused_at_once_with_memory_flat(open_server, site) -> None:
    images = site["images"]
    with RSS(open_server) as rss:
        t0 = time.monotonic()
        refused(httpx.post(open_server.url + "/predict", json=predict("/dev/zero"), timeout=30), 403, "outside")
        refused(httpx.post(open_server.url + "/predict", json=predict("/dev/urandom"), timeout=30), 403, "outside")
        refused(httpx.post(open_server.url + "/predict", json=predict(str(images / "zero.png")), timeout=30), 403,
                "outside the folders")
        refused(httpx.post(open_server.url + "/predict", json=predict(str(images / "fifo.png")), timeout=30), 403,
                "a FIFO, not an image file")
        assert time.monotonic() - t0 < 5
    assert rss.growth_mb < 30
    assert httpx.get(open_server.url + "/health", timeout=10).json()["stats"]["in_flight"] == {"active": 0, "queued": 0}


def test_a_web_page_cannot_reach_the_backend_through_the_browser(open_server) -> None:
    body_ = json.dumps(predict("/etc/passwd")).encode()
    r = httpx.post(open_server.url + "/predict", content=body_, headers={"Content-Type": "text/plain"}, timeout=10)
    refused(r, 415, "application/json")  # a form post needs no CORS preflight: refused
    r = httpx.post(open_server.url + "/predict", json=predict("/etc/passwd"), timeout=10,
                   headers={"Host": "attacker.example:9090"})  # DNS rebinding: the page's own name
    refused(r, 421, "--public-host")
    r = httpx.options(open_server.url + "/predict", headers={"Origin": "http://attacker.example",
                                                            "Access-Control-Request-Method": "POST"}, timeout=10)
    assert r.status_code == 405 and "access-control-allow-origin" not in r.headers


# -- 2. stealing Label Studio's token -------------------------------------------------------------------------------
def test_an_anonymous_setup_cannot_send_the_token_to_an_attacker(open_server, site) -> None:
    attacker = site["attacker"]
    attacker.routes["/data/upload/1/a.png"] = body(b"x")
    before = len(attacker.seen)
    r = httpx.post(open_server.url + "/setup", timeout=10,
                   json={"project": "1.1", "hostname": attacker.url, "access_token": "anything"})
    assert r.status_code == 200  # answered, but its URL and token are not used
    refused(httpx.post(open_server.url + "/predict", json=predict("/data/upload/1/a.png"), timeout=30), 400,
            "set LABEL_STUDIO_URL")
    assert len(attacker.seen) == before  # nothing reached the attacker, let alone the token
    assert "not proven to come from Label Studio" in open_server.log_text()


# -- 4. memory ------------------------------------------------------------------------------------------------------
def stream(url: str, total: int, chunk: int = MiB) -> tuple[int, bytes, int, float]:
    """POST a chunked body of ``total`` bytes over a raw socket while reading the answer: (status, body, bytes
    sent before the server stopped reading, seconds)."""
    host, port = url.removeprefix("http://").split(":")
    t0 = time.monotonic()
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.sendall(f"POST /predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                 "Transfer-Encoding: chunked\r\n\r\n".encode())
    answer = bytearray()
    done = threading.Event()

    def read() -> None:
        try:
            while data := sock.recv(65536):
                answer.extend(data)
                if b"\r\n\r\n" in answer and answer.endswith(b"}"):
                    break
        except OSError:
            pass
        done.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    sent, block = 0, f"{chunk:x}\r\n".encode() + b" " * chunk + b"\r\n"
    try:
        while sent < total and not done.is_set():
            sock.sendall(block)
            sent += chunk
    except OSError:  # the server closed the connection: it stopped reading
        pass
    done.wait(30)
    sock.close()
    head, _, data = bytes(answer).partition(b"\r\n\r\n")
    return int(head.split()[1]), data, sent, time.monotonic() - t0


def test_a_chunked_body_of_hundreds_of_megabytes_is_cut_at_the_limit(open_server) -> None:
    with RSS(open_server) as rss:
        status, data, sent, seconds = stream(open_server.url, 400 * MiB)
    assert status == 413 and "--max-body-bytes" in json.loads(data[data.index(b"{"):])["error"]
    assert rss.growth_mb < 40 and seconds < 30, (rss.growth_mb, seconds)
    host, port = open_server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:  # a length it never sends: no wait for it
        sock.sendall(f"POST /predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {10**12}\r\n\r\n{{}}".encode())
        answer = b""
        while not answer.endswith(b"}") and (data := sock.recv(65536)):
            answer += data
    assert answer.startswith(b"HTTP/1.1 413 ") and b"a body of 1000000000000 bytes: more than the limit" in answer


def test_many_tiny_tasks_and_big_or_repeated_images_are_refused_with_memory_flat(open_server, site) -> None:
    images = site["images"]
    with RSS(open_server) as rss:
        tiny_tasks = json.dumps({"tasks": [{"data": {"image": "a"}}] * 600_000}).encode()
        refused(httpx.post(open_server.url + "/predict", content=tiny_tasks, timeout=60,
                           headers={"Content-Type": "application/json"}), 413, "--max-body-bytes")
        refused(httpx.post(open_server.url + "/predict", json=predict(*["a"] * 51), timeout=30), 413,
                "51 tasks: more than the limit of 50 tasks in one predict request (raise it with --max-tasks N")
        refused(httpx.post(open_server.url + "/predict", json=predict(*[str(images / "big.png")] * 20), timeout=30),
                413, "larger than 2097152 bytes: more than the limit of 2097152 bytes of one image")
        refused(httpx.post(open_server.url + "/predict", timeout=30,
                           json=predict(*[str(images / f"part{i}.png") for i in range(5)])),
                413, "image bytes fetched: more than the limit of 4194304 image bytes fetched for one request")
    assert rss.growth_mb < 60, rss.growth_mb


def test_json_that_is_not_plain_json_is_a_400_not_a_500(open_server) -> None:
    for raw, words in ((b'{"tasks": [{"data": {"image": NaN}}]}', "NaN is not a JSON number"),
                       (b'{"tasks": 1e999}', "out of range"), (b"[" * 100_000, "nested too deeply")):
        r = httpx.post(open_server.url + "/predict", content=raw, headers={"Content-Type": "application/json"},
                       timeout=30)
        refused(r, 400, words)


# -- 5. hanging it --------------------------------------------------------------------------------------------------
def test_trickling_sources_end_at_the_deadline_and_never_stop_the_server_for_good(open_server, site) -> None:
    """Issue 19: 8 requests for a source sending a byte every 10 s stopped /predict for good. Now 4 hold the
    server's places (the others are refused at once), /health says so, and at the deadline all is free again."""
    attacker = site["attacker"]
    attacker.routes["/trickle.png"] = trickle(every=0.5)
    with ThreadPoolExecutor(8) as pool:
        t0 = time.monotonic()
        futures = [pool.submit(httpx.post, open_server.url + "/predict", json=predict(attacker.url + "/trickle.png"),
                               timeout=30) for _ in range(8)]
        time.sleep(1.0)
        health = httpx.get(open_server.url + "/health", timeout=5)
        answers = [f.result() for f in futures]
        seconds = time.monotonic() - t0
    assert health.status_code == 200 and health.json()["stats"]["in_flight"]["active"] == 4
    codes = sorted(r.status_code for r in answers)
    assert codes == [408] * 4 + [429] * 4, codes
    assert all("--max-request-seconds" in r.json()["error"] for r in answers if r.status_code == 408)
    assert all("--max-concurrent" in r.json()["error"] for r in answers if r.status_code == 429)
    assert seconds < 6
    r = httpx.post(open_server.url + "/predict", json=predict(str(site["images"] / "known.png")), timeout=30)
    assert r.status_code == 200  # free again


def test_store_answers_never_wait_behind_queued_model_requests(open_server, site) -> None:
    """45 requests needing the model (a second each, two may queue), then one answered from the store."""
    images = site["images"]
    for i in range(45):
        noise_image(20, 20, seed=1000 + i).save(images / f"new{i}.png")
    before = httpx.get(open_server.url + "/health", timeout=5).json()["stats"]
    with ThreadPoolExecutor(45) as pool:
        futures = [pool.submit(httpx.post, open_server.url + "/predict", json=predict(str(images / f"new{i}.png")),
                               timeout=60) for i in range(45)]
        deadline = time.monotonic() + 10
        while httpx.get(open_server.url + "/health", timeout=5).json()["stats"]["in_flight"] != \
                {"active": 0, "queued": 2} and time.monotonic() < deadline:
            time.sleep(0.02)
        t0 = time.monotonic()
        r = httpx.post(open_server.url + "/predict", json=predict(str(images / "known.png")), timeout=30)
        store_seconds = time.monotonic() - t0
        codes = [f.result().status_code for f in futures]
    assert r.status_code == 200 and store_seconds < 1.0, store_seconds
    after = httpx.get(open_server.url + "/health", timeout=5).json()["stats"]
    assert after["from_store"] - before.get("from_store", 0) == 1
    assert set(codes) <= {200, 429} and codes.count(200) == after["model_images"] - before.get("model_images", 0) >= 2
    assert codes.count(429) >= 20, codes  # most are refused at once (how many depends on how fast they arrive)


# -- 3. Label Studio's token as a confused deputy -------------------------------------------------------------------
AUTH = ("label-studio", "model-pass")


@pytest.fixture(scope="module")
def guarded_server(site):
    """Basic auth on; Label Studio's URL and token only from its (authenticated) setup call."""
    served = serve(site, "guarded", extra_env={"BASIC_AUTH_USER": AUTH[0], "BASIC_AUTH_PASS": AUTH[1]})
    ls, attacker = site["ls"], site["attacker"]
    ls.routes |= {"/data/upload/1/a.png": redirect("/data/upload/1/b.png"),
                  "/data/upload/1/b.png": redirect(attacker.url + "/cdn/b.png"),
                  "/data/upload/1/c.png": body((site["images"] / "fresh.png").read_bytes())}
    attacker.routes |= {"/cdn/b.png": redirect(ls.url + "/data/upload/1/c.png"),
                        "/to-api": redirect(ls.url + "/api/projects/")}
    yield served
    assert served.stop() == 0
    assert "ls-owner-token" not in served.log_text() and AUTH[1] not in served.log_text()


def test_anonymous_callers_get_nothing_and_change_nothing(guarded_server, site) -> None:
    for path, payload in (("/setup", {"hostname": site["attacker"].url, "access_token": "x"}),
                          ("/predict", predict("/data/upload/1/a.png")), ("/health", None)):
        r = httpx.request("GET" if payload is None else "POST", guarded_server.url + path, json=payload, timeout=10)
        refused(r, 401, "authentication required")


def test_the_token_goes_only_to_label_studios_files_on_every_hop(guarded_server, site) -> None:
    ls, attacker = site["ls"], site["attacker"]
    r = httpx.post(guarded_server.url + "/setup", auth=AUTH, timeout=10,
                   json={"project": "1.1", "hostname": ls.url, "access_token": "ls-owner-token", "schema": CONFIG})
    assert r.status_code == 200
    seen_ls, seen_attacker = len(ls.seen), len(attacker.seen)
    r = httpx.post(guarded_server.url + "/predict", json=predict("/data/upload/1/a.png"), auth=AUTH, timeout=30)
    assert r.status_code == 200, r.text
    hops = [(s.path, s.authorization) for s in ls.seen[seen_ls:]] + \
        [(s.path, s.authorization) for s in attacker.seen[seen_attacker:]]
    assert hops == [("/data/upload/1/a.png", "Token ls-owner-token"), ("/data/upload/1/b.png", "Token ls-owner-token"),
                    ("/data/upload/1/c.png", None), ("/cdn/b.png", None)]


@pytest.mark.parametrize("ref, status", [
    ("/data/../api/projects/", 400), ("/data/upload/%2e%2e/%2e%2e/api/projects/", 400),
    ("/data/local-files/?d=../../../etc/passwd", 400), ("ATTACKER/to-api", 403), ("LS/api/projects/", 403),
])
def test_label_studios_api_is_never_called_through_the_backend(guarded_server, site, ref: str, status: int) -> None:
    ls = site["ls"]
    httpx.post(guarded_server.url + "/setup", auth=AUTH, timeout=10,
               json={"project": "1.1", "hostname": ls.url, "access_token": "ls-owner-token"})
    ref = ref.replace("ATTACKER", site["attacker"].url).replace("LS", ls.url)
    r = httpx.post(guarded_server.url + "/predict", json=predict(ref), auth=AUTH, timeout=30)
    refused(r, status, "Label Studio")
    assert not any("/api/" in s.path for s in ls.seen)


# -- 6. start-up refusals ----------------------------------------------------------------------------------------
def start(site: dict, *args: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "autolabel", "serve", str(site["pipeline"]), *args],
                          capture_output=True, text=True, env=env() | (extra_env or {}), timeout=60)


BAD_STARTS = [
    ([], {"BASIC_AUTH_USER": "ls", "BASIC_AUTH_PASS": ""}, "BASIC_AUTH_PASS is empty while BASIC_AUTH_USER is set"),
    (["--host", "0.0.0.0"], {}, "--host 0.0.0.0: serving beyond this machine without authentication"),
    ([], {"LABEL_STUDIO_URL": "http://admin:hunter2@ls.example:8080"}, "LABEL_STUDIO_URL: credentials in the URL"),
    (["--local-root", "/no/such/folder"], {}, "--local-root: /no/such/folder is not a folder"),
    ([], {"AUTOLABEL_SERVE_MAX_TASKS": "lots"}, "AUTOLABEL_SERVE_MAX_TASKS: expected a positive whole number"),
    (["--max-body-bytes", "0"], {}, "--max-body-bytes: expected a positive whole number"),
]


def test_unsafe_or_bad_settings_exit_2_before_binding(site) -> None:
    with ThreadPoolExecutor(len(BAD_STARTS)) as pool:  # each a separate `autolabel serve`, started side by side
        outs = list(pool.map(lambda case: start(site, "--port", str(free_port()), *case[0], extra_env=case[1]),
                             BAD_STARTS))
    for (_args, _env, words), out in zip(BAD_STARTS, outs):
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"autolabel: error: {words}"), \
            out.stderr
        assert "hunter2" not in out.stderr


def test_insecure_binds_beyond_loopback_only_with_a_loud_warning(site) -> None:
    """Never actually exposed here: the port is taken (bound, not listening), so the command stops right after
    the warning."""
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        out = start(site, "--host", "0.0.0.0", "--insecure", "--port", str(taken.getsockname()[1]))
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and lines[0].startswith("autolabel: WARNING: --insecure: serving on 0.0.0.0 WITHOUT "
                                                       "AUTHENTICATION"), out.stderr
    assert lines[1].startswith("autolabel: error: --port: 0.0.0.0:") and "is in use" in lines[1]


def test_the_security_docs_name_every_limit_flag_and_variable() -> None:
    from autolabel.serve.limits import LIMITS, env_name, flag

    text = (Path(__file__).resolve().parents[2] / "docs" / "reference" / "serve-security.md").read_text()
    for limit in LIMITS:
        assert flag(limit.name) in text and env_name(limit.name) in text and f"{limit.default:,}" in text, limit.name


def test_sigterm_with_requests_in_flight_exits_within_its_bound_without_tracebacks(open_server, site) -> None:
    """The last test of the module (it stops the open server): requests in flight on sources that never finish
    (their deadline is far), then SIGTERM. The server answers them 503 when its grace period ends, and exits."""
    served = open_server
    site["attacker"].routes["/forever.png"] = trickle(every=0.5)
    pool = ThreadPoolExecutor(3)
    futures = [pool.submit(httpx.post, served.url + "/predict", json=predict(site["attacker"].url + "/forever.png"),
                           timeout=60) for _ in range(3)]  # --max-request-seconds 3: the grace period (2 s) ends first
    deadline = time.monotonic() + 10
    while httpx.get(served.url + "/health", timeout=5).json()["stats"]["in_flight"]["active"] < 3 and \
            time.monotonic() < deadline:
        time.sleep(0.05)
    t0 = time.monotonic()
    served.proc.send_signal(signal.SIGTERM)
    served.proc.wait(timeout=20)
    seconds = time.monotonic() - t0
    answers = [f.result(timeout=10) for f in futures]
    pool.shutdown()
    for r in answers:  # answered when the grace period ran out (or, on a slow machine, at their own deadline)
        assert r.status_code in (503, 408) and list(r.json()) == ["error"], r.text
    assert served.proc.returncode == 0 and seconds < 2 + 3, seconds  # --shutdown-timeout 2, then the close
    assert "Traceback" not in served.log_text(), served.log_text()[-3000:]
