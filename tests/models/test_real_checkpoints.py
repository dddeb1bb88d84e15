"""Checkpoints built from the hub's real files (tokenizers, processors, model types; tiny random weights), loaded the
way a user's download is: from a folder, and by hub id from the Hugging Face cache with ``HF_HUB_OFFLINE=1``.

See tests/support/real_checkpoints.py for how they are built and tests/fixtures/checkpoints/ for the files.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from real_checkpoints import CHECKPOINTS, EXPECTED, fixture, hub_cache, real
from tiny_models import Recorder, noise_image

from autolabel.cli import main
from autolabel.config import ModelSpec
from autolabel.errors import ExitCode, ModelLoadError
from autolabel.models.catalog import CHECKPOINT_TYPES
from autolabel.models.florence2 import Florence2
from autolabel.models.pool import ModelPool
from autolabel.models.sam import Sam, Sam2
from autolabel.registry import MODEL_GROUP, resolve
from autolabel.store import Store

PIPELINES = Path(__file__).parents[2] / "pipelines"
COMMITS = {kind: f"{i:x}" * 40 for i, kind in enumerate(CHECKPOINTS, start=1)}  # one fake commit per checkpoint


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty hub cache that this process reads (as HF_HUB_CACHE would make it), offline; ``hub(kind)`` fills it."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def add(kind: str) -> str:
        hub_cache(cache, CHECKPOINTS[kind], real(kind), COMMITS[kind])
        return CHECKPOINTS[kind]

    add.cache = cache
    return add


# -- model types
def _docs() -> str:
    """README.md and every page of docs/, as one text."""
    root = Path(__file__).parents[2]
    return "\n".join(p.read_text() for p in [root / "README.md", *sorted((root / "docs").rglob("*.md"))])


@pytest.mark.parametrize("kind, model_type", [
    ("florence2", "florence2"), ("sam2", "sam2"), ("sam", "sam"), ("grounding_dino", "grounding_dino"),
    ("owlv2", "owlv2"),
])
def test_the_model_type_the_docs_name_loads_the_real_checkpoints_model_type(kind, model_type):
    config = json.loads((fixture(kind) / "config.json").read_text())
    assert CHECKPOINT_TYPES[config["model_type"]] == model_type
    cls = resolve(MODEL_GROUP, model_type)
    assert config["model_type"] in getattr(cls, "checkpoint_types", ("florence2",))
    assert f"{CHECKPOINTS[kind]}" in _docs()


def test_every_shipped_pipeline_declares_the_model_type_that_loads_its_checkpoint():
    """Each model of pipelines/*.yaml whose checkpoint's files are here: its type is the one for that model_type
    (sam2.1-hiera-large shares -tiny's layout: every transformers-format SAM 2.1 checkpoint is sam2_video), and a
    type its loader does not read is caught."""
    import yaml

    by_id = {CHECKPOINTS[k]: _model_type(k) for k in CHECKPOINTS if k != "florence2_remote"}
    by_id["facebook/sam2.1-hiera-large"] = by_id["facebook/sam2.1-hiera-tiny"]
    checked = []
    for path in sorted(PIPELINES.glob("*.yaml")):
        for name, model in (yaml.safe_load(path.read_text()).get("models") or {}).items():
            if model.get("id") in by_id:
                loader = resolve(MODEL_GROUP, model.get("type", "florence2"))  # facebook/sam3 has two: sam3, sam3_video
                assert by_id[model["id"]] in getattr(loader, "checkpoint_types", ("florence2",)), (path.name, name)
                checked.append(model["id"])
    assert set(checked) >= {"florence-community/Florence-2-base", "facebook/sam2.1-hiera-tiny",
                            "IDEA-Research/grounding-dino-tiny", "google/owlv2-base-patch16-ensemble"}


@pytest.mark.parametrize("kind", ["florence2", "sam2", "sam", "grounding_dino", "owlv2"])
def test_each_real_checkpoint_loads_by_hub_id_from_the_cache_offline_and_records_its_commit(kind, hub):
    model = ModelPool({"m": ModelSpec(type=CHECKPOINT_TYPES[_model_type(kind)], id=hub(kind))}).get("m")
    assert model.revision == COMMITS[kind]
    assert type(model.processor).__name__ == json.loads((fixture(kind) / "preprocessor_config.json").read_text()).get(
        "processor_class", type(model.processor).__name__)


def _model_type(kind: str) -> str:
    return json.loads((fixture(kind) / "config.json").read_text())["model_type"]


def test_sam2_video_checkpoint_loads_its_image_model_with_the_checkpoints_weights():
    from transformers import Sam2Model, Sam2VideoModel

    assert _model_type("sam2") == "sam2_video"
    model = Sam2.load(ModelSpec(type="sam2", id=real("sam2")))
    assert isinstance(model.model, Sam2Model) and type(model.processor).__name__ == "Sam2VideoProcessor"
    video = Sam2VideoModel.from_pretrained(real("sam2")).state_dict()
    image = model.model.state_dict()
    assert image and all(torch.equal(value, video[key]) for key, value in image.items())  # nothing re-initialised
    forward = Recorder(model.model, "forward")
    try:
        masks = model.segment([noise_image(150, 60)], [np.tile(np.array([[0, 0, 50, 30]], np.float32), (5, 1))],
                              max_boxes_per_call=2)
    finally:
        forward.undo()
    assert masks[0].masks.shape == (5, 60, 150)
    assert [tuple(kw["input_boxes"].shape) for _, kw in forward.calls] == [(1, 2, 4), (1, 2, 4), (1, 1, 4)]


@pytest.mark.parametrize("kind, wrong, right, cls", [("sam2", "sam", "sam2", Sam), ("sam", "sam2", "sam", Sam2)])
def test_a_wrong_model_type_names_the_one_that_loads_and_that_fix_works(kind, wrong, right, cls):
    with pytest.raises(ModelLoadError) as err:
        cls.load(ModelSpec(type=wrong, id=real(kind)))
    line = str(err.value)
    assert f"set the model's type: {right}" in line and "\n" not in line
    fixed = resolve(MODEL_GROUP, right).load(ModelSpec(type=right, id=real(kind)))
    assert fixed.model.config.model_type in ("sam2", "sam")


# -- the remote-code Florence-2 layout
def _remote_code_folder(tmp_path: Path, strip_auto_map: bool = False) -> Path:
    """microsoft/Florence-2-base's files (config with auto_map; its tokenizer: the BART vocabulary, no <image>)."""
    folder = tmp_path / "Florence-2-base"
    shutil.copytree(fixture("florence2_remote"), folder)
    for name in ("vocab.json", "merges.txt"):  # the same files as Microsoft's (identical vocab.json)
        shutil.copy(fixture("florence2") / name, folder / name)
    if strip_auto_map:
        config = json.loads((folder / "config.json").read_text())
        del config["auto_map"]
        (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("strip_auto_map, why", [(False, "its config.json has auto_map"),
                                                 (True, "its tokenizer has no <image> token")])
def test_the_remote_code_florence2_layout_is_refused_by_the_cli_in_one_line(tmp_path, capsys, strip_auto_map, why):
    folder = _remote_code_folder(tmp_path, strip_auto_map)
    (tmp_path / "in").mkdir()
    noise_image(32, 32).save(tmp_path / "in" / "a.png")
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(f"models:\n  florence: {{type: florence2, id: '{folder}'}}\n"
                        "stages:\n  - {type: florence2, name: od, model: florence, task: od}\n")
    code = main(["run", str(pipeline), "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == ModelLoadError.exit_code == ExitCode.FATAL
    line = (f"autolabel: error: model '{folder}' (florence2): the checkpoint is Florence-2's remote-code layout "
            f"({why}), "
            f"which needs trust_remote_code and autolabel never runs it: set id: to the native transformers checkpoint "
            f"florence-community/Florence-2-base instead")
    assert err == [line]


# -- Florence-2 loading
def _capture(logger_name: str = "transformers") -> tuple[logging.Handler, list[str]]:
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger(logger_name).addHandler(handler)
    return handler, records


def test_the_clean_up_tokenization_spaces_warning_is_silenced_and_only_it():
    from transformers import AutoProcessor

    logging.Logger.warning_once.cache_clear()  # transformers says it once per process
    handler, records = _capture()
    try:
        raw = AutoProcessor.from_pretrained(real("florence2"))
        raw.tokenizer.decode([5901, 50322])  # what transformers alone does: warns
        assert any("clean_up_tokenization_spaces" in r for r in records)
        logging.Logger.warning_once.cache_clear()
        records.clear()
        model = Florence2.load(ModelSpec(type="florence2", id=real("florence2")))
        answers = model.run("<OD>", [noise_image(64, 48)], generation={"max_new_tokens": 3, "num_beams": 1})
        model.processor.tokenizer.decode([5901, 50322])
        assert len(answers) == 1 and not any("clean_up_tokenization_spaces" in r for r in records)
        logging.getLogger("transformers.tokenization_utils_base").warning("another warning")
        assert records[-1] == "another warning"  # nothing else is filtered
    finally:
        logging.getLogger("transformers").removeHandler(handler)
    assert model.processor.tokenizer.decode([5901, 50322], skip_special_tokens=False) == "car<loc_53>"


# -- the shipped pipeline on real-file checkpoints, by hub id, in a fresh process
@pytest.mark.slow
def test_grounding_sam2_pipeline_runs_on_real_checkpoints_from_the_cache_and_records_their_commits(
    tmp_path, hub, subprocess_env
):
    hub("grounding_dino")
    hub("sam2")
    (tmp_path / "in").mkdir()
    noise_image(150, 60, seed=1).save(tmp_path / "in" / "a.png")
    env = subprocess_env | {"HF_HUB_CACHE": str(hub.cache), "HF_HUB_OFFLINE": "1"}
    args = [sys.executable, "-m", "autolabel", "run", str(PIPELINES / "grounding-sam2.yaml"),
            "-i", str(tmp_path / "in"),
            "-o", str(tmp_path / "out"), "--no-progress", "--set", "stages.0.box_threshold=0",
            "--set", "stages.0.text_threshold=0", "--set", "stages.1.max_boxes_per_call=8"]
    out = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert out.returncode == 0, out.stderr
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["versions"]["models"] == {
        "detector": {"type": "grounding_dino", "id": CHECKPOINTS["grounding_dino"],
                     "revision": COMMITS["grounding_dino"]},
        "segmenter": {"type": "sam2", "id": CHECKPOINTS["sam2"], "revision": COMMITS["sam2"]},
    }
    (row,) = Store(tmp_path / "out").images()
    provenance = row["labels"]["provenance"]
    assert provenance["boxes"]["revision"] == COMMITS["grounding_dino"]
    assert provenance["masks"]["revision"] == COMMITS["sam2"]
    data = row["labels"]["boxes"]["data"]
    assert len(data["has_mask"]) == 20 and all(data["has_mask"])  # every query's box got its mask, 8 at a time


def test_a_snapshot_folder_given_as_a_path_records_its_commit(hub):
    hub("sam")
    snapshot = Path(hub.cache) / "models--facebook--sam-vit-base" / "snapshots" / COMMITS["sam"]
    model = Sam.load(ModelSpec(type="sam", id=str(snapshot)))
    assert model.revision == COMMITS["sam"]
    assert Sam.load(ModelSpec(type="sam", id=real("sam"))).revision is None  # a plain folder has no commit


def test_the_docs_show_the_refusals_as_they_are_printed():
    from autolabel.models.florence2 import remote_code_message
    from autolabel.models.hub import wrong_type_message

    lines = _docs().splitlines()
    raw = json.loads((fixture("florence2_remote") / "config.json").read_text())
    printed = [
        remote_code_message(ModelSpec(type="florence2", id="microsoft/Florence-2-large"), raw,
                            "its config.json has auto_map"),
        wrong_type_message(ModelSpec(type="sam2", id="facebook/sam-vit-base"), "sam", Sam2.checkpoint_types),
    ]
    for line in printed:
        assert f"autolabel: error: {line}" in lines


# -- a Florence-2 that speaks the real tokenizer, run by hub id through the shipped pipeline
OD = json.loads((EXPECTED / "florence2_real_sequences.json").read_text())[0]


@pytest.fixture(scope="module")
def scripted_od(tmp_path_factory):
    """Weights scripted to answer the real base model's <OD> answer for car.jpg, token for token, in its ids."""
    from tiny_florence import make_tiny_florence
    from transformers import AutoTokenizer

    assert OD["task"] == "<OD>"
    ids = OD["ids"][2:OD["ids"].index(2, 1)]  # after </s><s>, up to the answer's </s>
    answer = AutoTokenizer.from_pretrained(fixture("florence2")).decode(ids, skip_special_tokens=False)
    probs = [0.6 + 0.015 * k for k in range(len(ids))]
    path = make_tiny_florence(tmp_path_factory.mktemp("scripted") / "od", answer, probs, end_prob=0.9,
                              processor_from=fixture("florence2"))
    return path, probs


@pytest.mark.slow
def test_florence2_by_hub_id_answers_in_the_real_tokenizer_and_the_boxes_are_transformers_parse(
    scripted_od, hub, tmp_path, monkeypatch
):
    from transformers.tokenization_utils_tokenizers import TokenizersBackend

    from autolabel import Pipeline

    path, probs = scripted_od
    decode = TokenizersBackend._decode

    def keeping_specials(self, token_ids, skip_special_tokens=False, **kwargs):
        assert not skip_special_tokens, "decoded with skip_special_tokens=True: every <loc_K> would vanish"
        return decode(self, token_ids, skip_special_tokens=skip_special_tokens, **kwargs)

    monkeypatch.setattr(TokenizersBackend, "_decode", keeping_specials)  # every decode of the whole run
    hub_cache(hub.cache, CHECKPOINTS["florence2"], path, COMMITS["florence2"])
    (tmp_path / "in").mkdir()
    noise_image(640, 480).save(tmp_path / "in" / "car.png")  # car.jpg's size: the parse is in its pixels
    handler, records = _capture()
    logging.Logger.warning_once.cache_clear()
    try:
        pipeline = Pipeline.from_yaml(PIPELINES / "detect.yaml", ["models.florence.generation.num_beams=1",
                                                                  "models.florence.generation.max_new_tokens=40"])
        summary = pipeline.run(input=tmp_path / "in", output=tmp_path / "out")
    finally:
        logging.getLogger("transformers").removeHandler(handler)
    assert summary.status == "ok"
    assert not any("clean_up_tokenization_spaces" in r for r in records)
    (row,) = Store(tmp_path / "out").images()
    boxes = row["labels"]["boxes"]
    parsed = OD["parsed"]["<OD>"]
    assert boxes["xyxy"] == parsed["bboxes"]  # car, door handle, wheel, wheel: to the pixel
    assert boxes["data"]["phrase"] == parsed["labels"]
    assert boxes["data"]["class_name"] == ["car", "", "", ""]  # "door handle" and "wheel" are no class here
    locs = [probs[1:5], probs[7:11], probs[12:16], probs[16:20]]  # tokens: car, door, ' handle', wheel
    assert boxes["confidence"] == pytest.approx([float(np.exp(np.mean(np.log(p)))) for p in locs], rel=1e-4)
    assert row["labels"]["provenance"]["detect"]["revision"] == COMMITS["florence2"]
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["versions"]["models"]["florence"]["revision"] == COMMITS["florence2"]
