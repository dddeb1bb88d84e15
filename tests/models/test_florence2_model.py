"""The Florence-2 model adapter: batched generation, token probabilities, parsing — on tiny scripted checkpoints.

Each checkpoint (tests/support/tiny_florence.py) answers a known text whatever it is asked, each token with a known
probability; so boxes are checked to the pixel and confidences to the digit.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
from PIL import Image  # noqa: E402
from tiny_florence import answer_tokens, make_tiny_florence  # noqa: E402

from autolabel.config import ModelSpec  # noqa: E402
from autolabel.errors import ModelLoadError  # noqa: E402
from autolabel.models.florence2 import Florence2, Generated, generation_problems  # noqa: E402

OD = "car<loc_100><loc_200><loc_300><loc_400>person<loc_10><loc_20><loc_500><loc_999>"
OD_PROBS = [0.5 + 0.025 * i for i in range(len(answer_tokens(OD)))]  # c a r L L L L p e r s o n L L L L
IMAGES = [Image.new("RGB", (640, 480), (200, 30, 30)), Image.new("RGB", (300, 500), (20, 40, 220))]


def gmean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def pixel(b: int, size: int) -> int:
    """Florence-2's dequantization: the bin's centre, truncated to a whole pixel."""
    return int((b + 0.5) * size / 1000)


@pytest.fixture(scope="module")
def od(tmp_path_factory: pytest.TempPathFactory) -> Florence2:
    path = make_tiny_florence(tmp_path_factory.mktemp("od"), OD, OD_PROBS, end_prob=0.6)
    return Florence2.load(ModelSpec(id=str(path)))


def test_loads_a_local_folder_with_sdpa_on_cpu_in_fp32(od: Florence2) -> None:
    assert od.device == "cpu" and od.dtype == torch.float32
    assert od.model.config._attn_implementation == "sdpa"
    assert od.revision is None  # a folder has no commit; hub checkpoints report their commit hash
    assert od.settings({"num_beams": 1}) == {"max_new_tokens": 1024, "num_beams": 1}


@pytest.mark.parametrize("num_beams", [1, 3])
def test_batched_images_of_different_sizes_give_exact_boxes_and_confidences(od: Florence2, num_beams: int) -> None:
    answers = od.run("<OD>", IMAGES, generation={"num_beams": num_beams, "max_new_tokens": 40})
    car_locs, person_locs = OD_PROBS[3:7], OD_PROBS[13:17]
    for image, answer in zip(IMAGES, answers):
        w, h = image.size
        assert answer.result == {
            "bboxes": [[pixel(100, w), pixel(200, h), pixel(300, w), pixel(400, h)],
                       [pixel(10, w), pixel(20, h), pixel(500, w), pixel(999, h)]],
            "labels": ["car", "person"],
        }
        assert answer.finished
        np.testing.assert_allclose(answer.scores("locations"), [gmean(car_locs), gmean(person_locs)], rtol=1e-4)
        np.testing.assert_allclose(
            answer.scores("locations+label"), [gmean(OD_PROBS[0:7]), gmean(OD_PROBS[7:17])], rtol=1e-4
        )
        np.testing.assert_allclose(answer.scores("label"), [gmean(OD_PROBS[0:3]), gmean(OD_PROBS[7:13])], rtol=1e-4)
    assert answers[0].result["bboxes"][0] == [64, 96, 192, 192]  # 640x480, by hand: 100.5*0.64 = 64.3 ...


@pytest.mark.parametrize("num_beams", [1, 3])
def test_recorded_token_probabilities_equal_compute_transition_scores(od: Florence2, num_beams: int) -> None:
    """What the adapter records per step is what transformers' own (memory-hungry) route computes."""
    processor, model = od.processor, od.model
    inputs = processor(text=["<OD>", "<OD>"], images=IMAGES, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=40, num_beams=num_beams, output_scores=True,
                             return_dict_in_generate=True)
    if num_beams == 1:
        want = model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
    else:
        want = model.compute_transition_scores(out.sequences, out.scores, out.beam_indices, normalize_logits=False)
    got = od.generate(IMAGES, [0, 1], ["<OD>", "<OD>"], {"num_beams": num_beams, "max_new_tokens": 40})
    for row, generated in zip(want.numpy(), got):
        n = len(generated.ids)
        assert n == len(OD_PROBS)
        np.testing.assert_allclose(generated.logprobs, row[:n], atol=1e-4)  # float32 noise of the tiny model
        np.testing.assert_allclose(np.exp(generated.logprobs), OD_PROBS, atol=1e-4)


def test_encoder_ids_are_the_processors(od: Florence2) -> None:
    prompts = ["<OD>", "<CAPTION_TO_PHRASE_GROUNDING>a green car", "<REGION_TO_CATEGORY><loc_1><loc_2><loc_3><loc_4>"]
    for prompt, ids in zip(prompts, od.encoder_ids(prompts)):
        want = od.processor(text=[prompt], images=[IMAGES[0]], return_tensors="pt")["input_ids"][0].tolist()
        assert ids == want


def test_encoding_shared_image_features_equals_the_models_own_forward(tmp_path) -> None:
    """Rows sharing an image's features (and padded to one length) encode exactly as the model's forward does."""
    path = make_tiny_florence(tmp_path / "random", "a", 0.9)
    adapter = Florence2.load(ModelSpec(id=str(path)))
    torch.manual_seed(1)
    with torch.no_grad():
        for p in adapter.model.parameters():
            p.normal_(0, 0.2)  # image and prompt now matter
    prompts = ["<OD>", "<CAPTION_TO_PHRASE_GROUNDING>a green car", "<OPEN_VOCABULARY_DETECTION>dog"]
    image_index = [0, 1, 1]
    with torch.inference_mode():
        features = adapter.image_features(IMAGES)
        mask, hidden = adapter.encode(adapter.encoder_ids(prompts), features[image_index])
        inputs = adapter.processor(text=prompts, images=[IMAGES[i] for i in image_index], return_tensors="pt",
                                   padding="longest")
        start = torch.full((3, 1), adapter.model.config.text_config.decoder_start_token_id)
        want = adapter.model(**inputs, decoder_input_ids=start).encoder_last_hidden_state
    assert torch.equal(mask, inputs["attention_mask"])
    keep = mask.bool()
    assert hidden.std() > 0.1
    torch.testing.assert_close(hidden[keep], want[keep], atol=1e-5, rtol=1e-5)


def test_answer_cut_by_max_new_tokens_is_marked_unfinished(od: Florence2) -> None:
    (answer,) = od.run("<OD>", IMAGES[:1], generation={"num_beams": 1, "max_new_tokens": 9})
    assert not answer.finished
    assert answer.result == {"bboxes": [[64, 96, 192, 192]], "labels": ["car"]}  # "car" + 4 locations + "pe"


def parse(adapter: Florence2, task: str, text: str, size=(1000, 500)):
    """Parse a given answer text as if generated with every token at probability 0.5."""
    ids = np.array(adapter.processor.tokenizer(text, add_special_tokens=False)["input_ids"])
    return adapter.answer(task, Generated(ids, np.full(len(ids), math.log(0.5)), True), size)


@pytest.mark.parametrize(
    ("task", "text", "count"),
    [
        ("<OD>", "car" + "<loc_1><loc_2><loc_3><loc_4>" * 3 + "dog<loc_5><loc_6><loc_7><loc_8><loc_9>", 4),
        # transformers reads "loc_1>" as a label
        ("<OD>", "<loc_1><loc_2><loc_3><loc_4><loc_5><loc_6><loc_7><loc_8>", 1),
        ("<REGION_PROPOSAL>", "<loc_1><loc_2><loc_3><loc_4><loc_5><loc_6><loc_7><loc_8>", 2),
        ("<CAPTION_TO_PHRASE_GROUNDING>", "the image<loc_1><loc_2><loc_3><loc_4>a car<loc_5><loc_6><loc_7><loc_8>", 1),
        ("<OCR_WITH_REGION>", "AB<loc_1><loc_2><loc_3><loc_4><loc_5><loc_6><loc_7><loc_8>C D<loc_9>", 1),
        ("<REFERRING_EXPRESSION_SEGMENTATION>",
         "<loc_1><loc_2><loc_3><loc_4><loc_5><loc_6><sep><loc_7><loc_8><loc_9>", 1),
        ("<REGION_TO_SEGMENTATION>",
         "<poly><loc_1><loc_2><loc_3><loc_4><loc_5><loc_6></poly><poly><loc_7><loc_8></poly>", 2),
        ("<OPEN_VOCABULARY_DETECTION>", "car<poly><loc_1><loc_2><loc_3><loc_4><loc_5><loc_6></poly>", 1),
        ("<OPEN_VOCABULARY_DETECTION>", "car<loc_1><loc_2><loc_3><loc_4>", 1),
        ("<OD>", "nothing to see", 0),
    ],
)
def test_every_parsed_instance_is_paired_with_its_tokens(od: Florence2, task: str, text: str, count: int) -> None:
    answer = parse(od, task, text)
    assert answer.instances is not None and len(answer.instances) == count
    assert len(answer.scores()) == count
    np.testing.assert_allclose(answer.scores(), 0.5, rtol=1e-9)


def test_ocr_lines_below_the_area_threshold_are_skipped_in_step(od: Florence2) -> None:
    ocr = od.processor.post_processor.parse_task_config["ocr"]
    old = ocr.get("AREA_THRESHOLD", 0.0)
    ocr["AREA_THRESHOLD"] = 0.01
    try:
        big = "<loc_100><loc_100><loc_900><loc_100><loc_900><loc_900><loc_100><loc_900>"
        tiny = "<loc_1><loc_1><loc_2><loc_1><loc_2><loc_2><loc_1><loc_2>"
        answer = parse(od, "<OCR_WITH_REGION>", "AB" + tiny + "CD" + big)
        assert answer.result["labels"] == ["CD"]
        assert len(answer.instances) == 1 and answer.instances[0].phrase == "CD"
        assert answer.instances[0].label.tolist() == [10, 11]
    finally:
        ocr["AREA_THRESHOLD"] = old


def test_region_prompts_quantize_like_the_processor(od: Florence2) -> None:
    boxes = np.array([[25, 50, 75, 100], [0, 0, 100, 200]], dtype=np.float32)
    assert od.region_prompts(boxes, (100, 200)) == [
        "<loc_250><loc_250><loc_750><loc_500>",  # floor(coord / (size / 1000))
        "<loc_0><loc_0><loc_999><loc_999>",  # clamped to 999
    ]


def test_generation_settings_are_checked() -> None:
    assert generation_problems({"max_new_tokens": 20, "num_beams": 3, "early_stopping": True}) == []
    assert generation_problems({"num_beams": 0}) == ["num_beams: must be a whole number >= 1 (got 0)"]
    assert generation_problems({"length_penalty": "long"}) == ["length_penalty: expected int or float (got 'long')"]
    (line,) = generation_problems({"do_sample": True})
    assert line.startswith("do_sample: unknown key (known: max_new_tokens, min_new_tokens, num_beams")


def test_missing_weights_offline_is_one_line_naming_the_model_and_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as err:
        Florence2.load(ModelSpec(id="autolabel-tests/no-such-florence"))
    message = str(err.value)
    assert "\n" not in message
    assert "'autolabel-tests/no-such-florence'" in message and "HF_HUB_OFFLINE is set" in message
    assert "hf download autolabel-tests/no-such-florence" in message and "local folder" in message


def test_a_checkpoint_of_another_family_is_refused(tmp_path) -> None:
    from transformers import BertConfig

    BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=1, intermediate_size=8).save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match=r"is a 'bert' model; model type 'florence2' loads 'florence2' "
                                             r"checkpoints \(no built-in model type loads it"):
        Florence2.load(ModelSpec(id=str(tmp_path)))


def test_a_checkpoint_missing_most_weights_is_refused(tmp_path) -> None:
    from safetensors.torch import load_file, save_file

    path = make_tiny_florence(tmp_path / "partial", "a", 0.9)
    weights = load_file(path / "model.safetensors")
    save_file({k: v for k, v in weights.items() if "vision_tower" not in k}, path / "model.safetensors",
              metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match="weights are missing from the checkpoint .* native Florence-2 format"):
        Florence2.load(ModelSpec(id=str(path)))


def test_an_answer_ended_by_the_forced_end_token_at_the_limit_is_unfinished(od: Florence2, monkeypatch) -> None:
    """At ``max_new_tokens`` generate forces ``</s>`` (real checkpoints set forced_eos_token_id): cut, not finished."""
    monkeypatch.setattr(od.model.generation_config, "forced_eos_token_id", 2)
    (cut,) = od.run("<OD>", IMAGES[:1], generation={"num_beams": 1, "max_new_tokens": 9})
    assert cut.text == "car<loc_100><loc_200><loc_300><loc_400>p" and not cut.finished
    (whole,) = od.run("<OD>", IMAGES[:1], generation={"num_beams": 1, "max_new_tokens": 40})
    assert whole.finished and whole.text == OD


def test_collect_reads_each_kept_token_from_the_beam_that_chose_it() -> None:
    """Per row: ids up to ``</s>`` without <s> / padding; each log-probability from its source beam and step; NaN for
    a token the recorder did not keep; finished only when ``</s>`` came before the limit."""
    from autolabel.models.florence2 import _collect

    special = {"eos": 2, "bos": 0, "pad": 1}
    recorder = type("Recorder", (), {})()
    # 2 source beams x 4 steps, top-2 per step: both keep tokens (10 + t, 20 + t), each with its own probabilities
    recorder.values = [torch.tensor([[-0.1 * (t + 1), -1.0 - t], [-0.2 * (t + 1), -2.0 - t]]).reshape(2, 2)
                       for t in range(4)]
    recorder.indices = [torch.tensor([[10 + t, 20 + t], [10 + t, 20 + t]]) for t in range(4)]
    sequences = torch.tensor([[2, 10, 21, 12, 2], [2, 10, 0, 99, 13]])
    beams = torch.tensor([[0, 1, 0, 1], [1, 1, 0, 0]])
    first, second = _collect(sequences, beams, recorder, special, max_new_tokens=10)
    assert first.ids.tolist() == [10, 21, 12] and first.finished
    np.testing.assert_allclose(first.logprobs, [-0.1, -3.0, -0.3])
    assert second.ids.tolist() == [10, 99, 13] and not second.finished  # no </s>: cut
    np.testing.assert_allclose(second.logprobs, [-0.2, float("nan"), -0.4])
    (late,) = _collect(sequences[:1], beams[:1], recorder, special, max_new_tokens=4)
    assert not late.finished  # </s> at the last allowed step is the forced one
    (greedy,) = _collect(torch.tensor([[2, 10, 21, 2]]), None, recorder, special, max_new_tokens=10)
    np.testing.assert_allclose(greedy.logprobs, [-0.1, -2.0])
    empty = _collect(torch.tensor([[2], [2]]), None, recorder, special, max_new_tokens=10)
    assert [(g.ids.tolist(), g.logprobs.tolist(), g.finished) for g in empty] == [([], [], False)] * 2


def test_the_remote_code_layout_is_refused_naming_why_and_the_native_checkpoint(tmp_path) -> None:
    import json
    import shutil

    from real_checkpoints import fixture

    folder = tmp_path / "Florence-2-large"
    shutil.copytree(fixture("florence2_remote"), folder)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(fixture("florence2") / name, folder / name)
    fix = "set id: to the native transformers checkpoint florence-community/Florence-2-large instead"
    with pytest.raises(ModelLoadError) as err:
        Florence2.load(ModelSpec(id=str(folder)))
    assert str(err.value) == (f"model '{folder}' (florence2): the checkpoint is Florence-2's remote-code layout (its "
                              f"config.json has auto_map), which needs trust_remote_code and autolabel never runs it: "
                              + fix)
    config = json.loads((folder / "config.json").read_text())
    del config["auto_map"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=r"\(its tokenizer has no <image> token\), which needs trust_remote_code"):
        Florence2.load(ModelSpec(id=str(folder)))


def test_the_native_checkpoint_named_for_a_remote_code_one() -> None:
    from autolabel.models.florence2 import native_checkpoint

    def named(id_: str, raw: dict) -> str:
        return native_checkpoint(ModelSpec(id=id_), raw)

    assert named("microsoft/Florence-2-base-ft", {}) == "florence-community/Florence-2-base-ft"
    assert named("me/FLORENCE-2-LARGE", {}) == "florence-community/Florence-2-large"
    assert named("/models/mine", {"text_config": {"d_model": 1024}}) == "florence-community/Florence-2-large"
    assert named("/models/mine", {"text_config": {"d_model": 768}}) == "florence-community/Florence-2-base"
    assert named("/models/mine", {}) == "florence-community/Florence-2-base"


def test_without_an_sdpa_path_the_model_loads_with_the_default_attention(tmp_path, monkeypatch) -> None:
    import autolabel.models.florence2 as florence2

    path = make_tiny_florence(tmp_path / "eager", "a", 0.9)
    real_from_pretrained = florence2.from_pretrained
    asked = []

    def no_sdpa(cls, spec, **kwargs):
        asked.append(kwargs.get("attn_implementation"))
        if kwargs.get("attn_implementation") == "sdpa":
            raise ValueError("this model does not support sdpa")
        return real_from_pretrained(cls, spec, **kwargs)

    monkeypatch.setattr(florence2, "from_pretrained", no_sdpa)
    model = Florence2.load(ModelSpec(id=str(path)))
    assert asked[-2:] == ["sdpa", None]  # asked for SDPA, then loaded the default way
    (answer,) = model.run("<CAPTION>", IMAGES[:1], generation={"num_beams": 1, "max_new_tokens": 5})
    assert answer.result == "a" and answer.finished


def test_quiet_cleanup_turns_off_only_the_ignored_bpe_cleanup() -> None:
    from real_checkpoints import fixture
    from transformers import AutoTokenizer

    from autolabel.models.florence2 import quiet_cleanup

    tokenizer = AutoTokenizer.from_pretrained(fixture("florence2"))
    assert tokenizer.clean_up_tokenization_spaces  # as the checkpoint ships it
    quiet_cleanup(tokenizer)
    assert tokenizer.clean_up_tokenization_spaces is False
    forced = AutoTokenizer.from_pretrained(fixture("florence2"))
    forced.clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output = True
    quiet_cleanup(forced)
    assert forced.clean_up_tokenization_spaces  # the user asked for it: left alone
    other = type("WordPiece", (), {"clean_up_tokenization_spaces": True,
                                   "backend_tokenizer": type("B", (), {"model": object()})()})()
    quiet_cleanup(other)
    assert other.clean_up_tokenization_spaces  # not BPE: the cleanup does run there
