"""Clips through a pipeline: every frame's boxes are the scene's, each object keeps one id across chunk seams,
track filters decide over whole tracks, and a clip resumes at the chunk in flight (kill -9 included)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from autolabel.accounting import Account
from autolabel.intake import discover
from autolabel.filters.tracks import TrackClass, TrackLength, TrackScore, TrackTable
from autolabel.ontology import Ontology
from autolabel import Pipeline
from autolabel.stage import StageContext
from autolabel.store import Store
from autolabel.video.chunks import Tracks, stitch
from autolabel.video.loop import label_clips
from autolabel.video.store import ClipStore
from video_scene import FRAMES, MODELS, ONTOLOGY, render, truth, write_clip

TRUTH = truth()
TRACKER = {"type": "video_scene:ColourTracks", "first_id": 100}
FILTERS = [{"type": "track_length", "min_frames": 3}, {"type": "track_score", "threshold": 0.3},
           {"type": "track_class"}]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_clip(tmp_path_factory.mktemp("clip") / "scene.mp4")


def pipeline(video: dict | None = None, tracker: dict | None = None, filters: list | None = None) -> dict:
    return {"ontology": ONTOLOGY, "stages": [tracker or TRACKER, *(FILTERS if filters is None else filters)],
            "video": video or {"chunk": 8, "overlap": 2}}


def stored(output: Path) -> list[dict]:
    """Every stored frame: position, index, time and its boxes by object name (phrase)."""
    with Store(output) as store:
        clips = ClipStore(store)
        (row,) = clips.clips()
        out = []
        for f in clips.frames(row.id):
            b = f.labels["boxes"]
            d = b["data"]
            boxes = {name: {"xyxy": tuple(xyxy), "track": tid, "class": cls, "status": st, "reason": r,
                            "frame_class": (d.get("frame_class") or [""] * len(b["xyxy"]))[i]}
                     for i, (name, xyxy, tid, cls, st, r) in enumerate(zip(d["phrase"], b["xyxy"], d["track_id"],
                                                                           d["class_name"], d["status"], d["reason"]))}
            out.append({"position": f.position, "index": f.index, "time": f.time, "boxes": boxes})
        return out


@pytest.mark.parametrize(("chunk", "overlap", "scramble"), [(30, 4, False), (8, 2, False), (5, 1, True),
                                                            (2, 1, True)])
def test_each_object_keeps_one_id_across_chunk_seams(clip: Path, tmp_path: Path, chunk: int, overlap: int,
                                                     scramble: bool) -> None:
    tracker = TRACKER | {"scramble": scramble}
    summary = Pipeline.from_dict(pipeline({"chunk": chunk, "overlap": overlap}, tracker, [])).run(
        input=str(clip), output=tmp_path)
    assert summary.counts == {"seen": 1, "labeled": 1, "skipped": 0, "failed": 0, "frames": FRAMES}
    frames = stored(tmp_path)
    assert [(f["position"], f["index"]) for f in frames] == [(k, k) for k in range(FRAMES)]
    assert [f["time"] for f in frames] == pytest.approx([k / 10 for k in range(FRAMES)])
    ids: dict[str, set] = {}
    for f in frames:
        assert {name: b["xyxy"] for name, b in f["boxes"].items()} == TRUTH[f["index"]]
        for name, b in f["boxes"].items():
            ids.setdefault(name, set()).add(b["track"])
    # one id per object, numbered by first appearance from 1: car and person (frame 0), ghost (5), ball (9)
    assert ids == {"car": {1.0}, "person": {2.0}, "ghost": {3.0}, "ball": {4.0}}
    with Store(tmp_path) as store:
        assert ClipStore(store).clips()[0].next_track == 5


def test_stitching_matches_by_overlap_iou_with_hungarian_assignment() -> None:
    box = lambda x: np.array([[x, 0, x + 10, 10]], dtype=np.float32)  # noqa: E731
    two = lambda a, b: Tracks(np.array([a, b]), np.concatenate([box(0), box(4)]))  # noqa: E731
    # clip tracks 7 (x 0..10) and 8 (x 4..14); the chunk calls them 1 and 0: matched by overlap, not by number
    mapping, nxt = stitch([two(7, 8)], [two(1, 0)], [1, 0, 5], next_id=9, min_iou=0.5)
    assert mapping == {1: 7, 0: 8, 5: 9} and nxt == 10
    # greedy would give chunk track 0 (IoU 0.43 / 0.82 …) the wrong clip track; Hungarian maximises the total
    prev = [Tracks(np.array([1, 2]), np.array([[0, 0, 10, 10], [6, 0, 16, 10]], dtype=np.float32))]
    cur = [Tracks(np.array([0, 1]), np.array([[3, 0, 13, 10], [0, 0, 9, 10]], dtype=np.float32))]
    mapping, _ = stitch(prev, cur, [0, 1], next_id=3, min_iou=0.3)
    assert mapping == {0: 2, 1: 1}
    # below stitch_iou: a new track, not a continuation
    mapping, nxt = stitch([Tracks(np.array([4]), box(0))], [Tracks(np.array([0]), box(8))], [0], 5, 0.5)
    assert mapping == {0: 5} and nxt == 6
    # the score is the mean IoU over overlap frames where either track appears: absent on one frame halves it
    prev = [Tracks(np.array([4]), box(0)), Tracks(np.array([4]), box(0))]
    cur = [Tracks(np.array([0]), box(0)), Tracks(np.array([], dtype=np.int64), np.zeros((0, 4), np.float32))]
    assert stitch(prev, cur, [0], 5, 0.5)[0] == {0: 4}
    assert stitch(prev, cur, [0], 5, 0.51)[0] == {0: 5}


def test_track_filters_decide_over_whole_tracks(clip: Path, tmp_path: Path) -> None:
    tracker = TRACKER | {"miscall_person_every": 5}  # the person is called a car (score 0.3) on every 5th frame
    summary = Pipeline.from_dict(pipeline(tracker=tracker)).run(input=str(clip), output=tmp_path)
    frames = stored(tmp_path)
    ghost = [f["boxes"]["ghost"] for f in frames if "ghost" in f["boxes"]]
    assert len(ghost) == 2 and all((b["status"], b["reason"]) == ("dropped", "short_track") for b in ghost)
    ball = [f["boxes"]["ball"] for f in frames if "ball" in f["boxes"]]
    assert len(ball) == 13 and all((b["status"], b["reason"]) == ("dropped", "low_track_score") for b in ball)
    person = {f["position"]: f["boxes"]["person"] for f in frames}
    assert all(b["class"] == "person" and b["status"] == "kept" for b in person.values())  # voted back
    assert {p for p, b in person.items() if b["frame_class"]} == {0, 5, 10, 15, 20, 25}
    assert all(person[p]["frame_class"] == "car" for p in (0, 5, 10, 15, 20, 25))
    assert summary.data["decisions"] == {
        "by_reason": {"dropped/low_track_score": 13, "dropped/short_track": 2},
        "by_class": {"ball": {"dropped": 13}, "car": {"kept": 30}, "ghost": {"dropped": 2}, "person": {"kept": 30}},
    }


def table(rows: list[tuple[int, int, str, float | None, str]]) -> TrackTable:
    """A TrackTable from (frame, track, class, score, status) rows, one row per frame record."""
    frames: dict[int, dict] = {}
    for frame, track, cls, score, status in rows:
        rec = frames.setdefault(frame, {"boxes": {"confidence": [], "data": {k: [] for k in
                                                                              ("track_id", "class_name", "status",
                                                                               "reason")}}})
        rec["boxes"]["confidence"].append(score)
        d = rec["boxes"]["data"]
        d["track_id"].append(track)
        d["class_name"].append(cls)
        d["status"].append(status)
        d["reason"].append("" if status == "kept" else "earlier")
    return TrackTable.gather(sorted(frames.items()))


def test_track_filter_rules_on_a_table() -> None:
    context = StageContext(ontology=Ontology.from_config(["car", "truck", "bus"]))
    t = table([(0, 1, "car", 0.9, "kept"), (1, 1, "truck", 0.5, "kept"), (2, 1, "truck", 0.5, "kept"),
               (0, 2, "bus", None, "kept"), (1, 2, "bus", None, "kept"),
               (0, 3, "car", 0.2, "kept"), (1, 3, "truck", 0.9, "dropped"), (2, 3, "car", 0.2, "kept"),
               (0, 4, "truck", 0.5, "kept"), (1, 4, "car", 0.5, "kept")])

    def track(k: int, *columns: str) -> list[tuple]:
        rows = t.track == k
        return list(zip(t.position[rows].tolist(), *(getattr(t, c)[rows].tolist() for c in columns)))

    TrackClass("vote", TrackClass.Params(type="track_class"), context).apply(t)
    # track 1: truck 0.5 + 0.5 beats car 0.9; the frame that said car keeps it in frame_class
    assert track(1, "class_name", "frame_class") == [(0, "truck", "car"), (1, "truck", ""), (2, "truck", "")]
    assert track(2, "class_name") == [(0, "bus"), (1, "bus")]  # unknown scores vote 1 each
    # a dropped row neither votes nor changes (its 0.9 for truck would have won)
    assert track(3, "class_name", "frame_class") == [(0, "car", ""), (1, "truck", ""), (2, "car", "")]
    assert track(4, "class_name", "frame_class") == [(0, "car", "truck"), (1, "car", "")]  # tie: ontology order
    TrackScore("score", TrackScore.Params(type="track_score", threshold=0.3), context).apply(t)
    assert track(1, "status") == [(0, "kept"), (1, "kept"), (2, "kept")]  # mean 0.63
    assert track(2, "status") == [(0, "kept"), (1, "kept")]  # no known score: not held against it
    assert track(3, "status", "reason") == [(0, "dropped", "low_track_score"), (1, "dropped", "earlier"),
                                            (2, "dropped", "low_track_score")]  # mean of the rows not dropped: 0.2
    TrackLength("len", TrackLength.Params(type="track_length", min_frames=3, action="flag"), context).apply(t)
    assert track(2, "status", "reason") == [(0, "flagged", "short_track"), (1, "flagged", "short_track")]
    assert track(4, "status") == [(0, "flagged"), (1, "flagged")]
    assert track(1, "status") == [(0, "kept"), (1, "kept"), (2, "kept")]  # three frames
    record = {"boxes": {"confidence": [0.9, None, 0.2, 0.5], "data": {
        "track_id": [1.0, 2.0, 3.0, 4.0], "class_name": ["car", "bus", "car", "truck"],
        "status": ["kept"] * 4, "reason": [""] * 4}}}  # frame 0's record, as the table was gathered from it
    assert t.write(0, record)
    assert record["boxes"]["data"] == {
        "track_id": [1.0, 2.0, 3.0, 4.0], "class_name": ["truck", "bus", "car", "car"],
        "status": ["kept", "flagged", "dropped", "flagged"], "reason": ["", "short_track", "low_track_score",
                                                                       "short_track"],
        "frame_class": ["car", "", "", "truck"]}
    assert not t.write(0, record) and not t.write(7, record)  # nothing more to change; a frame without tracks


def test_a_track_filter_must_come_last() -> None:
    from autolabel.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        Pipeline.from_dict(pipeline(filters=[{"type": "track_length"}, {"type": "score_threshold"}]))
    assert err.value.problems == ["stages[2]: stage 'score_threshold' comes after the track filter 'track_length'; "
                                  "track filters decide over whole clips, so they come last"]


def test_reruns_skip_done_clips_and_a_new_track_filter_runs_no_tracker(clip: Path, tmp_path: Path) -> None:
    calls = tmp_path / "calls.txt"
    tracker = TRACKER | {"type": "video_scene:ModelColourTracks", "model": "colours", "calls_file": str(calls)}
    pipeline_ = lambda **kw: pipeline(**kw) | {"models": MODELS}  # noqa: E731
    out = tmp_path / "out"
    Pipeline.from_dict(pipeline_(tracker=tracker)).run(input=str(clip), output=out)
    first = calls.read_text().splitlines()
    assert len(first) == 5  # chunks of 8 with an overlap of 2: starts 0, 6, 12, 18, 24
    again = Pipeline.from_dict(pipeline_(tracker=tracker)).run(input=str(clip), output=out)
    assert again.counts == {"seen": 1, "labeled": 0, "skipped": 1, "failed": 0, "frames": 0}
    assert calls.read_text().splitlines() == first
    strict = [{"type": "track_length", "min_frames": 20}, {"type": "track_class"}]
    changed = Pipeline.from_dict(pipeline_(tracker=tracker, filters=strict)).run(input=str(clip), output=out)
    assert changed.counts["labeled"] == 1 and calls.read_text().splitlines() == first  # the tracker's output cached
    frames = stored(out)
    assert {f["boxes"]["ball"]["reason"] for f in frames if "ball" in f["boxes"]} == {"short_track"}  # 13 < 20
    resampled = Pipeline.from_dict(pipeline_(video={"chunk": 8, "overlap": 2, "every": 2}, tracker=tracker,
                                             filters=strict)).run(
        input=str(clip), output=out)
    assert resampled.counts["frames"] == 15 and len(calls.read_text().splitlines()) == len(first) + 3
    assert [f["index"] for f in stored(out)] == list(range(0, FRAMES, 2))


def test_images_and_clips_in_one_input(clip: Path, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "scene.mp4").write_bytes(clip.read_bytes())
    Image.fromarray(render(14)[0]).save(folder / "frame14.png")
    out = tmp_path / "out"
    summary = Pipeline.from_dict(pipeline() | {"exports": [{"format": "coco"}, {"format": "mot"}]}).run(
        input=str(folder), output=out)
    assert summary.counts == {"seen": 2, "labeled": 2, "skipped": 0, "failed": 0, "frames": FRAMES}
    coco = json.loads((out / "coco.json").read_text())
    assert [i["file_name"] for i in coco["images"]] == ["frame14.png"]
    boxes = {coco["categories"][a["category_id"] - 1]["name"]: a["bbox"] for a in coco["annotations"]}
    assert set(boxes) == {"car", "person", "ball"}  # an image is a clip of one frame: no track filter touches it
    assert (out / "mot" / "scene" / "gt" / "gt.txt").is_file()


class StopAfter:
    """A stop request that becomes true after ``n`` chunks were committed (read between chunks)."""

    def __init__(self, n: int):
        self.n, self.reads = n, 0

    @property
    def requested(self) -> bool:
        self.reads += 1
        return self.reads >= self.n


def test_a_stop_request_commits_the_chunk_in_flight_and_the_next_run_resumes(clip: Path, tmp_path: Path) -> None:
    calls = tmp_path / "calls.txt"
    p = Pipeline.from_dict(pipeline(tracker=TRACKER | {"calls_file": str(calls), "scramble": True}))
    source = discover(str(clip))
    with Store(tmp_path / "out") as store:
        run_id = store.begin_run(p.spec.hash, p.spec.raw)
        outcomes: list = []
        assert label_clips(p, store, run_id, source, StopAfter(2), Account(), outcomes.append) is True
        assert [(o.status, o.frames) for o in outcomes] == [("stopped", 14)]  # chunks [0, 8) and [6, 14)
        row = ClipStore(store).clips("running")[0]
        assert (row.next_frame, row.next_track) == (14, 5)  # car, person, ghost (5), ball (9) so far
    p.run(input=str(clip), output=tmp_path / "out")
    positions = [line.split() for line in calls.read_text().splitlines()]
    assert positions[2][0] == "12"  # the resumed run starts at the chunk in flight: its overlap re-read
    reference = tmp_path / "reference"
    Pipeline.from_dict(pipeline(tracker=TRACKER | {"calls_file": str(calls), "scramble": True})).run(
        input=str(clip), output=reference)
    assert stored(tmp_path / "out") == stored(reference)


def _frames_table(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT position, frame_index, time, labels FROM frames ORDER BY position").fetchall()


@pytest.mark.slow
def test_kill_9_mid_clip_then_resume_equals_an_uninterrupted_run(
    clip: Path, tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    spec = tmp_path / "pipeline.yaml"
    spec.write_text(yaml.safe_dump(pipeline({"chunk": 6, "overlap": 2}, TRACKER | {"scramble": True})))
    out, reference = tmp_path / "out", tmp_path / "reference"
    run = lambda output: [sys.executable, "-m", "autolabel", "run", str(spec), "-i", str(clip), "-o", str(output),  # noqa: E731
                          "--no-progress"]
    cmd = run(out)
    env = subprocess_env | {"VIDEO_SCENE_SLEEP": "0.4"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    committed = 0
    while time.monotonic() < deadline and committed < 10:
        time.sleep(0.05)
        try:
            with sqlite3.connect(out / "autolabel.db", timeout=1) as conn:
                committed = conn.execute("SELECT COALESCE(MAX(next_frame), 0) FROM clips").fetchone()[0]
        except sqlite3.OperationalError:
            continue  # not created yet
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    with sqlite3.connect(out / "autolabel.db") as conn:
        status, next_frame = conn.execute("SELECT status, next_frame FROM clips").fetchone()
    assert status == "running" and next_frame in (10, 14, 18, 22) and next_frame < FRAMES
    assert len(_frames_table(out / "autolabel.db")) == next_frame  # whole chunks only
    done = subprocess.run(cmd, env=subprocess_env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    subprocess.run(run(reference), env=subprocess_env, check=True, capture_output=True, timeout=120)
    assert _frames_table(out / "autolabel.db") == _frames_table(reference / "autolabel.db")
    assert stored(out) == stored(reference)
