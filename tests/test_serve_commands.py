"""``autolabel serve``'s command line in-process: its defaults, and every setting refused before anything binds
(the subprocess versions are in tests/test_serve_security.py; these run where mutmut sees them)."""

from __future__ import annotations

import json
import socket

import pytest
from lsserver import free_port

from autolabel.cli import _parser, main
from autolabel.serve.limits import LIMITS


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
