"""``autolabel serve``'s command line in-process: its defaults, and every setting refused before anything binds
(the subprocess versions are in tests/serve/test_serve_security.py; these run where mutmut sees them)."""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import signal
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from lsserver import free_port

from autolabel.cli import _parser, main
from autolabel.serve.limits import LIMITS, env_name, flag
from autolabel.store import Store


@pytest.fixture
def pipeline(tmp_path, monkeypatch):
    for name in ("BASIC_AUTH_USER", "BASIC_AUTH_PASS", "LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY",
                 *(f"AUTOLABEL_SERVE_{limit.name.upper()}" for limit in LIMITS)):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "center.json"
    path.write_text(json.dumps({"name": "c", "ontology": ["cat"],
                                "stages": [{"type": "plugins:CenterBox", "label": "cat"}]}))
    return str(path)


def test_the_defaults_serve_this_machine_only_and_read_nothing_local(pipeline) -> None:
    args = _parser().parse_args(["serve", pipeline])
    assert (args.host, args.port, args.insecure, args.local_root, args.public_host) == ("127.0.0.1", 9090, False, [],
                                                                                         [])
    assert (args.allowed_hosts, args.label_studio_url, args.output, args.write_back) == (None, None, None, False)
    assert (args.shutdown_timeout, args.embedding_cache, args.log_level) == (10.0, 16, "info")
    assert all(getattr(args, limit.name) is None for limit in LIMITS)  # unset: the variable, then the default
    args = _parser().parse_args(["serve", pipeline, "--max-tasks", "5", "--local-root", "/a", "--local-root", "/b",
                                 "--public-host", "ml"])
    assert (args.max_tasks, args.local_root, args.public_host) == (5, ["/a", "/b"], ["ml"])
    assert _parser().parse_args(["serve", pipeline, "--embedding-cache", "4"]).embedding_cache == 4  # a number


def listening(port: int) -> set[str]:
    """The local addresses sockets of this machine listen on at ``port`` (Linux: /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("tcp", "tcp6"):
        path = Path("/proc/net") / table
        for line in path.read_text().splitlines()[1:] if path.is_file() else []:
            local, state = line.split()[1], line.split()[3]
            address, _, hexport = local.rpartition(":")
            raw = bytes.fromhex(address)  # 32-bit words in host (little-endian) order
            if state == "0A" and int(hexport, 16) == port:
                found.add(str(ipaddress.ip_address(b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4)))))
    return found


def run(pipeline: str, *args: str) -> int:
    return main(["serve", pipeline, "--port", str(free_port()), *args])


@pytest.mark.parametrize("args, env, line", [
    (["--write-back"], {}, "--write-back: needs --output DIR (the run store to write to)"),
    (["--shutdown-timeout", "0"], {}, "--shutdown-timeout: expected a positive number of seconds (got 0.0)"),
    ([], {"BASIC_AUTH_PASS": "pw"}, "BASIC_AUTH_USER is not set while BASIC_AUTH_PASS is set: basic auth is never "
                                    "turned off by an empty value; set both, or unset both"),
    (["--host", "0.0.0.0"], {}, "--host 0.0.0.0: serving beyond this machine without authentication: set "
                                "BASIC_AUTH_USER and BASIC_AUTH_PASS (and the same in the model's settings in Label "
                                "Studio), or pass --insecure to accept that anyone who reaches the port can use the "
                                "backend"),
    (["--max-tasks", "0"], {}, "--max-tasks: expected a positive whole number (tasks in one predict request; got 0)"),
    (["--local-root", "/no/such/dir"], {}, "--local-root: /no/such/dir is not a folder; name the folder that holds "
                                           "the images"),
    ([], {"LABEL_STUDIO_URL": "http://u:pw@ls"}, "LABEL_STUDIO_URL: credentials in the URL (http://***@ls) are not "
                                                 "used: remove them and put the token in LABEL_STUDIO_API_KEY"),
    (["--label-studio-url", "ls:8080"], {}, "--label-studio-url: expected http://HOST:PORT or https://HOST (got "
                                            "'ls:8080')"),
    (["--interactive-model", "sam"], {}, "--interactive-model: unknown model 'sam' (known: none)"),
])
def test_bad_settings_exit_2_with_one_line(pipeline, monkeypatch, capsys, args, env, line) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert run(pipeline, *args) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"autolabel: error: {line}"]


def test_httpx_never_logs_the_image_urls_it_fetches(pipeline, capsys) -> None:
    """httpx logs every request's URL at INFO (a pre-signed URL is a credential): the command quiets it alone, and
    leaves the other loggers to --log-level. (An unknown --interactive-model ends the command after logging is set.)"""
    quiet, root = logging.getLogger("httpx"), logging.getLogger()
    saved = quiet.level, root.level
    quiet.setLevel(logging.NOTSET)
    try:
        assert run(pipeline, "--interactive-model", "sam") == 2
        assert (quiet.level, root.level) == (logging.WARNING, saved[1])
    finally:
        quiet.setLevel(saved[0])
        root.setLevel(saved[1])
    assert "unknown model 'sam'" in capsys.readouterr().err


def test_port_out_of_range_and_taken(pipeline, capsys) -> None:
    assert main(["serve", pipeline, "--port", "0"]) == 2
    assert capsys.readouterr().err.strip() == "autolabel: error: --port: expected 1..65535 (got 0)"
    assert main(["serve", pipeline, "--port", "65536"]) == 2
    assert "got 65536" in capsys.readouterr().err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", pipeline, "--port", str(port)]) == 2
    assert capsys.readouterr().err.strip() == (f"autolabel: error: --port: 127.0.0.1:{port} is in use; pass another "
                                               "--port (or --host)")


def test_insecure_prints_its_warning_first(pipeline, capsys) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        port = taken.getsockname()[1]
        assert main(["serve", pipeline, "--host", "0.0.0.0", "--insecure", "--port", str(port)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "autolabel: WARNING: --insecure: serving on 0.0.0.0 WITHOUT AUTHENTICATION: anyone who can reach this port "
        "can run the models and read what the backend can read; set BASIC_AUTH_USER and BASIC_AUTH_PASS",
        f"autolabel: error: --port: 0.0.0.0:{port} is in use; pass another --port (or --host)"]


GOLDEN_HELP = Path(__file__).resolve().parents[1] / "golden" / "serve_help.txt"


def test_the_help_text_is_the_reviewed_one(monkeypatch, capsys) -> None:
    """``autolabel serve --help`` word for word (at 120 columns): its text is what operators read about auth, roots,
    hosts and limits. After an intended change: ``AUTOLABEL_UPDATE_GOLDEN=1 pytest tests/serve/test_serve_commands.py``,
    then review ``git diff tests/golden``."""
    monkeypatch.setenv("COLUMNS", "120")
    with pytest.raises(SystemExit) as done:
        main(["serve", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    if os.environ.get("AUTOLABEL_UPDATE_GOLDEN"):
        GOLDEN_HELP.write_text(text)
        pytest.skip("golden help rewritten: review `git diff tests/golden` and run again without the flag")
    assert text == GOLDEN_HELP.read_text()
    for limit in LIMITS:  # and it agrees with the limits' table
        assert f"{flag(limit.name)} N" in text and env_name(limit.name) in text


def test_serve_in_process_until_sigint(pipeline, tmp_path, monkeypatch, capsys, caplog) -> None:
    """The whole command in this process: flags reach the backend, then Ctrl-C stops it — a request still in flight
    answered 503 when the grace period ends — and the caller's signal handlers are back afterwards."""
    from recording_server import Recorder, body, trickle
    from tiny_models import noise_image

    monkeypatch.setenv("BASIC_AUTH_USER", "ls")
    monkeypatch.setenv("BASIC_AUTH_PASS", "pw")
    monkeypatch.setenv("AUTOLABEL_SERVE_MAX_TASKS", "3")
    noise_image(20, 10).save(tmp_path / "a.png")
    port = free_port()
    url, auth = f"http://127.0.0.1:{port}", ("ls", "pw")
    before = signal.getsignal(signal.SIGINT)
    seen: dict = {}

    def client() -> None:
        try:
            with Recorder() as web:
                web.routes |= {"/b.png": body((tmp_path / "a.png").read_bytes()), "/slow.png": trickle(0.5)}
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    try:
                        if httpx.get(url + "/health", auth=auth, timeout=2).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    time.sleep(0.1)
                seen["listening"] = listening(port)
                seen["anonymous"] = httpx.get(url + "/health", timeout=5).status_code
                seen["health"] = httpx.get(url + "/health", auth=auth, timeout=5).json()
                seen["public_host"] = httpx.get(url + "/health", auth=auth, timeout=5,
                                                headers={"Host": "ml.example:1"}).status_code
                config = '<View><Image name="i" value="$image"/><RectangleLabels name="b" toName="i">' \
                         '<Label value="cat"/></RectangleLabels></View>'
                refs = [str(tmp_path / "a.png"), web.url + "/b.png"]
                tasks = [{"id": i, "data": {"image": ref}} for i, ref in enumerate(refs)]
                r = httpx.post(url + "/predict", auth=auth, timeout=30, json={"tasks": tasks, "label_config": config})
                seen["predict"] = (r.status_code, [len(p["result"]) for p in r.json().get("results", [])])
                r = httpx.post(url + "/predict", auth=auth, timeout=30,
                               json={"tasks": tasks * 2, "label_config": config})
                seen["too_many"] = r.status_code
                slow_body = {"tasks": [{"data": {"image": web.url + "/slow.png"}}], "label_config": config}
                slow = threading.Thread(target=lambda: seen.setdefault("in_flight", httpx.post(
                    url + "/predict", auth=auth, timeout=30, json=slow_body).status_code))
                slow.start()
                time.sleep(0.5)
                os.kill(os.getpid(), signal.SIGINT)
                slow.join(30)
        finally:
            if "in_flight" not in seen:
                os.kill(os.getpid(), signal.SIGINT)

    helper = threading.Thread(target=client, daemon=True)
    helper.start()
    with caplog.at_level(logging.INFO, "autolabel.serve"):
        code = main(["serve", pipeline, "--port", str(port), "--local-root", str(tmp_path), "--allowed-hosts",
                     "127.0.0.1,10.0.0.0/8", "--model-version", "v9", "--public-host", "ml.example",
                     "--shutdown-timeout", "1", "--output", str(tmp_path / "out"), "--write-back"])
    helper.join(10)
    assert code == 0 and signal.getsignal(signal.SIGINT) is before
    assert seen["listening"] == {"127.0.0.1"}  # --host's address only, not every interface
    assert seen["anonymous"] == 401 and seen["public_host"] == 200
    assert seen["health"]["model_version"] == "v9" and seen["health"]["status"] == "UP"
    assert seen["predict"] == (200, [1, 1]) and seen["too_many"] == 413 and seen["in_flight"] == 503
    err = capsys.readouterr().err
    assert f"autolabel: serving {pipeline} on http://127.0.0.1:{port} (model_version 'v9'); loading models…" in err
    assert (f"basic auth: on; local roots: {tmp_path}; Label Studio: from a setup call (basic auth proves it) "
            "(token: not set); image hosts: 127.0.0.1, 10.0.0.0/8") in caplog.text
    assert "limits: --max-body-bytes 16777216; --max-tasks 3; --max-prompt-regions 64;" in caplog.text
    with Store(tmp_path / "out") as store:  # --output and --write-back reached the backend
        (row,) = store.images()  # the local image and the web one have the same content: one row
        assert (row["rel_path"], row["path"]) == ("a.png", str(tmp_path / "a.png"))
        assert store.runs()[0]["status"] == "ok"


def test_a_model_that_cannot_load_ends_the_command_with_exit_1(pipeline, tmp_path, capsys, caplog) -> None:
    path = tmp_path / "broken.json"
    path.write_text(json.dumps({"name": "b", "ontology": ["cat"], "models": {"m": {"type": "plugins:BrokenModel",
                                                                                   "id": "x"}},
                                "stages": [{"type": "plugins:CenterBox", "label": "cat"}]}))
    with caplog.at_level(logging.INFO, "autolabel.serve"):
        assert main(["serve", str(path), "--port", str(free_port())]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "autolabel: error: model 'm' (x): cannot load: OSError: no file named model.safetensors in x")
    assert ("basic auth: OFF; local roots: none (local paths refused); Label Studio: not set (token: not set); "
            "image hosts: public addresses and Label Studio's") in caplog.text
