"""Clips pushed to a real Label Studio server (the session's, tests/conftest.py): one video task per clip with its
tracks as ``videorectangle`` predictions, the video served from the pushed reference, and a second push idempotent."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest

from autolabel.config import PushSpec
from autolabel.exports.labelstudio_video import video_labeling_config, video_task
from autolabel.exports.tracks import clip_tracks
from autolabel.labelstudio.push import push
from autolabel import Pipeline
from autolabel.store import Store
from lsserver import TOKEN
from video_scene import ONTOLOGY, write_clip

pytestmark = pytest.mark.slow


def test_push_sends_one_video_task_per_clip_with_its_tracks(ls, sdk, tmp_path: Path) -> None:
    folder = ls.document_root / "video_push"
    write_clip(folder / "scene.mp4")
    write_clip(folder / "short.webm", frames=12)
    spec_dict = {"name": "video-push", "ontology": ONTOLOGY, "video": {"chunk": 8, "overlap": 2},
                 "stages": [{"type": "video_scene:ColourTracks"}, {"type": "track_length", "min_frames": 3}]}
    Pipeline.from_dict(spec_dict).run(input=str(folder), output=tmp_path / "out")
    with Store(tmp_path / "out") as store:
        spec = Pipeline.from_dict(store.last_pipeline()).spec
        summary = push(store, spec, PushSpec(url=ls.url, project="video push"), api_key=TOKEN)
        assert (summary.media, summary.created, summary.failed, summary.exit_code) == ("videos", 2, {}, 0)
        assert " of 2 clips; " in summary.line()
        clips = {c.rel_path: c for c in clip_tracks(store, spec.ontology)}
        project = sdk.projects.get(summary.project_id)
        assert project.label_config.strip() == video_labeling_config(spec.ontology).strip()
        assert project.model_version == "video-push"
        tasks = {t.data["rel_path"]: t for t in sdk.tasks.list(project=project.id)}
        assert set(tasks) == {"scene.mp4", "short.webm"}
        predictions = {p.task: p for p in sdk.predictions.list(project=project.id)}
        for rel, t in tasks.items():
            assert t.data["video"] == f"/data/local-files/?d=video_push/{rel}"
            assert t.data["fps"] == 10.0 and t.data["autolabel_key"] == clips[rel].sha256
            expected = video_task(clips[rel], model_version="video-push")["predictions"][0]
            stored = predictions[t.id]
            assert stored.result == expected["result"] and stored.score == pytest.approx(expected["score"])
            assert {r["type"] for r in stored.result} == {"videorectangle"}
        labels = sorted(r["value"]["labels"][0] for r in predictions[tasks["scene.mp4"].id].result)
        assert labels == ["ball", "car", "person"]  # the ghost's 2 frames were dropped by track_length
        # Label Studio serves the clip itself from the pushed reference
        request = urllib.request.Request(ls.url + tasks["scene.mp4"].data["video"],
                                         headers={"Authorization": f"Token {TOKEN}"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert answer.read() == (folder / "scene.mp4").read_bytes()
        again = push(store, spec, PushSpec(url=ls.url, project="video push"), api_key=TOKEN)
        assert (again.created, again.updated, again.unchanged) == (0, 0, 2)
