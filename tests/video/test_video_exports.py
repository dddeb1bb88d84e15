"""Video exports, read back by the tools that read them: Datumaro (MOT, CVAT for video), py-motmetrics (MOT),
pycocotools (YTVIS masks) and label-studio-sdk (video tasks); the live Label Studio import is in
test_video_labelstudio_live.py."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from autolabel.cli import main
from autolabel.errors import AutolabelError
from autolabel.exports.labelstudio import PredictionChecker
from autolabel.exports.labelstudio_video import keyframes, video_labeling_config
from autolabel.ontology import Ontology
from autolabel import Pipeline
from tool_venvs import DATUMARO_READ, MOT_SCORES, run
from video_scene import FRAMES, H, ONTOLOGY, W, render, truth, write_clip

EXPORTS = [{"format": "mot"}, {"format": "cvat-video"}, {"format": "ytvis"},
           {"format": "labelstudio-video", "keyframe_tolerance": 0.5}]
#: frames the ball is visible on, and the ghost (dropped: a track of 2 frames)
BALL = [f for f in range(FRAMES) if "ball" in truth([f])[f]]


def label(tmp: Path, video: dict) -> Path:
    clip = write_clip(tmp / "in" / "scene.mp4")
    Pipeline.from_dict({
        "ontology": ONTOLOGY, "video": video, "exports": EXPORTS,
        "stages": [{"type": "video_scene:ColourTracks", "scramble": True}, {"type": "track_length", "min_frames": 3},
                   {"type": "track_class"}],
    }).run(input=str(clip), output=tmp / "out")
    return tmp / "out"


@pytest.fixture(scope="module")
def every(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The scene labeled on every frame (chunks of 8, overlap 2), all four exports written by the run."""
    return label(tmp_path_factory.mktemp("every"), {"chunk": 8, "overlap": 2})


@pytest.fixture(scope="module")
def third(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The scene labeled on every third frame."""
    return label(tmp_path_factory.mktemp("third"), {"chunk": 4, "overlap": 1, "every": 3})


def expected(frames: range | list[int]) -> dict[int, dict[str, tuple]]:
    """Frame → object → xywh, without the ghost (dropped by track_length)."""
    return {f: {n: (x1, y1, x2 - x1, y2 - y1) for n, (x1, y1, x2, y2) in boxes.items() if n != "ghost"}
            for f, boxes in truth(frames).items()}


def by_track(boxes: list[dict], frame_of, names: dict[str, str]) -> dict[int, dict[str, tuple]]:
    """Datumaro's boxes as frame → object name (through the track id's label) → xywh."""
    out: dict[int, dict[str, tuple]] = {}
    for b in boxes:
        out.setdefault(frame_of(b), {})[names[b["attributes"]["track_id"]]] = tuple(b["xywh"])
    return out


@pytest.mark.slow
def test_datumaro_reads_mot_and_cvat_video_as_the_scene(every: Path, third: Path) -> None:
    mot, cvat, cvat3 = run("datumaro", DATUMARO_READ, [[str(every / "mot" / "scene"), "mot_seq"],
                                                       [str(every / "cvat_video" / "scene"), "cvat"],
                                                       [str(third / "cvat_video" / "scene"), "cvat"]])
    assert mot["labels"] == cvat["labels"] == ONTOLOGY
    # ids: one per object; the track's label names the object (each object is of its own class here)
    names = {b["attributes"]["track_id"]: b["label"] for b in mot["boxes"]}
    assert sorted(names.values()) == ["ball", "car", "person"] and len(names) == 3
    assert by_track(mot["boxes"], lambda b: b["frame"] - 1, names) == expected(range(FRAMES))  # MOT: 1-based
    shown = [b for b in cvat["boxes"] if not b["attributes"]["outside"]]
    assert all(b["attributes"]["keyframe"] for b in cvat["boxes"])
    assert by_track(shown, lambda b: b["frame"], names) == expected(range(FRAMES))
    outside = [(b["frame"], names[b["attributes"]["track_id"]]) for b in cvat["boxes"] if b["attributes"]["outside"]]
    assert outside == [(BALL[-1] + 1, "ball")]  # the ball falls out at the bottom; car and person last to the end
    assert {b["attributes"]["score"] for b in shown if names[b["attributes"]["track_id"]] == "car"} == {"0.90000"}
    # every third frame: keyframes on the sampled frames only; the ball ends at the first sampled frame without it
    names3 = {b["attributes"]["track_id"]: b["label"] for b in cvat3["boxes"]}
    shown3 = [b for b in cvat3["boxes"] if not b["attributes"]["outside"]]
    assert by_track(shown3, lambda b: b["frame"], names3) == expected(range(0, FRAMES, 3))
    assert [(b["frame"], names3[b["attributes"]["track_id"]]) for b in cvat3["boxes"] if b["attributes"]["outside"]] \
        == [(min(f for f in range(0, FRAMES, 3) if f > BALL[-1]), "ball")]


def test_cvat_meta_says_the_task_size_and_the_sampling_step(every: Path, third: Path) -> None:
    for out, step in ((every, ""), (third, "step=3")):
        task = ET.parse(out / "cvat_video" / "scene" / "annotations.xml").getroot().find("meta/task")
        assert (task.findtext("size"), task.findtext("stop_frame"), task.findtext("frame_filter") or "") == (
            "30", "29", step)
        assert task.findtext("mode") == "interpolation"
        assert (task.findtext("original_size/width"), task.findtext("original_size/height")) == (str(W), str(H))


@pytest.mark.slow
def test_motmetrics_scores_the_export_against_itself_and_sees_a_swapped_id(every: Path, tmp_path: Path) -> None:
    gt = every / "mot" / "scene" / "gt" / "gt.txt"
    lines = gt.read_text().splitlines()
    assert len(lines) == sum(len(v) for v in expected(range(FRAMES)).values())
    car, person = (int(line.split(",")[1]) for line in lines[:2])  # frame 1: the car (class 1) and the person
    assert [line.split(",")[7] for line in lines[:2]] == ["1", "2"]
    swapped = tmp_path / "swapped.txt"  # from frame 16 on, the car and the person trade ids
    swap = {car: person, person: car}
    rows = [line.split(",") for line in lines]
    swapped.write_text("\n".join(",".join([r[0], str(swap.get(int(r[1]), r[1]) if int(r[0]) >= 16 else r[1]),
                                            *r[2:]]) for r in rows) + "\n")
    same, worse = run("motmetrics", MOT_SCORES, [[str(gt), str(gt)], [str(gt), str(swapped)]])
    assert same == {"mota": 1.0, "num_switches": 0.0, "idf1": 1.0, "num_frames": 30.0}
    assert worse["num_switches"] == 2.0 and worse["mota"] < 1.0 and worse["idf1"] < 1.0


def test_ytvis_masks_decode_to_the_visible_pixels(every: Path, third: Path) -> None:
    data = json.loads((every / "ytvis.json").read_text())
    assert [c["name"] for c in data["categories"]] == ONTOLOGY
    (video,) = data["videos"]
    assert (video["length"], video["width"], video["height"]) == (FRAMES, W, H)
    assert video["file_names"][:2] == ["scene/000001.jpg", "scene/000002.jpg"]
    assert len(data["annotations"]) == 3
    for ann in data["annotations"]:
        name = data["categories"][ann["category_id"] - 1]["name"]
        assert len(ann["segmentations"]) == len(ann["bboxes"]) == len(ann["areas"]) == FRAMES
        for f, rle in enumerate(ann["segmentations"]):
            visible = render(f)[1].get(name)
            if visible is None:
                assert rle is None and ann["bboxes"][f] is None
                continue
            decoded = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)
            assert np.array_equal(decoded, visible), (name, f)
            assert ann["areas"][f] == int(visible.sum())
            assert tuple(ann["bboxes"][f]) == expected([f])[f][name]
    sampled = json.loads((third / "ytvis.json").read_text())
    assert sampled["videos"][0]["length"] == 10
    assert sampled["videos"][0]["file_names"][1] == "scene/000004.jpg"  # frame index 3, 1-based


def interpolate(sequence: list[dict], frame: int) -> tuple | None:
    """Label Studio's reading of a videorectangle's keyframes at ``frame``: linear between enabled keyframes."""
    keys = [k for k in sequence if k["frame"] <= frame]
    if not keys:
        return None
    a = keys[-1]
    box = lambda k: np.array([k["x"], k["y"], k["x"] + k["width"], k["y"] + k["height"]])  # noqa: E731
    if a["frame"] == frame:
        return tuple(box(a))
    later = [k for k in sequence if k["frame"] > frame]
    if not a["enabled"] or not later:
        return None if not a["enabled"] else tuple(box(a))
    b = later[0]
    t = (frame - a["frame"]) / (b["frame"] - a["frame"])
    return tuple(box(a) + t * (box(b) - box(a)))


def test_labelstudio_video_tasks_rebuild_every_box_from_few_keyframes(every: Path, third: Path) -> None:
    for out, frames in ((every, range(FRAMES)), (third, range(0, FRAMES, 3))):
        (task,) = json.loads((out / "labelstudio_video_tasks.json").read_text())
        assert task["data"] == {"video": "/data/local-files/?d=scene.mp4", "fps": 10.0, "autolabel_clip_id": 1,
                                "rel_path": "scene.mp4"}
        config = (out / "labelstudio_video_config.xml").read_text()
        assert config == video_labeling_config(Ontology.from_config(ONTOLOGY))
        PredictionChecker(config).check(task)
        (prediction,) = task["predictions"]
        regions = {r["value"]["labels"][0]: r for r in prediction["result"]}
        assert set(regions) == {"car", "person", "ball"}
        assert prediction["score"] == min(r["score"] for r in regions.values())  # the ball's 0.25
        want = expected(frames)
        keys = sum(len(r["value"]["sequence"]) for r in regions.values())
        assert keys < sum(len(boxes) for boxes in want.values()) / 2  # sparse: most boxes are interpolated
        for name, region in regions.items():
            value = region["value"]
            assert (value["framesCount"], value["duration"]) == (FRAMES, 3.0)
            sequence = value["sequence"]
            assert [k["enabled"] for k in sequence][-1] is False and all(k["enabled"] for k in sequence[:-1])
            for f in frames:
                got = interpolate(sequence, f + 1)
                if name not in want[f]:
                    assert got is None
                    continue
                x, y, w, h = want[f][name]
                pixels = np.array(got) * np.array([W, H, W, H]) / 100
                assert np.abs(pixels - [x, y, x + w, y + h]).max() <= 0.5 + 1e-3, (name, f)  # the tolerance
            assert [k["time"] for k in sequence] == [(k["frame"] - 1) / 10 for k in sequence]


def test_the_keyframe_rule() -> None:
    f = np.arange(6)
    steady = np.stack([f, f, f + 3, f + 3], axis=1).astype(float)
    assert keyframes(f, steady, 0.0) == [0, 5]  # constant speed: the run's two ends
    turn = np.concatenate([steady[:3], steady[2:3] + np.array([[0, 1, 0, 1]]) * np.arange(1, 4)[:, None]])
    assert keyframes(f, turn, 0.0) == [0, 2, 5]  # the turn is a keyframe
    assert keyframes(f, turn, 1.0) == [0, 4, 5]  # within 1 px of the line from frame 0 up to frame 4
    assert keyframes(np.array([0, 3, 9]), np.array([[0, 0, 1, 1], [3, 0, 4, 1], [9, 0, 10, 1]], float), 0.0) == [0, 2]
    assert keyframes(np.array([4]), np.zeros((1, 4)), 1.0) == [0]


def test_video_exports_of_a_store_without_clips_fail_in_one_line(tmp_path: Path, capsys) -> None:
    from plugins import export_pipeline, make_export_images

    make_export_images(tmp_path / "images")
    Pipeline.from_dict(export_pipeline()).run(input=str(tmp_path / "images"), output=tmp_path / "out")
    for fmt in ("mot", "cvat-video", "ytvis", "labelstudio-video"):
        assert main(["export", str(tmp_path / "out"), "--format", fmt]) == 1
        err = capsys.readouterr().err.strip()
        assert err == (f"autolabel: error: {tmp_path / 'out' / 'autolabel.db'}: no labeled clips in the store; nothing "
                       "to export (run a pipeline over video files (mp4, mov, mkv, webm, avi) into this folder first)")


def test_an_image_export_of_a_store_of_clips_names_the_video_formats(every: Path, capsys) -> None:
    assert main(["export", str(every), "--format", "coco", "--path", "c.json"]) == 1
    assert capsys.readouterr().err.strip() == (
        f"autolabel: error: {every / 'autolabel.db'}: no labeled images in the store; nothing to export (it holds 1 "
        "labeled clips: export them with --format mot, cvat-video, labelstudio-video or ytvis)")


def test_the_export_command_writes_video_formats_with_their_options(every: Path, capsys) -> None:
    assert main(["export", str(every), "--format", "labelstudio-video", "--path", "again.json", "--video-root",
                 "https://cdn.example/v", "--keyframe-tolerance", "0"]) == 0
    (task,) = json.loads((every / "again.json").read_text())
    assert task["data"]["video"] == "https://cdn.example/v/scene.mp4"
    assert main(["export", str(every), "--format", "mot", "--keyframe-tolerance", "1"]) == 2
    assert "--keyframe-tolerance: option of format labelstudio-video, not mot" in capsys.readouterr().err


def test_a_push_of_a_store_with_images_and_clips_names_the_choice(tmp_path: Path) -> None:
    """A Label Studio project holds one kind of task: refused before any request (the URL is never reached)."""
    from PIL import Image

    from autolabel.config import PushSpec
    from autolabel.labelstudio.push import push
    from autolabel.store import Store

    folder = tmp_path / "in"
    write_clip(folder / "scene.mp4")
    Image.fromarray(render(3)[0]).save(folder / "frame.png")
    Pipeline.from_dict({"ontology": ONTOLOGY, "stages": [{"type": "video_scene:ColourTracks"}]}).run(
        input=str(folder), output=tmp_path / "out")
    with Store(tmp_path / "out") as store:
        spec = Pipeline.from_dict(store.last_pipeline()).spec
        with pytest.raises(AutolabelError) as err:
            push(store, spec, PushSpec(url="http://127.0.0.1:9", project="p"), api_key="x")
    assert str(err.value) == (
        f"{tmp_path / 'out' / 'autolabel.db'}: the store holds 1 labeled images and 1 labeled clips, and a Label "
        "Studio project holds one kind: push with --media images (push.media: images) and again with --media videos "
        "to another project")


def test_an_existing_video_projects_config_is_checked_tag_by_tag() -> None:
    """A video project reused by a push: its config must hold the generated tags (a config reordered or decorated
    passes; one whose labels lack a class, or whose Video tag reads another key, is named line by line)."""
    from autolabel.labelstudio.project import config_mismatches

    config = video_labeling_config(Ontology.from_config(ONTOLOGY))
    assert config_mismatches(config.replace("<View>", "<View>\n  <Header value=\"Track them\"/>"), config) == []
    lost = config.replace('    <Label value="ball"/>\n', "")
    assert config_mismatches(lost, config) == ["control 'videoLabels': missing label(s) ball (the ontology's classes)"]
    assert config_mismatches(config.replace('value="$video"', 'value="$clip"'), config) == [
        "tag 'video' is <Video value=\"$clip\">, expected <Video value=\"$video\">"]
