"""Which checkpoint revision run.json records, and the loader's small decisions, against a hub cache laid out on
disk the way huggingface_hub writes it (``models--owner--name/refs/<name>`` → ``snapshots/<commit>/``)."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from autolabel.config import ModelSpec
from autolabel.errors import ModelLoadError
from autolabel.models import hub
from autolabel.models.sam import Sam
from real_checkpoints import hub_cache
from tiny_models import tiny

MAIN, TAGGED = "a" * 40, "0123456789abcdef" * 2 + "01234567"


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A hub cache this process reads, holding the tiny SAM as ``acme/sam`` at two commits: ``main`` and ``v2``."""
    from huggingface_hub import constants

    root = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub_cache(root, "acme/sam", tiny("sam"), MAIN)
    hub_cache(root, "acme/sam", tiny("sam"), TAGGED)
    (root / "models--acme--sam" / "refs" / "main").write_text(MAIN)
    (root / "models--acme--sam" / "refs" / "v2").write_text(TAGGED)
    return root


def spec(model_id: str, revision: str | None = None) -> ModelSpec:
    return ModelSpec(type="sam", id=model_id, revision=revision)


def test_the_commit_recorded_is_the_snapshot_the_revision_resolves_to(cache: Path) -> None:
    assert hub.snapshot_commit(spec("acme/sam")) == MAIN  # no revision: main
    assert hub.snapshot_commit(spec("acme/sam", "main")) == MAIN
    assert hub.snapshot_commit(spec("acme/sam", "v2")) == TAGGED  # a tag, through refs/
    assert hub.snapshot_commit(spec("acme/sam", TAGGED)) == TAGGED  # a commit, as it is
    assert hub.snapshot_commit(spec("acme/sam", "v3")) is None  # not cached
    assert hub.snapshot_commit(spec("acme/other")) is None
    # a model loaded by hub id records that commit, whatever its config says
    for revision, commit in ((None, MAIN), ("v2", TAGGED)):
        model = Sam.load(spec("acme/sam", revision))
        assert (model.id, model.revision) == ("acme/sam", commit)


def test_a_snapshot_folder_given_as_a_path_records_its_commit_and_other_folders_none(cache: Path,
                                                                                      tmp_path: Path) -> None:
    snapshot = cache / "models--acme--sam" / "snapshots" / TAGGED
    assert hub.snapshot_commit(spec(str(snapshot))) == TAGGED
    assert Sam.load(spec(str(snapshot))).revision == TAGGED
    link = tmp_path / "pinned"
    link.symlink_to(snapshot)  # a link to a snapshot: the snapshot it resolves to
    assert hub.snapshot_commit(spec(str(link))) == TAGGED
    odd = cache / "models--acme--sam" / "snapshots" / "not-a-commit"
    odd.mkdir()
    assert hub.snapshot_commit(spec(str(odd))) is None
    elsewhere = tmp_path / "snapshots" / MAIN  # named like one, but not inside a models-- folder
    elsewhere.mkdir(parents=True)
    assert hub.snapshot_commit(spec(str(elsewhere))) is None
    assert Sam.load(spec(tiny("sam"))).revision is None  # a plain folder: nothing to record
    assert hub.snapshot_commit(spec("./no/such/folder")) is None  # a path that is no folder: no hub lookup


def test_without_a_snapshot_the_config_commit_then_the_requested_revision_is_recorded(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert hub.revision_of(SimpleNamespace(config=SimpleNamespace(_commit_hash="c" * 40)),
                           spec("acme/other", "v9")) == "c" * 40
    assert hub.revision_of(SimpleNamespace(config=SimpleNamespace()), spec("acme/other", "v9")) == "v9"
    assert hub.revision_of(SimpleNamespace(_commit_hash="d" * 40), spec("acme/other")) == "d" * 40  # obj is config
    assert hub.revision_of(SimpleNamespace(config=SimpleNamespace(_commit_hash="c" * 40)), spec("acme/sam")) == MAIN

    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("malformed cache")

    monkeypatch.setattr("huggingface_hub.try_to_load_from_cache", broken)
    assert hub.snapshot_commit(spec("acme/sam")) is None  # a broken cache never fails a loaded run


def test_ids_that_can_only_be_folders() -> None:
    for path in ("./x", "/x", "~/x", "a/b/c", "C:\\models\\x", "\\\\server\\x", "c:x", ".hidden"):
        assert hub.looks_like_path(path), path
    for hub_id in ("owner/name", "name", "owner/name-v1.5"):
        assert not hub.looks_like_path(hub_id), hub_id


@pytest.mark.parametrize(("env", "offline"), [
    ({"HF_HUB_OFFLINE": "1"}, True), ({"HF_HUB_OFFLINE": " ON "}, True), ({"TRANSFORMERS_OFFLINE": "yes"}, True),
    ({"HF_HUB_OFFLINE": "True"}, True), ({"HF_HUB_OFFLINE": "0"}, False), ({"HF_HUB_OFFLINE": ""}, False),
    ({}, False), ({"HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "1"}, False),  # the first one set decides
])
def test_offline_reads_the_environment_now(monkeypatch: pytest.MonkeyPatch, env: dict, offline: bool) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert hub.offline() is offline
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert hub.offline() is True


def test_the_hub_is_probed_at_its_endpoints_host_and_port(monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    for key in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(key, raising=False)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
        assert hub.hub_reachable(timeout=2.0) is True
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")  # closed now
    assert hub.hub_reachable(timeout=2.0) is False
    monkeypatch.setenv("all_proxy", "http://proxy:3128")  # behind a proxy: assumed reachable
    assert hub.hub_reachable(timeout=0.01) is True


def test_the_messages_name_the_model_the_revision_and_the_type_that_loads_it() -> None:
    line = hub.missing_message(spec("acme/sam", "v2"), "the hub cannot be reached from this machine")
    assert "model 'acme/sam' (sam) is not in the local Hugging Face cache (" in line
    assert "and the hub cannot be reached from this machine: on a machine with network run `hf download acme/sam " \
           "--revision v2` (older clients: `huggingface-cli download acme/sam --revision v2`)" in line
    assert "`hf download acme/sam` (older" in hub.missing_message(spec("acme/sam"), "x")
    known = hub.wrong_type_message(spec("/m"), "sam2_video", ("sam",))
    assert known == ("model '/m': the checkpoint is a 'sam2_video' model; model type 'sam' loads 'sam' checkpoints "
                     "(set the model's type: sam2, or point id: at a sam checkpoint)")
    unknown = hub.wrong_type_message(spec("/m"), "bert", ("sam", "sam_hq"))
    assert unknown.endswith("loads 'sam', 'sam_hq' checkpoints (no built-in model type loads it; point id: at a sam "
                            "checkpoint)")


def test_a_folder_that_fails_to_load_names_it_and_what_it_should_hold(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")  # no model_type
    with pytest.raises(ModelLoadError) as err:
        hub.from_pretrained(__import__("transformers").AutoConfig, spec(str(tmp_path)))
    assert str(err.value).startswith(f"model folder {str(tmp_path)!r} (sam): ")
    assert str(err.value).endswith("(it should hold the files that save_pretrained writes: config.json, the weights, "
                                   "the processor's files)")


def test_config_dict_keeps_keys_a_config_class_would_drop(tmp_path: Path) -> None:
    config = json.loads((Path(tiny("sam")) / "config.json").read_text()) | {"auto_map": {"AutoModel": "x.Y"}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert hub.config_dict(spec(str(tmp_path)))["auto_map"] == {"AutoModel": "x.Y"}


def test_to_device_casts_floating_tensors_only() -> None:
    batch = {"pixel_values": torch.zeros(1, 3, dtype=torch.float32), "input_ids": torch.ones(2, dtype=torch.int64),
             "names": ["a"]}
    out = hub.to_device(batch, "cpu", torch.float16)
    assert out["pixel_values"].dtype == torch.float16 and out["input_ids"].dtype == torch.int64
    assert out["names"] == ["a"] and set(out) == set(batch)
    moved = hub.to_device(batch, "meta", torch.float32)  # torch's "meta" device stands in for a GPU (none here)
    assert moved["pixel_values"].device.type == moved["input_ids"].device.type == "meta"


def test_without_a_port_the_hub_is_probed_on_its_schemes_port(monkeypatch: pytest.MonkeyPatch) -> None:
    """The connection is recorded instead of opened (no network here): the host and port the endpoint implies."""
    from huggingface_hub import constants

    for key in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(key, raising=False)
    asked = []

    def refuse(address, timeout):
        asked.append((address, timeout))
        raise ConnectionRefusedError(address)

    monkeypatch.setattr(socket, "create_connection", refuse)
    for endpoint in ("https://hub.example", "http://hub.example", "http://hub.example:8080", "https://:8443"):
        monkeypatch.setattr(constants, "ENDPOINT", endpoint)
        assert hub.hub_reachable(timeout=0.5) is False
    assert asked == [(("hub.example", 443), 0.5), (("hub.example", 80), 0.5), (("hub.example", 8080), 0.5),
                     (("huggingface.co", 8443), 0.5)]


class RefusingHub:
    """A checkpoint class whose every load fails as the hub fails a gated or missing repository; records the calls."""

    calls: list[tuple[str, dict]] = []

    @classmethod
    def from_pretrained(cls, source: str, **kwargs: object) -> None:
        cls.calls.append((source, kwargs))
        raise OSError("401 Client Error: access to the repository is restricted.\nLog in first")


@pytest.mark.parametrize("model_type", ["sam3", "sam2"])
def test_a_failed_download_says_what_to_do_and_for_a_gated_model_to_accept_its_licence(
    model_type: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")  # the hub counts as reachable: the load is tried
    monkeypatch.setattr(RefusingHub, "calls", [])
    with pytest.raises(ModelLoadError) as err:
        hub.from_pretrained(RefusingHub, ModelSpec(type=model_type, id="facebook/x", revision="v1"), dtype="d")
    assert RefusingHub.calls == [("facebook/x", {"revision": "v1", "local_files_only": True, "dtype": "d"}),
                                 ("facebook/x", {"revision": "v1", "dtype": "d"})]  # the cache, then the hub
    line = str(err.value)
    assert line.startswith(f"model 'facebook/x' ({model_type}): cannot download: 401 Client Error: access to the "
                           "repository is restricted. Log in first (check the id and revision, ")
    if model_type == "sam3":  # gated: the licence to accept, on the model's page, then log in
        assert line.endswith("accept the SAM License on https://huggingface.co/facebook/x (the checkpoint is gated), "
                             "log in with `hf auth login`, or set id: to a local folder)")
    else:
        assert line.endswith("log in with `hf auth login` for gated models, or set id: to a local folder)")


def test_the_licence_page_is_on_the_hub_the_user_set_with_or_without_a_trailing_slash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from huggingface_hub import constants

    for endpoint in ("https://hub.example.org/", "https://hub.example.org"):  # HF_ENDPOINT as users write it
        monkeypatch.setattr(constants, "ENDPOINT", endpoint)
        assert hub.gated_step(ModelSpec(type="sam3", id="facebook/sam3")).startswith(
            "accept the SAM License on https://hub.example.org/facebook/sam3 (the checkpoint is gated)")
