"""SAM / SAM2 adapters and the ``segment`` stage, on tiny random checkpoints.

Where geometry matters the test rewrites the decoder's low-resolution logits after a real forward pass (e.g. "the
top quarter of the model's input frame"), so upscaling, padding removal and the ±1 stability score are checked
against what they must give on the image, not just their shapes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import supervision as sv
import torch
from numpy.testing import assert_allclose

from autolabel import Pipeline
from autolabel.config import ModelSpec
from autolabel.errors import ConfigError
from autolabel.labels import DROPPED, Labels
from autolabel.models.outputs import Masks
from autolabel.models.sam import Sam, Sam2, stability_score
from autolabel.ontology import Ontology
from autolabel.records import from_record, to_record
from autolabel.stage import Item, StageContext
from autolabel.stages.segment import Segment
from autolabel.store import Store
from tiny_models import Recorder, noise_image, rotated_jpeg, tiny

CHECKPOINTS = Path(__file__).parents[1] / "fixtures" / "checkpoints"  # the real configs (no weights)
WIDE, TALL = (150, 60), (80, 120)
BOXES = [np.array([[0, 0, 50, 30], [10, 10, 140, 50], [0, 0, 150, 60]], np.float32),
         np.zeros((0, 4), np.float32),
         np.array([[5, 5, 70, 110], [0, 60, 80, 120]], np.float32)]


@pytest.fixture(scope="module")
def sam() -> Sam:
    return Sam.load(ModelSpec(type="sam", id=tiny("sam")))


@pytest.fixture(scope="module")
def sam2() -> Sam2:
    return Sam2.load(ModelSpec(type="sam2", id=tiny("sam2")))


@pytest.fixture
def images() -> list:
    return [noise_image(*WIDE, seed=1), noise_image(64, 64, seed=2), noise_image(*TALL, seed=3)]


@pytest.fixture
def record():
    made: list[Recorder] = []

    def make(owner, name, after=None):
        made.append(Recorder(owner, name, after))
        return made[-1]

    yield make
    for r in reversed(made):
        r.undo()


def top_quarter(iou=(0.9,), multimask_choice: int | None = None):
    """Rewrite the decoder's output: logits +10 on the top quarter of its (square) frame, -10 elsewhere."""

    def after(out, *args, **kwargs):
        masks = torch.full_like(out.pred_masks, -10.0)  # (1, N, K, h, w)
        h = masks.shape[-2]
        k = masks.shape[2]
        chosen = multimask_choice if multimask_choice is not None else 0
        masks[:, :, chosen, : h // 4] = 10.0
        if k > 1:
            masks[:, :, (chosen + 1) % k] = 10.0  # a whole-frame mask the model rates lower
        scores = torch.tensor(iou, dtype=out.iou_scores.dtype).expand_as(out.iou_scores).clone()
        out.pred_masks, out.iou_scores = masks, scores
        return out

    return after


@pytest.mark.parametrize("kind", ["sam", "sam2"])
def test_one_image_embedding_per_batch_and_one_decoder_call_per_image_with_all_its_boxes(
    kind, sam, sam2, images, record
):
    model = {"sam": sam, "sam2": sam2}[kind]
    embed = record(model.model, "get_image_embeddings")
    forward = record(model.model, "forward")
    found = model.segment(images, BOXES)
    assert len(embed) == 1 and embed.calls[0][0][0].shape[0] == 2  # the two images that have boxes, together
    assert [tuple(kw["input_boxes"].shape) for _, kw in forward.calls] == [(1, 3, 4), (1, 2, 4)]
    assert all("pixel_values" not in kw for _, kw in forward.calls)  # the decoder reuses the embedding
    assert [m.masks.shape for m in found] == [(3, 60, 150), (0, 64, 64), (2, 120, 80)]
    assert [m.masks.dtype for m in found] == [np.dtype(bool)] * 3
    assert [m.predicted_iou.shape for m in found] == [m.stability_score.shape for m in found] == [(3,), (0,), (2,)]
    assert all(((m.stability_score >= 0) & (m.stability_score <= 1)).all() for m in found)


@pytest.mark.parametrize("kind", ["sam", "sam2"])
def test_boxes_reach_the_model_as_its_own_processor_would_scale_them(kind, sam, sam2, images, record):
    model = {"sam": sam, "sam2": sam2}[kind]
    forward = record(model.model, "forward")
    model.segment(images, BOXES)
    for (_, kw), image, boxes in zip(forward.calls, [images[0], images[2]], [BOXES[0], BOXES[2]]):
        expected = model.processor(images=image, input_boxes=[boxes.tolist()], return_tensors="pt")["input_boxes"]
        assert_allclose(kw["input_boxes"].numpy(), expected.numpy(), rtol=1e-5)


def test_sam_masks_leave_out_the_padding_of_its_input_frame(sam, images, record):
    record(sam.model, "forward", after=top_quarter())
    wide = sam.segment(images[:1], BOXES[:1])[0]
    # SAM's input is the image resized to 64×26 and padded to 64²: the frame's top quarter (16 rows) is 16/26 of
    # the image's height, about 37 of its 60 rows (a plain resize of the square would give 15)
    rows = wide.masks[0].all(axis=1)
    assert rows[:34].all() and not wide.masks[0][40:].any()
    assert (wide.masks[0] == wide.masks[0][:, :1]).all()  # no column differs
    assert_allclose(wide.predicted_iou, [0.9, 0.9, 0.9], rtol=1e-6)
    assert ((wide.stability_score > 0.9) & (wide.stability_score < 1.0)).all()


def test_sam2_masks_resize_straight_back_from_its_square_frame(sam2, images, record):
    record(sam2.model, "forward", after=top_quarter())
    tall = sam2.segment(images[2:], BOXES[2:])[0]
    assert tall.masks[0][:28].all() and not tall.masks[0][32:].any()  # 120 / 4 = 30 rows
    assert (tall.masks == tall.masks[:1]).all()


def test_multimask_keeps_the_mask_the_model_rates_best(sam2, images, record):
    record(sam2.model, "forward", after=top_quarter(iou=(0.2, 0.9, 0.5), multimask_choice=1))
    wide = sam2.segment(images[:1], BOXES[:1], multimask=True)[0]
    assert_allclose(wide.predicted_iou, [0.9, 0.9, 0.9], rtol=1e-6)
    assert wide.masks[0][:13].all() and not wide.masks[0][17:].any()  # the top quarter, not the whole frame


@pytest.mark.parametrize("kind", ["sam", "sam2"])
@pytest.mark.parametrize("multimask", [False, True])
def test_boxes_decoded_in_chunks_give_what_one_call_gives_with_one_image_embedding(
    kind, multimask, sam, sam2, images, record
):
    model = {"sam": sam, "sam2": sam2}[kind]
    rng = np.random.default_rng(0)
    corners = rng.uniform(0, 60, (7, 2)).astype(np.float32)
    boxes = [np.concatenate([corners, corners + rng.uniform(5, 60, (7, 2)).astype(np.float32)], axis=1),
             np.zeros((0, 4), np.float32), BOXES[2]]
    whole = model.segment(images, boxes, multimask=multimask, max_boxes_per_call=64)
    embed = record(model.model, "get_image_embeddings")
    forward = record(model.model, "forward")
    chunked = model.segment(images, boxes, multimask=multimask, max_boxes_per_call=3)
    assert len(embed) == 1  # the vision encoder: once for the batch
    assert [kw["input_boxes"].shape[1] for _, kw in forward.calls] == [3, 3, 1, 2]  # ceil(7/3) + ceil(2/3) calls
    for one, many in zip(whole, chunked):
        assert np.array_equal(one.masks, many.masks)
        assert_allclose(many.predicted_iou, one.predicted_iou, rtol=1e-5, atol=1e-6)
        assert_allclose(many.stability_score, one.stability_score, rtol=1e-5, atol=1e-6)


def test_max_boxes_per_call_must_be_positive(sam):
    with pytest.raises(ValueError, match="max_boxes_per_call must be >= 1"):
        sam.segment([noise_image(8, 8)], [np.array([[0, 0, 4, 4]], np.float32)], max_boxes_per_call=0)


def test_stability_is_the_iou_of_the_masks_at_plus_and_minus_one():
    logits = torch.tensor([[[2.0, 0.5, -0.5, -2.0]], [[-3.0, -3.0, -3.0, -3.0]], [[5.0, 5.0, 5.0, 0.0]]])
    assert_allclose(stability_score(logits).numpy(), [1 / 3, 0.0, 3 / 4])


def test_stability_counts_every_pixel_of_a_mask_and_leaves_out_the_logits_at_exactly_plus_and_minus_one():
    logits = torch.tensor([
        [[1.0, 1.5], [-1.0, -0.9]],  # +1 is not above +1, -1 not above -1: 1 pixel of 3
        [[4.0, -3.0], [-3.0, -3.0]],  # a one-pixel mask, sure of itself: 1 of 1
        [[-3.0, -3.0], [-3.0, 0.5]],  # one uncertain pixel: 0 of 1
        [[2.0, 2.0], [2.0, -0.5]],  # the second row counts as much as the first: 3 of 4
    ])
    got = stability_score(logits)
    assert got.shape == (4,)
    assert_allclose(got.numpy(), [1 / 3, 1.0, 0.0, 3 / 4])
    assert_allclose(stability_score(logits, offset=0.95).numpy(), [2 / 3, 1.0, 0.0, 3 / 4])  # +1 and -0.9 inside


def quarters(iou):
    """Rewrite the decoder's output: its k-th mask is the top (k + 1) quarters of the frame, rated ``iou[k]``."""

    def after(out, *args, **kwargs):
        masks = torch.full_like(out.pred_masks, -10.0)  # (1, N, K, h, w)
        h, k = masks.shape[-2], masks.shape[2]
        for j in range(k):
            masks[:, :, j, : h * (j + 1) // 4] = 10.0
        scores = torch.tensor(iou[:k], dtype=out.iou_scores.dtype).expand_as(out.iou_scores).clone()
        out.pred_masks, out.iou_scores = masks, scores
        return out

    return after


@pytest.mark.parametrize("kind", ["sam", "sam2"])
def test_one_mask_per_box_unless_multimask_is_asked_for(kind, sam, sam2, images, record):
    """By default the decoder proposes one mask per box and that mask is kept; with ``multimask`` it proposes three
    and the one it rates best is kept (here the second: the top half, where the first is the top quarter)."""
    model = {"sam": sam, "sam2": sam2}[kind]
    forward = record(model.model, "forward", after=quarters((0.3, 0.9, 0.6)))
    one = model.segment(images[2:], BOXES[2:])[0]
    best = model.segment(images[2:], BOXES[2:], multimask=True)[0]
    assert [kw["multimask_output"] for _, kw in forward.calls] == [False, True]
    assert_allclose(one.predicted_iou, [0.3, 0.3], rtol=1e-6)
    assert_allclose(best.predicted_iou, [0.9, 0.9], rtol=1e-6)
    # the tall image is 120 rows: a quarter is 30 of them, a half 60 (a few rows of blur at the edge)
    assert one.masks[:, :27].all() and not one.masks[:, 33:].any()
    assert best.masks[:, :57].all() and not best.masks[:, 63:].any()


# -- the segment stage ------------------------------------------------------------------------------------

class FakeSegmenter:
    """Masks that cover each box, predicted IoU 0.5 + 0.1·k; records the boxes it was given."""

    id, revision, task = "fake/sam", None, "box_to_mask"

    def __init__(self):
        self.asked = []

    def segment(self, images, boxes, multimask=False):
        self.asked.append([b.copy() for b in boxes])
        out = []
        for image, b in zip(images, boxes):
            masks = np.zeros((len(b), image.height, image.width), bool)
            for k, (x1, y1, x2, y2) in enumerate(b.astype(int)):
                masks[k, y1:y2, x1:x2] = True
            out.append(Masks(masks, 0.5 + 0.1 * np.arange(len(b), dtype=np.float32), np.full(len(b), 0.75, np.float32)))
        return out


def labelled(image) -> Labels:
    """Rows: 0 from 'det' kept, 1 from 'det' dropped, 2 from 'other' kept, 3 from 'det' kept with a mask already."""
    labels = Labels(width=image.width, height=image.height)
    labels.add(sv.Detections(xyxy=np.array([[0, 0, 4, 4], [1, 1, 5, 5]], np.float32),
                             data={"status": np.array(["kept", DROPPED], dtype=object)}), stage="det")
    labels.add(sv.Detections(xyxy=np.array([[2, 2, 8, 6]], np.float32)), stage="other")
    existing = np.zeros((1, image.height, image.width), bool)
    existing[0, 0, 0] = True
    labels.add(sv.Detections(xyxy=np.array([[0, 0, 9, 9]], np.float32), mask=existing), stage="det")
    return labels


def segment_stage(model, **params) -> Segment:
    specs = {"sam": ModelSpec(type="sam2", id="fake/sam")}
    pool = type("Pool", (), {"get": lambda self, name: model, "specs": specs})()
    context = StageContext(ontology=Ontology.from_config(["thing"]), models=pool,
                           extra={"stage_names": ["det", "other", "masks"]})
    return Segment("masks", Segment.Params.model_validate({"type": "segment", "model": "sam", **params}), context)


@pytest.mark.parametrize("params, rows", [
    ({}, [0, 2]),
    ({"from_stages": ["det"]}, [0]),
    ({"from_stages": ["det"], "overwrite": True}, [0, 3]),
])
def test_segment_fills_the_masks_of_the_kept_rows_it_is_asked_for(params, rows):
    image = noise_image(10, 8)
    model = FakeSegmenter()
    (item,) = segment_stage(model, **params)([Item(image=image, labels=labelled(image))])
    det = item.labels.detections
    assert_allclose(model.asked[0][0], det.xyxy[rows])
    assert len(det) == 4  # masks join their boxes' rows; no row is added
    has = [i in rows or i == 3 for i in range(4)]
    assert list(det.data["has_mask"]) == has
    for k, i in enumerate(rows):
        x1, y1, x2, y2 = det.xyxy[i].astype(int)
        assert det.mask[i].sum() == (min(y2, 8) - y1) * (min(x2, 10) - x1)  # the fake mask fills the box
        assert det.data["predicted_iou"][i] == pytest.approx(0.5 + 0.1 * k)
        assert det.data["stability_score"][i] == pytest.approx(0.75)
        assert det.data["mask_stage"][i] == "masks"
    untouched = [i for i in range(4) if i not in rows]
    assert np.isnan(det.data["predicted_iou"][untouched]).all()
    if 3 not in rows:
        assert det.mask[3].sum() == 1  # the earlier mask stays
    prov = item.labels.provenance["masks"]
    assert (prov["model"], prov["model_type"], prov["task"], prov["score"]) == (
        "fake/sam", "sam2", "box_to_mask", "predicted_iou"
    )
    back = from_record(to_record(item.labels))  # what the store keeps
    assert (back.detections.mask == det.mask).all()
    assert_allclose(back.detections.data["predicted_iou"], det.data["predicted_iou"])


def test_segment_from_stages_must_name_earlier_stages():
    data = {
        "models": {"det": {"type": "owlv2", "id": "x/y"}, "sam": {"type": "sam", "id": "x/z"}},
        "ontology": ["person"],
        "stages": [{"type": "detect", "model": "det"}, {"type": "segment", "model": "sam", "from_stages": ["boxes"]}],
    }
    with pytest.raises(ConfigError, match=r"^stages\[1\]\.from_stages: 'boxes' is not an earlier stage "
                                          r"\(earlier stages: detect\)$"):
        Pipeline.from_dict(data)


# -- whole runs -------------------------------------------------------------------------------------------

def count(monkeypatch, cls, name: str) -> list:
    """Count calls of ``cls.name`` for every instance (the pipeline loads its own)."""
    original, calls = getattr(cls, name), []

    def wrapper(self, *args, **kwargs):
        calls.append(kwargs.get("input_boxes", args[0] if args else None))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, name, wrapper)
    return calls


def check_masks(output: Path, sizes: dict[str, tuple[int, int]]) -> int:
    """Every kept box has a mask of its image's displayed size, with predicted IoU and stability; returns the count."""
    n = 0
    with Store(output) as store:
        for row in store.images():
            labels = from_record(row["labels"])
            det = labels.detections
            w, h = sizes[row["rel_path"]]
            assert (labels.width, labels.height) == (w, h)
            kept = det.data["status"] != DROPPED
            assert kept.any()
            assert det.mask.shape == (len(det), h, w)
            assert det.data["has_mask"][kept].all()
            assert not np.isnan(det.data["predicted_iou"][kept].astype(float)).any()
            stability = det.data["stability_score"][kept].astype(float)
            assert ((stability >= 0) & (stability <= 1)).all()
            n += int(kept.sum())
    return n


def write_inputs(folder: Path) -> dict[str, tuple[int, int]]:
    folder.mkdir()
    noise_image(150, 60, seed=1).save(folder / "wide.png")
    noise_image(80, 120, seed=2).save(folder / "tall.png")
    rotated_jpeg(folder / "rotated.jpg", 90, 50)
    return {"wide.png": (150, 60), "tall.png": (80, 120), "rotated.jpg": (50, 90)}


def test_shipped_grounding_sam2_pipeline_runs_with_tiny_checkpoints(tmp_path, monkeypatch):
    from transformers import Sam2Model

    sizes = write_inputs(tmp_path / "in")
    embeds = count(monkeypatch, Sam2Model, "get_image_embeddings")
    decodes = count(monkeypatch, Sam2Model, "forward")
    pipeline = Pipeline.from_yaml(Path(__file__).parents[2] / "pipelines" / "grounding-sam2.yaml", [
        f"models.detector.id={tiny('grounding_dino')}", f"models.segmenter.id={tiny('sam2')}",
        "stages.0.box_threshold=0.0", "stages.0.text_threshold=0.0", "batch_size=2",
    ])
    summary = pipeline.run(input=tmp_path / "in", output=tmp_path / "out")
    assert summary.status == "ok" and summary.counts["labeled"] == 3
    assert len(embeds) == 2  # one vision pass per batch of two images (then one)
    assert sorted(b.shape[1] for b in decodes) == [10, 10, 10]  # one decoder call per image, all its boxes
    assert check_masks(tmp_path / "out", sizes) == 30


def test_sam_pipeline_segments_only_the_boxes_of_the_named_stage(tmp_path):
    sizes = write_inputs(tmp_path / "in")
    data = {
        "models": {"det": {"type": "owlv2", "id": tiny("owlv2")}, "sam": {"type": "sam", "id": tiny("sam")}},
        "ontology": ["person", "car"],
        "stages": [
            {"name": "boxes", "type": "detect", "model": "det", "box_threshold": 0.0},
            {"name": "masks", "type": "segment", "model": "sam", "from_stages": ["boxes"]},
        ],
    }
    summary = Pipeline.from_dict(data).run(input=tmp_path / "in", output=tmp_path / "out")
    assert summary.status == "ok"
    assert check_masks(tmp_path / "out", sizes) > 0
    with Store(tmp_path / "out") as store:
        row = next(store.images())
    prov = row["labels"]["provenance"]["masks"]
    assert (prov["model"], prov["model_type"], prov["from_stages"]) == (tiny("sam"), "sam", ["boxes"])


def test_the_stage_passes_max_boxes_per_call_to_segmenters_that_take_it(sam):
    image = noise_image(10, 8)
    calls = []
    original = sam.segment

    def spy(images, boxes, multimask=False, max_boxes_per_call=64):
        calls.append(max_boxes_per_call)
        return original(images, boxes, multimask=multimask, max_boxes_per_call=max_boxes_per_call)

    sam.segment = spy
    try:
        segment_stage(sam, max_boxes_per_call=1)([Item(image=image, labels=labelled(image))])
        segment_stage(sam)([Item(image=image, labels=labelled(image))])
    finally:
        del sam.segment
    assert calls == [1, 64]
    with pytest.raises(Exception, match="max_boxes_per_call"):
        segment_stage(sam, max_boxes_per_call=0)


def test_a_sam2_video_config_becomes_the_image_models_config_with_the_same_parts():
    """The real sam2.1 config (a ``sam2_video`` one), each part and the init range moved off Sam2Config's defaults so
    that a part left out would show: the image model's config carries them over; an image config is kept as it is."""
    from transformers import AutoConfig, Sam2Config

    video = AutoConfig.from_pretrained(str(CHECKPOINTS / "facebook--sam2.1-hiera-tiny"))
    assert video.model_type == "sam2_video"
    video.vision_config.fpn_hidden_size = 128
    video.prompt_encoder_config.mask_input_channels = 8
    video.mask_decoder_config.mlp_dim = 1024
    video.initializer_range = 0.05
    image = Sam2.image_config(video)
    assert type(image) is Sam2Config and image.initializer_range == 0.05

    def fields(part):
        return {k: v for k, v in part.to_dict().items() if k != "model_type"}

    default = Sam2Config()
    for part in ("vision_config", "prompt_encoder_config", "mask_decoder_config"):
        assert fields(getattr(image, part)) == fields(getattr(video, part)) != fields(getattr(default, part)), part
    assert Sam2.image_config(image) is image
