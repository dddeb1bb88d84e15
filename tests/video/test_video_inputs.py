"""Clips as inputs: every container decodes to the scene's pixels at its time stamps, sampling keeps the frames
it says, a phone's rotated clip is upright, and every limit fails the clip in one line while the run goes on."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest

from autolabel.config import parse
from autolabel.errors import ConfigError, NothingLabeledError
from autolabel.intake import discover
from autolabel import Pipeline
from autolabel.store import Store
from autolabel.video.decode import ClipInfo, Sampler, frames, limit_problem, probe
from autolabel.video.spec import VideoSpec
from autolabel.video.store import ClipStore
from video_scene import FPS, FRAMES, H, ONTOLOGY, W, render, write_clip

CONTAINERS = ["mp4", "mov", "mkv", "webm", "avi"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("clips")
    return {ext: write_clip(folder / f"scene.{ext}") for ext in CONTAINERS}


@pytest.mark.parametrize("ext", CONTAINERS)
def test_every_container_decodes_to_the_scene_at_its_time_stamps(clips: dict[str, Path], ext: str) -> None:
    info = probe(str(clips[ext]))
    assert (info.width, info.height, info.fps, info.duration) == (W, H, FPS, FRAMES / FPS)
    got = list(frames(str(clips[ext]), VideoSpec()))
    assert [f.position for f in got] == [f.index for f in got] == list(range(FRAMES))
    assert [f.time for f in got] == pytest.approx([i / FPS for i in range(FRAMES)])
    for f in got:
        assert f.image.size == (W, H) and f.image.mode == "RGB"
        assert np.abs(np.asarray(f.image, dtype=np.int16) - render(f.index)[0]).max() <= 2  # lossless but for YUV


def test_sampling_by_time_and_by_count(clips: dict[str, Path]) -> None:
    by_time = list(frames(str(clips["mp4"]), VideoSpec(fps=3)))  # ticks 0, 1/3, 2/3, 1, ...: first frame at or after
    assert [f.index for f in by_time] == [0, 4, 7, 10, 14, 17, 20, 24, 27]
    assert [f.position for f in by_time] == list(range(9))
    by_count = list(frames(str(clips["mp4"]), VideoSpec(every=7)))
    assert [(f.position, f.index, f.time) for f in by_count] == [(0, 0, 0.0), (1, 7, 0.7), (2, 14, 1.4),
                                                                 (3, 21, 2.1), (4, 28, 2.8)]
    resumed = list(frames(str(clips["mp4"]), VideoSpec(every=7), start=3))  # a resumed clip: from position 3 on
    assert [(f.position, f.index) for f in resumed] == [(3, 21), (4, 28)]


def test_a_variable_frame_rate_is_sampled_evenly_in_time() -> None:
    sampler = Sampler(VideoSpec(fps=2))
    times = [0.0, 0.1, 0.45, 0.5, 0.52, 0.9, 1.2, 1.49, 1.51]  # bursts and gaps
    assert [t for i, t in enumerate(times) if sampler.keep(i, t)] == [0.0, 0.5, 1.2, 1.51]


def test_a_rotated_phone_clip_is_labeled_upright(tmp_path: Path) -> None:
    """An MP4 whose track header says "turn 90° clockwise to display" (as phones write portrait clips)."""
    import av

    stored = tmp_path / "stored.mp4"
    with av.open(str(stored), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt, stream.options = 64, 48, "yuv444p", {"qp": "0"}
        pixels = np.zeros((48, 64, 3), dtype=np.uint8)
        pixels[:, :32] = (255, 0, 0)  # stored: red on the left half
        for _ in range(3):
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    data = bytearray(stored.read_bytes())
    at = data.find(b"tkhd") + 4 + 40  # version 0 track header: the 3x3 matrix follows 40 bytes of fields
    data[at:at + 36] = struct.pack(">9i", 0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000)
    rotated = tmp_path / "portrait.mp4"
    rotated.write_bytes(bytes(data))
    assert (probe(str(rotated)).width, probe(str(rotated)).height) == (48, 64)
    first = next(frames(str(rotated), VideoSpec())).image
    shown = np.asarray(first)
    assert first.size == (48, 64)
    assert (shown[:30, :, 0] > 200).all() and (shown[34:, :, 0] < 50).all()  # red on top, as displayed


def test_folders_and_globs_pick_up_clips_beside_images(tmp_path: Path) -> None:
    for name in ("a.MP4", "b.webm", "sub/c.mkv", "d.png", "e.txt.bak", "f.mp3"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert sorted(s.rel_path for s in discover(tmp_path)) == ["a.MP4", "b.webm", "d.png", "sub/c.mkv"]
    assert [s.rel_path for s in discover(str(tmp_path / "*.webm"))] == ["b.webm"]


@pytest.mark.parametrize(
    ("video", "problem"),
    [({"fps": 2, "every": 3}, "video: give fps or every, not both (fps samples by time, every by count)"),
     ({"chunk": 8, "overlap": 8}, "video: overlap (8) must be smaller than chunk (8)"),
     ({"fps": 0}, "video.fps: input should be greater than 0 (got 0)"),
     ({"frames": 3}, "video.frames: unknown key (known: fps, every, chunk, overlap, stitch_iou, max_frames, "
                     "max_seconds, max_pixels, max_bytes)")],
)
def test_the_video_section_is_validated_with_key_paths(video: dict, problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse({"ontology": ONTOLOGY, "stages": [{"type": "video_scene:ColourTracks"}], "video": video})
    assert err.value.problems == [problem]


def test_limits_read_from_the_header() -> None:
    info = ClipInfo(width=1920, height=1080, fps=30.0, duration=300.0, frames=9000, codec="h264")
    assert limit_problem(info, 10, VideoSpec()) is None
    assert limit_problem(info, 10, VideoSpec(max_frames=8999)) == (
        "too many frames: 9,000 sampled (all) exceeds video.max_frames 8,999 (sample fewer with video.fps or "
        "video.every, or raise video.max_frames)")
    assert limit_problem(info, 10, VideoSpec(fps=2, max_frames=599)).startswith("too many frames: 600 sampled (fps=2)")
    assert limit_problem(info, 10, VideoSpec(fps=2, max_frames=600)) is None
    assert limit_problem(info, 10, VideoSpec(every=7, max_frames=1285)).startswith("too many frames: 1,286 sampled")
    assert limit_problem(info, 10, VideoSpec(max_seconds=299)) == (
        "too long: 300 s exceeds video.max_seconds 299 s (raise it, or cut the clip)")
    assert limit_problem(info, 10, VideoSpec(max_pixels=1920 * 1080 - 1)) == (
        "frames too large: 1920x1080 = 2,073,600 pixels exceeds video.max_pixels 2,073,599 (raise it, or scale the "
        "clip down)")
    assert limit_problem(info, 10, VideoSpec(max_bytes=9)) == (
        "too large: 10 bytes exceeds video.max_bytes 9 (raise it, or cut the clip)")


def test_limits_are_enforced_while_decoding_too(clips: dict[str, Path]) -> None:
    """A header can say too little (webm gives no frame count): the stream itself stops at the limit."""
    stream = frames(str(clips["webm"]), VideoSpec(max_frames=12))
    assert len([next(stream) for _ in range(12)]) == 12
    with pytest.raises(ValueError, match=r"^too many frames: 13 sampled \(all\) exceeds video.max_frames 12"):
        next(stream)
    with pytest.raises(ValueError, match=r"^too long: frames past 1 s"):
        list(frames(str(clips["webm"]), VideoSpec(max_seconds=1)))


def test_clips_over_a_limit_or_unreadable_fail_in_one_line_and_the_run_goes_on(
    clips: dict[str, Path], tmp_path: Path
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "ok.mkv").write_bytes(clips["mkv"].read_bytes())
    write_clip(inputs / "long.mp4", frames=FRAMES + 1)
    (inputs / "broken.mp4").write_bytes(clips["mp4"].read_bytes()[:300])  # truncated inside the header
    (inputs / "empty.webm").write_bytes(b"")
    (inputs / "text.avi").write_bytes(b"not a video at all" * 10)
    pipeline = Pipeline.from_dict({"ontology": ONTOLOGY, "stages": [{"type": "video_scene:ColourTracks"}],
                                   "video": {"max_frames": FRAMES}})
    summary = pipeline.run(input=str(inputs), output=tmp_path / "out")
    assert summary.status == "partial" and summary.exit_code == 3
    assert summary.counts == {"seen": 5, "labeled": 1, "skipped": 0, "failed": 4, "frames": FRAMES}
    assert summary.data["counts"]["inputs"] == 5
    reasons = {Path(f["path"]).name: f["reason"] for f in summary.failures}
    assert reasons == {
        "long.mp4": "too many frames: 31 sampled (all) exceeds video.max_frames 30 (sample fewer with video.fps or "
                    "video.every, or raise video.max_frames)",
        "broken.mp4": reasons["broken.mp4"], "empty.webm": "empty file (0 bytes)", "text.avi": reasons["text.avi"],
    }
    assert reasons["broken.mp4"].startswith("not a readable video (") and "\n" not in reasons["broken.mp4"]
    assert reasons["text.avi"].startswith("not a readable video (") and "\n" not in reasons["text.avi"]
    with Store(tmp_path / "out") as store:
        failed = {Path(c.path).name: c.reason for c in ClipStore(store).clips("failed")}
        assert failed == reasons
        assert [Path(c.path).name for c in ClipStore(store).clips("done")] == ["ok.mkv"]


def test_a_clip_over_max_bytes_fails_before_it_is_read(clips: dict[str, Path], tmp_path: Path) -> None:
    size = clips["mkv"].stat().st_size
    pipeline = Pipeline.from_dict({"ontology": ONTOLOGY, "stages": [{"type": "video_scene:ColourTracks"}],
                                   "video": {"max_bytes": size - 1}})
    reason = f"too large: {size:,} bytes exceeds video.max_bytes {size - 1:,} (raise it, or cut the clip)"
    with pytest.raises(NothingLabeledError, match=re.escape(reason)):  # its only input: exit code 6
        pipeline.run(input=str(clips["mkv"]), output=tmp_path)
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["failures"] == [{"path": str(clips["mkv"]), "reason": reason}]
    with Store(tmp_path) as store:
        (row,) = ClipStore(store).clips("failed")
    assert row.sha256 is None  # refused on its size alone: not hashed, not decoded
