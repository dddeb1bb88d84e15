"""Loading checkpoints: local folders, the cache, and one clear line when weights cannot be had here."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from autolabel.cli import main
from autolabel.config import ModelSpec
from autolabel.errors import ModelLoadError
from autolabel.models import hub
from autolabel.models.grounding_dino import GroundingDino
from autolabel.models.pool import ModelPool
from autolabel.models.sam import Sam2
from tiny_models import tiny

PIPELINES = Path(__file__).parents[2] / "pipelines"


def test_a_hub_model_missing_offline_names_the_model_and_both_fixes():
    spec = ModelSpec(type="grounding_dino", id="autolabel-tests/no-such-model", revision="v1.0")
    with pytest.raises(ModelLoadError) as err:
        GroundingDino.load(spec)
    line = str(err.value)
    assert "\n" not in line
    assert line.startswith(
        "model 'autolabel-tests/no-such-model' (grounding_dino) is not in the local Hugging Face cache"
    )
    assert "HF_HUB_OFFLINE is set" in line
    assert "`hf download autolabel-tests/no-such-model --revision v1.0`" in line
    assert "set the model's id: to a local folder" in line


def test_an_unreachable_hub_fails_at_once_instead_of_retrying(monkeypatch):
    from huggingface_hub import constants
    from transformers import AutoConfig

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=3.0: False)
    start = time.perf_counter()
    with pytest.raises(ModelLoadError, match="the hub cannot be reached from this machine: on a machine with network"):
        hub.from_pretrained(AutoConfig, ModelSpec(type="sam2", id="autolabel-tests/no-such-model"))
    assert time.perf_counter() - start < 5


def test_hub_reachable_says_no_for_a_closed_port(monkeypatch):
    from huggingface_hub import constants

    for key in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    assert hub.hub_reachable(timeout=1.0) is False


@pytest.mark.parametrize("model_id", ["./no/such/folder", "/no/such/folder", "models/sam2/checkpoint"])
def test_a_path_that_is_not_a_folder_says_so(model_id):
    with pytest.raises(ModelLoadError, match=rf"^model '{model_id}' \(sam2\): no such folder"):
        Sam2.load(ModelSpec(type="sam2", id=model_id))


def test_a_folder_of_another_family_is_refused_not_loaded_with_random_weights():
    with pytest.raises(ModelLoadError, match=r"the checkpoint is a 'sam2' model; model type 'grounding_dino' loads "
                                             r"'grounding-dino', 'mm-grounding-dino' checkpoints"):
        GroundingDino.load(ModelSpec(type="grounding_dino", id=tiny("sam2")))


def test_a_folder_without_a_checkpoint_says_what_it_should_hold(tmp_path):
    with pytest.raises(ModelLoadError, match=r"should hold the files that save_pretrained writes"):
        Sam2.load(ModelSpec(type="sam2", id=str(tmp_path)))


def test_a_local_folder_loads_on_cpu_in_float32_and_is_loaded_once_per_pool():
    import torch

    pool = ModelPool({"seg": ModelSpec(type="sam2", id=tiny("sam2"))})
    model = pool.get("seg")
    assert isinstance(model, Sam2) and pool.get("seg") is model
    assert (model.device, model.dtype, model.model.dtype) == ("cpu", torch.float32, torch.float32)
    assert model.revision is None and pool.versions()["seg"] == {"type": "sam2", "id": tiny("sam2"), "revision": None}


def test_the_model_is_put_on_the_device_the_spec_names_in_eval_mode():
    """torch's "meta" device stands in for a GPU (none here): a device other than the CPU it loads on."""
    model = Sam2.load(ModelSpec(type="sam2", id=tiny("sam2"), device="meta"))
    assert model.device == "meta" and {p.device.type for p in model.model.parameters()} == {"meta"}
    assert not model.model.training


def test_running_a_shipped_pipeline_without_its_weights_is_one_line_and_exit_code_1(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    from tiny_models import noise_image

    noise_image(32, 32).save(tmp_path / "in" / "a.png")
    code = main(["run", str(PIPELINES / "grounding-sam2.yaml"), "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"),
                 "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err == [
        "autolabel: error: " + hub.missing_message(
            ModelSpec(type="grounding_dino", id="IDEA-Research/grounding-dino-tiny"), "HF_HUB_OFFLINE is set")
    ]


def test_half_precision_checkpoints_take_inputs_in_their_dtype_and_give_float32_outputs():
    """What runs on CUDA by default (bf16/fp16): pixels and boxes are cast to the model's dtype, results are float32."""
    import numpy as np
    import torch

    from autolabel.models.owlv2 import Owlv2
    from autolabel.models.sam import Sam
    from tiny_models import noise_image

    images = [noise_image(150, 60), noise_image(80, 120)]
    for cls, kind in [(GroundingDino, "grounding_dino"), (Owlv2, "owlv2")]:
        model = cls.load(ModelSpec(type=kind, id=tiny(kind), dtype="bfloat16"))
        assert model.model.dtype == torch.bfloat16
        found = model.detect(images, ["cat", "dog"], 0.0, 0.0)
        assert [b.xyxy.dtype for b in found] == [np.float32] * 2 and all(len(b) for b in found)
    for cls, kind in [(Sam, "sam"), (Sam2, "sam2")]:
        model = cls.load(ModelSpec(type=kind, id=tiny(kind), dtype="bfloat16"))
        masks = model.segment(images, [np.array([[0, 0, 50, 30]], np.float32)] * 2, multimask=True)
        assert [m.masks.shape for m in masks] == [(1, 60, 150), (1, 120, 80)]
        assert masks[0].predicted_iou.dtype == np.float32


def test_auto_device_and_dtype_follow_the_accelerator_found(monkeypatch):
    """No GPU here: torch's availability probes are replaced, the choice made from them is the code under test."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert hub.pick_device() == "mps" and hub.pick_device("cuda:1") == "cuda:1"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert hub.pick_device() == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert hub.pick_device() == "cuda"
    for bf16, want in ((True, torch.bfloat16), (False, torch.float16)):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda bf16=bf16: bf16)
        assert hub.pick_dtype("auto", "cuda:1") == want and hub.pick_dtype("auto", "cuda") == want
    assert hub.pick_dtype("auto", "mps") == torch.float32 and hub.pick_dtype("float16", "cpu") == torch.float16


@pytest.mark.parametrize("proxy", ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"])
def test_behind_a_proxy_the_hub_is_assumed_reachable(monkeypatch, proxy):
    from huggingface_hub import constants

    for key in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # closed: only the proxy makes it True
    monkeypatch.setenv(proxy, "http://proxy.invalid:3128")
    assert hub.hub_reachable(timeout=1.0) is True
