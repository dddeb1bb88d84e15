"""SAM 3 model types on a checkpoint built from facebook/sam3's real files (tiny, sharpened weights: see
tests/support/real_checkpoints.py): loading as a user's download is loaded, and answers checked against transformers'
own path — one full forward per (image, prompt), then ``post_process_instance_segmentation`` — and against pairing
errors (which image, which prompt, which neighbours, any batch and call size).

The tiny checkpoint's answers depend on the image and the prompt (asserted before each pairing check: equal
answers would hide a swap); thresholds are 0 where every query should come back (20 per prompt here).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose
from real_checkpoints import CHECKPOINTS, fixture, hub_cache, real
from tiny_models import Recorder, noise_image

from autolabel.config import ModelSpec
from autolabel.errors import ModelLoadError
from autolabel.models.concepts import ConceptPrompt, Instances
from autolabel.models.pool import ModelPool
from autolabel.models.sam import Sam
from autolabel.models.sam3 import Sam3, Sam3Tracker

COMMIT = "3c879f39826c281e95690f02c7821c4de09afae7"  # facebook/sam3's commit on the hub (its API record)
QUERIES = 20  # the tiny checkpoint's (the real model has 200)
#: (width, height, seed): A and C share a size (a swap between them keeps every size right)
IMAGES = {"A": (150, 60, 1), "B": (80, 120, 2), "C": (150, 60, 3), "D": (64, 64, 4)}
TEXTS = ["cat", "traffic light", "dog"]
#: mask pixels that may differ between two paths (float noise at a probability of exactly mask_threshold)
PIXEL_NOISE = 1e-3


def image(name: str):
    w, h, seed = IMAGES[name]
    return noise_image(w, h, seed=seed)


@pytest.fixture(scope="module")
def sam3() -> Sam3:
    return Sam3.load(ModelSpec(type="sam3", id=real("sam3")))


# -- loading ------------------------------------------------------------------------------------------------------

@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An offline hub cache that this process reads (as HF_HUB_CACHE makes it)."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def test_facebook_sam3_loads_by_hub_id_from_the_cache_offline_as_both_model_types_with_its_commit(hub):
    from transformers import AutoProcessor, Sam3Model, Sam3TrackerModel

    assert json.loads((fixture("sam3") / "config.json").read_text())["model_type"] == "sam3_video"
    hub_cache(hub, CHECKPOINTS["sam3"], real("sam3"), COMMIT)
    pool = ModelPool({"concepts": ModelSpec(type="sam3", id="facebook/sam3"),
                      "tracker": ModelSpec(type="sam3_tracker", id="facebook/sam3")})
    concepts, tracker = pool.get("concepts"), pool.get("tracker")
    assert isinstance(concepts.model, Sam3Model) and type(concepts.processor).__name__ == "Sam3Processor"
    assert isinstance(tracker.model, Sam3TrackerModel) and type(tracker.processor).__name__ == "Sam3TrackerProcessor"
    assert concepts.revision == tracker.revision == COMMIT
    assert pool.versions()["tracker"] == {"type": "sam3_tracker", "id": "facebook/sam3", "revision": COMMIT}
    # why the processors are named: the checkpoint's own AutoProcessor is the video one, which takes no text
    video = AutoProcessor.from_pretrained(real("sam3"))
    assert type(video).__name__ == "Sam3VideoProcessor"
    with pytest.raises(TypeError):
        video(images=[image("A")], text=["cat"])


#: sha256 of facebook/sam3's tokenizer.json as the project's checkpoint notes hold it (3,642,073 bytes: the size the
#: hub's mirrors list); the test checkpoint rebuilds it from the vendored vocab.json and merges.txt
TOKENIZER_JSON = "6d9109cc838977f3ca94a379eec36aecc7c807e1785cd729660ca2fc0171fb35"


def test_the_tokenizer_built_from_clips_vocab_and_merges_gives_the_hub_tokenizers_ids(sam3):
    import hashlib

    rebuilt = (Path(real("sam3")) / "tokenizer.json").read_bytes()
    assert len(rebuilt) == 3_642_073 and hashlib.sha256(rebuilt).hexdigest() == TOKENIZER_JSON
    tokenizer = sam3.processor.tokenizer
    assert tokenizer("person")["input_ids"] == [49406, 2533, 49407]  # facebook/sam3's tokenizer.json gives these
    assert tokenizer("a photo of a cat")["input_ids"] == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert (tokenizer.model_max_length, sam3.max_prompt_tokens) == (32, 32)
    assert sam3.prompt_tokens("traffic light") == 4


def test_nothing_is_left_random_each_part_has_the_checkpoints_weights(sam3):
    """Sam3Model and Sam3TrackerModel read their tensors out of the one file (the tracker's backbone is the
    detector's; its neck is tracker_neck): every tensor of both equals the file's."""
    from safetensors.torch import load_file

    saved = load_file(Path(real("sam3")) / "model.safetensors")
    detector = sam3.model.state_dict()
    assert detector and all(torch.equal(v, saved[f"detector_model.{k}"]) for k, v in detector.items())
    tracker = Sam3Tracker.load(ModelSpec(type="sam3_tracker", id=real("sam3"))).model.state_dict()

    def source(key: str) -> str:
        if key.startswith("vision_encoder.backbone."):
            return "detector_model." + key
        if key.startswith("vision_encoder.neck."):
            return "tracker_neck." + key.removeprefix("vision_encoder.neck.")
        return "tracker_model." + key

    assert tracker and all(torch.equal(v, saved[source(k)]) for k, v in tracker.items())


def test_an_image_only_sam3_checkpoint_loads_and_answers_as_the_video_checkpoints_detector(sam3, tmp_path):
    folder = tmp_path / "sam3-image"
    sam3.model.save_pretrained(folder)  # model_type sam3, architectures Sam3Model
    for name in ("processor_config.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
                 "merges.txt"):
        shutil.copy(Path(real("sam3")) / name, folder / name)
    assert json.loads((folder / "config.json").read_text())["model_type"] == "sam3"
    alone = Sam3.load(ModelSpec(type="sam3", id=str(folder)))
    prompts = [[ConceptPrompt("cat")]]
    a = sam3.segment_concepts([image("A")], prompts, threshold=0.0)[0]
    b = alone.segment_concepts([image("A")], prompts, threshold=0.0)[0]
    assert_allclose(b.scores, a.scores, rtol=1e-6)
    assert_allclose(b.xyxy, a.xyxy, atol=1e-4)
    with pytest.raises(ModelLoadError) as err:  # the image-only checkpoint has no tracker
        Sam3Tracker.load(ModelSpec(type="sam3_tracker", id=str(folder)))
    assert "the checkpoint is a 'sam3' model; model type 'sam3_tracker' loads 'sam3_tracker', 'sam3_video'" in str(
        err.value) and "set the model's type: sam3" in str(err.value)


def test_a_sam3_checkpoint_under_another_model_type_names_the_type_that_loads_it():
    with pytest.raises(ModelLoadError) as err:
        Sam.load(ModelSpec(type="sam", id=real("sam3")))
    assert "the checkpoint is a 'sam3_video' model" in str(err.value)
    assert "set the model's type: sam3," in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("model_type", ["sam3", "sam3_tracker"])
def test_a_missing_gated_checkpoint_says_to_accept_the_licence_then_download(model_type, hub):
    loader = Sam3 if model_type == "sam3" else Sam3Tracker
    with pytest.raises(ModelLoadError) as err:
        loader.load(ModelSpec(type=model_type, id="facebook/sam3"))
    line = str(err.value)
    assert "\n" not in line and "HF_HUB_OFFLINE is set" in line
    accept = line.index("accept the SAM License on https://huggingface.co/facebook/sam3 (the checkpoint is gated)")
    assert accept < line.index("`hf auth login`") < line.index("run `hf download facebook/sam3`")


# -- concepts against transformers ------------------------------------------------------------------------------

def reference(model: Sam3, img, prompt: ConceptPrompt, threshold: float = 0.0, mask_threshold: float = 0.5) -> dict:
    """What transformers' own path gives: the processor, one full forward, post_process_instance_segmentation."""
    kwargs = {}
    if len(prompt.boxes):
        kwargs = {"input_boxes": [prompt.boxes.tolist()], "input_boxes_labels": [prompt.positive.astype(int).tolist()]}
    inputs = model.processor(images=[img], text=[prompt.text] if prompt.text is not None else None,
                             return_tensors="pt", **kwargs)
    with torch.inference_mode():
        out = model.model(**inputs)
    (result,) = model.processor.post_process_instance_segmentation(
        out, threshold=threshold, mask_threshold=mask_threshold, target_sizes=inputs["original_sizes"].tolist())
    return {"scores": result["scores"].numpy(), "boxes": result["boxes"].numpy(), "masks": result["masks"].numpy(),
            "presence": float(out.presence_logits.sigmoid()), "query": out.pred_logits.sigmoid()[0].numpy()}


def assert_same(got: Instances, expected: dict, prompt_index: int | None = None) -> None:
    """``got``'s rows of one prompt are transformers' answer: scores, query order, pixel boxes, masks."""
    rows = np.flatnonzero(got.prompts == prompt_index) if prompt_index is not None else np.arange(len(got))
    assert len(rows) == len(expected["scores"])
    assert_allclose(got.scores[rows], expected["scores"], rtol=1e-5, atol=1e-6)
    assert_allclose(got.presence_scores[rows], expected["presence"], rtol=1e-5)
    assert_allclose(got.query_scores[rows], expected["query"][got.queries[rows]], rtol=1e-5)
    assert_allclose(got.scores[rows], got.query_scores[rows] * got.presence_scores[rows], rtol=1e-6)
    assert (np.diff(got.queries[rows]) > 0).all()  # query order, as transformers returns them
    assert_allclose(got.xyxy[rows], expected["boxes"], atol=1e-3)
    assert got.masks.dtype == bool and got.masks.shape[1:] == expected["masks"].shape[1:]
    assert ((got.masks[rows] != expected["masks"].astype(bool)).reshape(len(rows), -1).mean(-1) <= PIXEL_NOISE).all()


@pytest.fixture(scope="module")
def alone(sam3) -> dict:
    """transformers' answer for each image with each text prompt, alone (threshold 0: every query)."""
    return {(name, text): reference(sam3, image(name), ConceptPrompt(text)) for name in "ABC" for text in TEXTS}


def test_the_answers_depend_on_the_image_and_on_the_prompt(alone):
    for text in TEXTS:  # same size, different pixels
        assert np.abs(alone["A", text]["scores"] - alone["C", text]["scores"]).max() > 0.02
        assert np.abs(alone["A", text]["boxes"] - alone["C", text]["boxes"]).max() > 2.0
    for name in "ABC":
        assert min(np.abs(alone[name, a]["scores"] - alone[name, b]["scores"]).max()
                   for a in TEXTS for b in TEXTS if a < b) > 0.02
        assert len(alone[name, "cat"]["scores"]) == QUERIES  # threshold 0: every query
        assert 0.05 < alone[name, "cat"]["masks"].mean() < 0.95
    assert np.ptp(alone["A", "cat"]["query"]) > 0.5  # query scores spread over (0, 1)
    assert (alone["A", "cat"]["boxes"][:, 0] < 0).any()  # some boxes reach past the image: not clipped


def test_every_image_and_prompt_gets_what_transformers_gives_it_alone_whatever_shares_the_batch(sam3, alone):
    for names, texts, rows_per_call in ((list("ABC"), TEXTS, 1), (list("CBA"), TEXTS[1:] + TEXTS[:1], 5)):
        prompts = [[ConceptPrompt(t) for t in texts] for _ in names]
        found = sam3.segment_concepts([image(n) for n in names], prompts, threshold=0.0, rows_per_call=rows_per_call)
        assert len(found) == len(names)
        for name, instances in zip(names, found):
            w, h, _ = IMAGES[name]
            assert instances.masks.shape == (QUERIES * len(texts), h, w)  # its own frame
            assert instances.prompts.tolist() == [p for p in range(len(texts)) for _ in range(QUERIES)]
            for p, text in enumerate(texts):
                assert_same(instances, alone[name, text], p)


def test_each_image_has_its_own_prompts_and_neighbours_do_not_change_them(sam3, alone):
    prompts = [[ConceptPrompt("dog")], [], [ConceptPrompt("cat"), ConceptPrompt("traffic light")]]
    found = sam3.segment_concepts([image("B"), image("D"), image("C")], prompts, threshold=0.0, rows_per_call=2)
    assert_same(found[0], alone["B", "dog"], 0)
    assert len(found[1]) == 0 and found[1].masks.shape == (0, 64, 64)
    assert_same(found[2], alone["C", "cat"], 0)
    assert_same(found[2], alone["C", "traffic light"], 1)


def test_the_image_is_encoded_once_for_all_its_prompts_and_each_text_once_per_model(sam3):
    vision = Recorder(sam3.model.vision_encoder.backbone, "forward")  # where transformers runs the ViT
    forward = Recorder(sam3.model, "forward")
    text = Recorder(sam3.model, "get_text_features")
    try:
        before = sam3.text_encoder_calls
        sam3.segment_concepts([image(n) for n in "ABC"], [[ConceptPrompt(t) for t in TEXTS]] * 3, rows_per_call=4)
        sam3.segment_concepts([image("D")], [[ConceptPrompt("cat"), ConceptPrompt("a new prompt")]])
    finally:
        vision.undo(), forward.undo(), text.undo()
    assert [tuple(args[0].shape[:1]) for args, _ in vision.calls] == [(3,), (1,)]  # one pass per call, batched
    assert all(kw.get("pixel_values") is None and kw["vision_embeds"] is not None for _, kw in forward.calls)
    assert [kw["attention_mask"].shape[0] for _, kw in forward.calls] == [4, 4, 1, 2]  # 9 rows by 4, then 2
    assert sam3.text_encoder_calls - before <= 1 + len(TEXTS)  # each distinct text once (some were cached)
    assert sum(len(kw["input_ids"]) for _, kw in text.calls) == sam3.text_encoder_calls - before
    assert "a new prompt" in sam3._text and sam3.text_features(["cat"])[0].shape == (1, 32, 16)


EXEMPLARS = {
    "positive": ConceptPrompt("cat", [[10, 5, 60, 40]], [True]),
    "positive and negative": ConceptPrompt("cat", [[10, 5, 60, 40], [90, 10, 140, 55]], [True, False]),
    "boxes alone": ConceptPrompt(None, [[10, 5, 60, 40], [70, 20, 100, 50]], [True, True]),
}


def test_exemplar_prompts_get_what_transformers_gives_them_and_differ_from_text_alone(sam3, alone):
    expected = {k: reference(sam3, image("A"), p) for k, p in EXEMPLARS.items()}
    assert np.abs(expected["positive"]["scores"] - alone["A", "cat"]["scores"]).max() > 0.02  # the boxes count
    assert np.abs(expected["positive"]["scores"] - expected["positive and negative"]["scores"]).max() > 0.02
    prompts = [ConceptPrompt("cat"), *EXEMPLARS.values(), ConceptPrompt("dog")]
    for order, rows_per_call in (([0, 1, 2, 3, 4], 1), ([4, 2, 0, 3, 1], 8)):
        (found,) = sam3.segment_concepts([image("A")], [[prompts[k] for k in order]], threshold=0.0,
                                         rows_per_call=rows_per_call)
        for position, k in enumerate(order):
            key = ["text", *EXEMPLARS, "dog"][k]
            want = alone["A", "cat"] if key == "text" else alone["A", "dog"] if key == "dog" else expected[key]
            assert_same(found, want, position)


def test_max_instances_keeps_the_best_scoring_per_prompt_in_query_order(sam3, alone):
    (found,) = sam3.segment_concepts([image("B")], [[ConceptPrompt(t) for t in TEXTS]], threshold=0.0,
                                     max_instances=3)
    for p, text in enumerate(TEXTS):
        scores = alone["B", text]["scores"]
        best = np.sort(np.argsort(-scores, kind="stable")[:3])
        rows = np.flatnonzero(found.prompts == p)
        assert found.queries[rows].tolist() == best.tolist()
        assert_allclose(found.scores[rows], scores[best], rtol=1e-5)


@pytest.mark.parametrize("threshold, mask_threshold", [(0.3, 0.5), (0.5, 0.7), (0.5, 0.2)])
def test_thresholds_mean_what_transformers_means(sam3, threshold, mask_threshold):
    expected = reference(sam3, image("A"), ConceptPrompt("traffic light"), threshold, mask_threshold)
    assert 0 < len(expected["scores"]) < QUERIES
    (found,) = sam3.segment_concepts([image("A")], [[ConceptPrompt("traffic light")]], threshold=threshold,
                                     mask_threshold=mask_threshold)
    assert_same(found, expected)
    assert (found.scores > threshold).all()


def test_a_prompt_longer_than_the_text_window_is_refused_in_one_line(sam3):
    long = " ".join(["forklift"] * 31)
    with pytest.raises(ValueError, match=r"^prompt 'forklift .*' is 33 tokens; SAM 3 reads at most 32 \(its start "
                                         r"and end tokens included\): shorten it$"):
        sam3.segment_concepts([image("A")], [[ConceptPrompt(long)]])


# -- the tracker as a segmenter ---------------------------------------------------------------------------------

def test_the_tracker_segments_each_box_as_transformers_does(sam3):
    tracker = Sam3Tracker.load(ModelSpec(type="sam3_tracker", id=real("sam3")))
    boxes = np.array([[0, 0, 50, 30], [10, 10, 140, 50], [60, 5, 150, 60]], np.float32)
    got = tracker.segment([image("A"), image("B")], [boxes, boxes[:1] / 2], max_boxes_per_call=2)
    assert got[0].masks.shape == (3, 60, 150) and got[1].masks.shape == (1, 120, 80)
    inputs = tracker.processor(images=[image("A")], input_boxes=[boxes.tolist()], return_tensors="pt")
    with torch.inference_mode():
        out = tracker.model(**inputs, multimask_output=False)
    expected = tracker.processor.post_process_masks(out.pred_masks, inputs["original_sizes"])[0][:, 0].numpy()
    assert 0.02 < expected.mean() < 0.98 and (expected[0] != expected[1]).mean() > 0.01
    assert ((got[0].masks != expected).reshape(3, -1).mean(-1) <= PIXEL_NOISE).all()
    assert_allclose(got[0].predicted_iou, out.iou_scores[0, :, 0].numpy(), rtol=1e-4)


def test_loading_logs_no_warning_about_the_video_checkpoint(caplog):
    with caplog.at_level(logging.WARNING, logger="transformers"):
        Sam3.load(ModelSpec(type="sam3", id=real("sam3")))
    assert not [r for r in caplog.records if "random" in r.getMessage() or "newly initialized" in r.getMessage()]
