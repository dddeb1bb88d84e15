"""SAM 3's video stages on a tiny checkpoint built from the real files (tests/support/tiny_sam3_video.py), loaded the
way users load ``facebook/sam3``: each chunk's rows are what transformers' documented video API gives for that chunk's
frames, with ids stitched by the documented rule; box seeding follows its rule; kill -9 mid-clip then resume gives
the same store.

The tiny model's answers depend on the frames (masks differ from frame to frame) and on the object (each object's
score is its own), which is checked first: a frame handed to the wrong position, or ids swapped between objects,
would show as a different mask or score.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import supervision as sv
import torch
import yaml

from autolabel import Pipeline
from autolabel.records import decode_masks
from autolabel.store import Store
from autolabel.video.chunks import Tracks, first_seen, stitch
from autolabel.video.decode import frames as decode_frames
from autolabel.video.spec import VideoSpec
from autolabel.video.store import ClipStore
from tiny_sam3_video import tiny_sam3_video
from video_scene import ONTOLOGY, write_clip

pytestmark = pytest.mark.slow

VIDEO = {"every": 4, "chunk": 4, "overlap": 1}  # 8 frames (0, 4, ..., 28): chunks [0, 4), [3, 7), [6, 8)
CHUNKS = [(0, 4, 0), (3, 7, 1), (6, 8, 1)]  # (start, end, fresh)
PROMPTS = ["car", "person"]
TRACK = {"type": "track", "model": "sam3", "prompts": PROMPTS, "threshold": 0.1, "new_object_threshold": 0.12}


@pytest.fixture(scope="module")
def checkpoint() -> str:
    return tiny_sam3_video()


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_clip(tmp_path_factory.mktemp("clip") / "scene.mp4")


def pipeline(checkpoint: str, stages: list[dict], model_type: str = "sam3_video") -> dict:
    return {"ontology": ONTOLOGY, "models": {"sam3": {"type": model_type, "id": checkpoint}}, "stages": stages,
            "video": VIDEO}


@pytest.fixture(scope="module")
def tracked(checkpoint: str, clip: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The clip through the track stage (an uninterrupted run)."""
    out = tmp_path_factory.mktemp("tracked")
    summary = Pipeline.from_dict(pipeline(checkpoint, [TRACK])).run(input=str(clip), output=out)
    assert summary.counts["labeled"] == 1 and summary.counts["frames"] == 8
    return out


def stored_rows(output: Path) -> dict[int, list[dict]]:
    """Sampled position → the stored rows of a track (id, class, phrase, score, box, mask), by track id."""
    with Store(output) as store:
        clips = ClipStore(store)
        (clip,) = clips.clips()
        out = {}
        for f in clips.frames(clip.id):
            boxes = f.labels["boxes"]
            d = boxes["data"]
            rles = boxes.get("mask") or [None] * len(boxes["xyxy"])
            masks = [decode_masks([m])[0] if m is not None else None for m in rles]
            rows = [{"id": int(t), "class": c, "phrase": p, "score": s, "xyxy": tuple(x), "mask": masks[i],
                     "status": st, "reason": r, "stage": sg}
                    for i, (t, c, p, s, x, st, r, sg) in enumerate(zip(d["track_id"], d["class_name"], d["phrase"],
                                                                       boxes["confidence"], boxes["xyxy"], d["status"],
                                                                       d["reason"], d["stage"])) if t is not None]
            out[f.position] = sorted(rows, key=lambda r: r["id"])
        return out


def as_tracks(rows: list[dict]) -> Tracks:
    """Stored rows of a frame as the stitching rule reads them."""
    if not rows:
        return Tracks(np.zeros(0, np.int64), np.zeros((0, 4), np.float32))
    masks = np.stack([r["mask"] for r in rows])
    return Tracks(np.array([r["id"] for r in rows]), edge_boxes(masks), masks)


def edge_boxes(masks: np.ndarray) -> np.ndarray:
    return sv.mask_to_xyxy(masks).astype(np.float32) + np.array([0, 0, 1, 1], np.float32) if len(masks) else \
        np.zeros((0, 4), np.float32)


def reference_track(checkpoint: str, images: list) -> list[dict]:
    """transformers' documented use of Sam3VideoModel on one chunk: per frame, ids, scores, masks, prompt."""
    from transformers import Sam3VideoModel, Sam3VideoProcessor

    from autolabel.models.sam3_video import install_cv_utils_fallback

    install_cv_utils_fallback()  # what the sam3_video model type does where transformers' hub kernel is missing
    model = Sam3VideoModel.from_pretrained(checkpoint).eval()
    processor = Sam3VideoProcessor.from_pretrained(checkpoint)
    model.score_threshold_detection, model.new_det_thresh = TRACK["threshold"], TRACK["new_object_threshold"]
    session = processor.init_video_session(video=images, inference_device="cpu", dtype=torch.float32)
    processor.add_text_prompt(session, PROMPTS)
    out = {}
    for output in model.propagate_in_video_iterator(session):
        r = processor.postprocess_outputs(session, output)
        prompt = {int(i): text for text, ids in r["prompt_to_obj_ids"].items() for i in ids}
        masks = r["masks"].numpy().astype(bool)
        present = masks.reshape(len(masks), -1).any(axis=1)  # an object whose mask is empty is not on the frame
        ids = [i for i, p in zip(r["object_ids"].tolist(), present) if p]
        out[output.frame_idx] = {"ids": np.array(ids, np.int64),
                                 "scores": r["scores"].numpy().astype(np.float32)[present], "masks": masks[present],
                                 "prompts": [prompt[i] for i in ids]}
    return [out[k] for k in range(len(images))]


def test_each_chunk_is_what_sam3_video_gives_for_its_frames_with_ids_stitched_by_the_rule(
    checkpoint: str, clip: Path, tracked: Path
) -> None:
    images = [f.image for f in decode_frames(str(clip), VideoSpec(**VIDEO))]
    stored = stored_rows(tracked)
    assert sorted(stored) == list(range(8))
    next_id, seen_new_object = 1, False
    committed: dict[int, Tracks] = {}
    for start, end, fresh in CHUNKS:
        ref = reference_track(checkpoint, images[start:end])
        seen_new_object |= any(set(r["ids"]) - set(ref[0]["ids"]) for r in ref[1:])
        local = [Tracks(r["ids"], edge_boxes(r["masks"]), r["masks"]) for r in ref]
        mapping, next_id = stitch([committed[start + k] for k in range(fresh)], local[:fresh],
                                  first_seen(local[fresh:]), next_id, 0.5)
        for k in range(fresh, end - start):
            r, got = ref[k], stored[start + k]
            want = sorted(({"id": mapping[int(i)], "class": r["prompts"][n], "phrase": r["prompts"][n],
                            "score": float(r["scores"][n]), "mask": r["masks"][n]}
                           for n, i in enumerate(r["ids"])), key=lambda w: w["id"])
            assert [(g["id"], g["class"], g["phrase"]) for g in got] == [(w["id"], w["class"], w["phrase"])
                                                                        for w in want], start + k
            assert [g["score"] for g in got] == pytest.approx([w["score"] for w in want], abs=1e-7)
            for g, w in zip(got, want):
                assert np.array_equal(g["mask"], w["mask"])
                assert g["xyxy"] == tuple(edge_boxes(w["mask"][None])[0])
            committed[start + k] = as_tracks(got)
    # the answers differ between frames and between objects, so a shifted frame or swapped ids would show
    masks = [tuple(int(m.sum()) for m in (g["mask"] for g in stored[p])) for p in range(8)]
    assert len(set(masks)) > 4
    first = stored[0]
    assert len(first) >= 2 and len({g["score"] for g in first}) == len(first)
    assert seen_new_object  # some object starts after its chunk's first frame: picked up mid-chunk


def test_prompt_order_changes_no_label(checkpoint: str, clip: Path) -> None:
    from autolabel.config import ModelSpec
    from autolabel.models.sam3_video import Sam3Video

    model = Sam3Video.load(ModelSpec(type="sam3_video", id=checkpoint))
    images = [f.image for f in decode_frames(str(clip), VideoSpec(**VIDEO))][:3]
    a = model.track_concepts(images, ["car", "person"], threshold=0.1, new_object_threshold=0.12)
    b = model.track_concepts(images, ["person", "car"], threshold=0.1, new_object_threshold=0.12)
    for fa, fb in zip(a, b):
        key = lambda m, names: sorted((names[p], float(s), m.masks[n].tobytes())  # noqa: E731
                                      for n, (p, s) in enumerate(zip(m.prompts, m.scores)))
        assert key(fa, ["car", "person"]) == key(fb, ["person", "car"])
        assert len(fa) >= 2
    assert model.text_encoder_calls == 2  # each prompt's text encoded once for both calls


def test_box_seeds_start_tracks_where_no_tracked_object_overlaps(checkpoint: str, clip: Path, tmp_path: Path) -> None:
    from transformers import Sam3TrackerVideoModel, Sam3TrackerVideoProcessor

    from autolabel.stage import Item

    stages = [{"type": "video_scene:ColourBoxes", "name": "boxes"},
              {"type": "track_boxes", "model": "sam3", "from_stages": ["boxes"], "every": 2, "seed_iou": 0.3}]
    Pipeline.from_dict(pipeline(checkpoint, stages, "sam3_tracker_video")).run(input=str(clip), output=tmp_path)
    stored = stored_rows(tmp_path)
    decoded = list(decode_frames(str(clip), VideoSpec(**VIDEO)))
    images = [f.image for f in decoded]
    # the rule, rebuilt here: keyframes 0, 2 of each chunk; a box is new unless a tracked box overlapped it by 0.3
    detections = Pipeline.from_dict({"ontology": ONTOLOGY, "stages": [stages[0]]})
    dets = [detections([Item.of(im)])[0].labels.detections for im in images]
    next_id, committed = 1, {}
    for start, end, fresh in CHUNKS:
        seeds: dict[int, list] = {}
        info: dict[int, tuple[str, float]] = {}
        previous = np.zeros((0, 4), np.float32)
        ref_frames = []
        # step frame by frame, as the rule needs the tracked boxes of the frame before

        model = Sam3TrackerVideoModel.from_pretrained(checkpoint).eval()
        processor = Sam3TrackerVideoProcessor.from_pretrained(checkpoint)
        session = processor.init_video_session(video=images[start:end], inference_device="cpu", dtype=torch.float32)
        for k in range(end - start):
            det = dets[start + k]
            new = []
            if k % 2 == 0 and len(det):
                known = sv.box_iou_batch(det.xyxy, previous).max(axis=1) >= 0.3 if len(previous) else \
                    np.zeros(len(det), bool)
                for n in np.flatnonzero(~known):
                    info[len(info)] = (str(det.data["class_name"][n]), float(det.confidence[n]))
                    new.append((len(info) - 1, [float(v) for v in det.xyxy[n]]))
            if new:
                processor.add_inputs_to_inference_session(session, frame_idx=k, obj_ids=[i for i, _ in new],
                                                          input_boxes=[[b for _, b in new]])
                seeds[k] = new
            with torch.inference_mode():
                o = model(inference_session=session, frame_idx=k)
            masks = processor.post_process_masks([o.pred_masks], original_sizes=[[48, 64]], binarize=True)[0][:, 0]
            masks = masks.numpy()
            score = torch.sigmoid(o.object_score_logits.float()).reshape(-1).numpy()
            keep = masks.reshape(len(masks), -1).any(axis=1)
            ref = {"ids": np.array(o.object_ids)[keep], "masks": masks[keep], "scores": score[keep]}
            ref_frames.append(ref)
            previous = edge_boxes(ref["masks"])
        local = [Tracks(r["ids"], edge_boxes(r["masks"]), r["masks"]) for r in ref_frames]
        mapping, next_id = stitch([committed[start + k] for k in range(fresh)], local[:fresh],
                                  first_seen(local[fresh:]), next_id, 0.5)
        for k in range(fresh, end - start):
            r, got = ref_frames[k], stored[start + k]
            want = sorted(({"id": mapping[int(i)], "class": info[int(i)][0], "score": float(r["scores"][n]),
                            "mask": r["masks"][n]} for n, i in enumerate(r["ids"])), key=lambda w: w["id"])
            assert [(g["id"], g["class"], g["stage"]) for g in got] == [(w["id"], w["class"], "track_boxes")
                                                                        for w in want], start + k
            assert [g["score"] for g in got] == pytest.approx([w["score"] for w in want], abs=1e-7)
            assert all(np.array_equal(g["mask"], w["mask"]) for g, w in zip(got, want))
            committed[start + k] = as_tracks(got)
        assert seeds.get(0) and (end - start < 3 or 2 in seeds or not len(dets[start + 2]))
    with Store(tmp_path) as store:
        clips = ClipStore(store)
        records = [f.labels["boxes"]["data"] for f in clips.frames(clips.clips()[0].id)]
    seed_rows = [(c, st, r) for d in records for c, st, r, sg in zip(d["class_name"], d["status"], d["reason"],
                                                                      d["stage"]) if sg == "boxes"]
    assert seed_rows[:2] == [("car", "dropped", "tracked"), ("person", "dropped", "tracked")]
    assert {(st, r) for _, st, r in seed_rows} == {("dropped", "tracked")}  # every detector row is superseded
    seeded = {(c, round(s, 3)) for d in records for c, s, t in zip(d["class_name"], d["seed_score"], d["track_id"])
              if t is not None}
    assert seeded and seeded <= {("car", 0.9), ("person", 0.8), ("ball", 0.7)}  # each track's seed box's score


def _frames_table(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT position, frame_index, time, labels FROM frames ORDER BY position").fetchall()


def test_kill_9_mid_clip_then_resume_gives_the_uninterrupted_store(
    checkpoint: str, clip: Path, tracked: Path, tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    spec = tmp_path / "pipeline.yaml"
    spec.write_text(yaml.safe_dump(pipeline(checkpoint, [TRACK])))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "autolabel", "run", str(spec), "-i", str(clip), "-o", str(out), "--no-progress"]
    proc = subprocess.Popen(cmd, env=subprocess_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline, committed = time.monotonic() + 240, 0
    while time.monotonic() < deadline and committed < 4 and proc.poll() is None:
        time.sleep(0.05)
        try:
            with sqlite3.connect(out / "autolabel.db", timeout=1) as conn:
                committed = conn.execute("SELECT COALESCE(MAX(next_frame), 0) FROM clips").fetchone()[0]
        except sqlite3.OperationalError:
            continue
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    with sqlite3.connect(out / "autolabel.db") as conn:
        assert conn.execute("SELECT status, next_frame FROM clips").fetchone() == ("running", 4)
    summary = Pipeline.from_dict(pipeline(checkpoint, [TRACK])).run(input=str(clip), output=out)
    assert summary.counts["frames"] == 4  # the resumed run labeled the chunks after the one committed
    assert _frames_table(out / "autolabel.db") == _frames_table(tracked / "autolabel.db")
