"""Credentials in a Label Studio URL (``http://user:pass@host``) are refused everywhere a URL is given — push and
pull's ``--url``, a pipeline file's ``push.url`` — before anything runs: httpx would send them instead of the API
key, and the URL is printed in messages and stored in run.json and the run store. The messages mask them."""

from __future__ import annotations

import pytest
import yaml

from autolabel.cli import main
from autolabel.errors import AutolabelError
from autolabel.labelstudio.client import normalize_url
from autolabel.store import DB_NAME, Store

SECRET = "hunter2"


def test_normalize_url_refuses_credentials_and_masks_them() -> None:
    assert normalize_url(" http://ls.example:8080/ ") == "http://ls.example:8080"
    assert normalize_url("https://ls.example/a@b") == "https://ls.example/a@b"  # an @ in the path is no credential
    for url, words in ((f"http://admin:{SECRET}@ls.example:8080", "--url: credentials in the URL "
                                                                  "(http://***@ls.example:8080) are not used"),
                       (f"admin:{SECRET}@ls.example", "--url: expected http://HOST:PORT or https://HOST (got "
                                                      "'***@ls.example')")):
        with pytest.raises(AutolabelError) as err:
            normalize_url(url)
        assert str(err.value).startswith(words) and SECRET not in str(err.value)


def test_push_and_pull_refuse_them_in_one_line_without_printing_them(tmp_path, monkeypatch, capsys) -> None:
    Store(tmp_path).close()
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(
        {"ontology": ["cat"], "stages": [{"type": "plugins:CenterBox", "label": "cat"}]}))
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "the-key")
    url = f"http://admin:{SECRET}@127.0.0.1:9"
    assert main(["push", str(tmp_path), "--url", url, "--project", "p", "--pipeline", str(tmp_path / "p.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "credentials in the URL are not used" in err[0] and SECRET not in err[0]
    assert "(got 'http://***@127.0.0.1:9')" in err[0]
    assert main(["pull", "--url", url, "--project", "p", "--output", str(tmp_path / "pulled")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["autolabel: error: --url: credentials in the URL (http://***@127.0.0.1:9) are not used: remove "
                   "them and put the token in LABEL_STUDIO_API_KEY"]


def test_a_pipeline_files_push_url_with_credentials_stops_the_run_before_anything_is_stored(tmp_path, capsys) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(
        {"ontology": ["cat"], "stages": [{"type": "plugins:CenterBox", "label": "cat"}],
         "push": {"url": f"https://bot:{SECRET}@ls.example", "project": "p"}}))
    assert main(["run", str(tmp_path / "p.yaml"), "--input", str(tmp_path / "in"), "--output",
                 str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "push.url: credentials in the URL are not used" in err and SECRET not in err
    assert not (tmp_path / "out" / DB_NAME).exists() and not (tmp_path / "out" / "run.json").exists()
