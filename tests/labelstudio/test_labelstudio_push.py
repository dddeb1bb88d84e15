"""``autolabel push`` without a server: the tasks it builds for a project's own config (validated by label-studio-sdk
against that config), what its prediction hash covers, what it records per project, the summary line. The requests
themselves are checked against a real Label Studio in test_labelstudio_live.py."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest
from plugins import export_pipeline, make_export_images

from autolabel import Pipeline
from autolabel.config import PushSpec, parse
from autolabel.errors import AutolabelError
from autolabel.exports.labelstudio import Layout
from autolabel.exports.rows import image_rows
from autolabel.exports.labelstudio import model_version_for
from autolabel.labelstudio.media import input_hash, media_for
from autolabel.labelstudio.push import (PushSummary, Remote, Wanted, _batches, _index, _nobar, _Tasks, image_key, plan,
                                        push_after_run)
from autolabel.labelstudio.state import PushState, Recorded, project_uid
from autolabel.store import Store

POLYGONS = """<View><Image name="photo" value="$image"/>
<PolygonLabels name="outline" toName="photo"><Label value="cat"/><Label value="dog"/><Label value="text"/>
</PolygonLabels>
<TextArea name="transcription" toName="photo" perRegion="true"/></View>"""


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("push")
    make_export_images(root / "in")
    (root / "in" / "copy.png").write_bytes((root / "in" / "square.png").read_bytes())  # the same content twice
    Pipeline.from_dict(export_pipeline()).run(input=root / "in", output=root / "out")
    return root / "out"


def options(**kw: object) -> PushSpec:
    return PushSpec(**{"url": "http://127.0.0.1:9", "project": "p"} | kw)


# -- building the tasks --------------------------------------------------------------------------------------------
def test_tasks_are_built_for_the_projects_config_validated_and_spooled(out: Path) -> None:
    spec = parse(export_pipeline())
    with Store(out) as store:
        spool = _Tasks(media_for(store, spec, options(), "v1", POLYGONS))
        summary = PushSummary("http://ls", 1, "p", False, "v1")
        wanted = _index(spool, summary)
        assert spool.config == POLYGONS  # the project's config: the checker validates against it
        assert len(wanted) == 4 and summary.same_content == 1  # copy.png and square.png: one task
        assert summary.left_out == {"caption": 4, "ocr": 4, "review": 4}  # per image: a caption, a page, a flag
        keys = sorted(wanted)
        spool.fill(keys[:2])
        assert sorted(spool._where) == keys[:2]  # only what a round writes is built
        spool.fill(keys)
        where = dict(spool._where)
        spool.fill(keys)
        assert spool._where == where  # built once
        for key in keys:
            task = spool.get(key)
            assert task["data"]["autolabel_key"] == key
            image_id = wanted[key].image_id
            assert spool.index[image_id] == key
            result = task["predictions"][0]["result"]
            assert [(r["type"], r["from_name"], r["to_name"]) for r in result] == [
                ("polygonlabels", "outline", "photo")] * 4 + [("textarea", "transcription", "photo")]
            assert task["predictions"][0]["model_version"] == "v1"
        row = next(r for r in spool.rows() if r.id == wanted[keys[0]].image_id)
        assert (spool.get(keys[0])["data"]["width"], spool.get(keys[0])["data"]["height"]) == (row.width, row.height)
        spool.close()


def test_an_image_key_is_its_content_hash_else_a_hash_of_its_path() -> None:
    assert image_key("ab" * 32, "/x.png") == "ab" * 32
    assert image_key(None, "/x.png") == "path:" + hashlib.sha256(b"/x.png").hexdigest()  # never a content hash


def test_the_prediction_hash_covers_what_the_prediction_is_built_from(out: Path) -> None:
    spec = parse(export_pipeline())
    with Store(out) as store:
        rows = list(image_rows(store, spec.ontology))
    row, other = rows[0], rows[1]
    base = input_hash(row, "v1", options())
    assert base == input_hash(row, "v1", options()) == input_hash(row, "v1", options(), Layout())
    assert len(base) == 24 and int(base, 16) >= 0
    changed = {
        "model version": input_hash(row, "v2", options()),
        "masks": input_hash(row, "v1", options(masks="polygon")),
        "task score": input_hash(row, "v1", options(task_score="mean")),
        "layout": input_hash(row, "v1", options(), Layout.of(POLYGONS)),
        "labels": input_hash(row.__class__(**{**row.__dict__, "annotations": row.annotations[:1]}), "v1", options()),
        "texts": input_hash(row.__class__(**{**row.__dict__, "texts": []}), "v1", options()),
        "image": input_hash(other, "v1", options()),
    }
    assert len(set(changed.values()) | {base}) == len(changed) + 1, changed
    # what does not shape the prediction does not replace it
    assert input_hash(row, "v1", options(batch_size=7, timeout=3, min_score=0.5, project="q")) == base
    # the content, not the order a record's dicts were written in
    reordered = [dict(reversed(list(t.items()))) for t in row.texts]
    assert reordered != [] and [list(t) for t in reordered] != [list(t) for t in row.texts]
    assert input_hash(row.__class__(**{**row.__dict__, "texts": reordered}), "v1", options()) == base


def test_image_tasks_follow_the_push_options_and_the_projects_config(out: Path) -> None:
    from autolabel.exports.labelstudio import task, task_score

    spec = parse(export_pipeline())
    with Store(out) as store:
        media = media_for(store, spec, options(task_score="mean", masks="none"), "v1")
        own = media_for(store, spec, options(), "v1", POLYGONS)
        lowest = media_for(store, spec, options(), "v1")  # task_score: min by default
        row = next(r for r in media.rows() if any(a.rle for a in r.annotations))
    made = media.task(row)
    assert made["predictions"][0]["score"] == pytest.approx(task_score(row.annotations, "mean"))
    assert made["predictions"][0]["score"] != pytest.approx(task_score(row.annotations, "min"))
    assert lowest.task(row)["predictions"][0]["score"] == pytest.approx(task_score(row.annotations, "min"))
    types = {r["type"] for r in made["predictions"][0]["result"]}
    assert "brushlabels" not in types and "brushlabels" in {  # a mask is its box with --masks none
        r["type"] for r in task(row, model_version="v1", score="mean", masks="brush")["predictions"][0]["result"]}
    assert made == task(row, model_version="v1", score="mean", masks="none") | {
        "data": task(row)["data"] | {"width": row.width, "height": row.height}}
    assert own.input_hash(row) == input_hash(row, "v1", options(), Layout.of(POLYGONS)) != input_hash(
        row, "v1", options())  # the hash of the project's layout


def test_the_model_version_is_the_option_else_the_pipelines_name_else_its_hash() -> None:
    named, unnamed = parse(export_pipeline()), parse({k: v for k, v in export_pipeline().items() if k != "name"})
    assert model_version_for(named, "mine") == "mine" and model_version_for(named) == "export-test"
    assert model_version_for(unnamed) == f"autolabel-{unnamed.hash}"


# -- what a push records ---------------------------------------------------------------------------------------------
def test_records_are_per_project_whatever_url_reaches_it(tmp_path: Path) -> None:
    created = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)
    project = SimpleNamespace(id=3, created_at=created)
    assert project_uid(project, "http://a") == "3@2026-05-01T12:00:00+00:00"
    assert project_uid(SimpleNamespace(id=3, created_at="yesterday"), "http://a") == "3@yesterday"
    assert project_uid(SimpleNamespace(id=3, created_at=None), "http://a") == "3@http://a"
    with Store(tmp_path) as store:
        one = PushState(store, project, "http://a")
        one.record([("k1", 1, 10, "h1", "v"), ("k2", 2, 11, "h2", "v")])
        one.record([("k1", 1, 12, "h3", "v")])  # the same key again: replaced
        assert PushState(store, project, "http://b").recorded() == {"k1": Recorded(12, "h3"),
                                                                     "k2": Recorded(11, "h2")}
        other = PushState(store, SimpleNamespace(id=4, created_at=created), "http://a")
        assert other.recorded() == {}
        one.record_upload("k1", "/data/upload/3/a.png")
        one.record_upload("k1", "/data/upload/3/b.png")
        assert one.uploads() == {"k1": "/data/upload/3/b.png"} and other.uploads() == {}
        undated = PushState(store, SimpleNamespace(id=3, created_at=None), "http://c")  # no time: the server names it
        assert (undated.project, undated.server, undated.project_id) == ("3@http://c", "http://c", 3)
        assert undated.recorded() == {}


def test_plan_prefers_the_recorded_task_then_the_oldest_among_untouched_duplicates() -> None:
    want = Wanted("a", 1, None, "h1", "/img")  # type: ignore[arg-type]
    twins = [Remote(9, "a", 1, 0, "/img"), Remote(4, "a", 1, 0, "/img"), Remote(6, "a", 1, 0, "/img")]
    assert plan({"a": want}, twins, {"a": Recorded(6, "h1")}).remove == [9, 4]  # the recorded one stays
    todo = plan({"a": want}, twins, {})
    assert todo.remove == [9, 6] and todo.recreate == [("a", 4)]  # none recorded: the oldest stays
    touched = [Remote(9, "a", 1, 0, "/img", True), Remote(4, "a", 1, 0, "/img")]
    todo = plan({"a": want}, touched, {"a": Recorded(4, "h1")})
    assert todo.remove == [4] and todo.repredict == [("a", 9)]  # touched beats recorded
    moved = plan({"a": Wanted("a", 1, None, "h1", None)}, [Remote(4, "a", 1, 0, "/old")],  # type: ignore[arg-type]
                 {"a": Recorded(4, "h1")})
    assert (moved.unchanged, moved.retarget) == (1, [])  # no reference wanted (unreachable): nothing to fix
    assert moved.work == 0 and moved.replacing == []
    assert plan({}, twins, {}).work == 0  # tasks of keys the store does not want are not ours to touch


# -- the summary ---------------------------------------------------------------------------------------------------
def test_the_summary_line_says_what_happened_and_what_is_left() -> None:
    summary = PushSummary("http://ls:8080", 7, "street", True, "v3", images=12, created=9, updated=1, unchanged=2)
    assert summary.exit_code == 0 and summary.project_url == "http://ls:8080/projects/7"
    assert summary.line() == ("ok: 9 tasks created, 1 predictions replaced, 2 unchanged of 12 images; "
                              "http://ls:8080/projects/7 (new project) (model_version 'v3') in 0.0 s")
    summary.project_created, summary.seconds = False, 2.345
    summary.retargeted, summary.removed_duplicates, summary.annotated_kept = 1, 2, 3
    summary.annotated_duplicates, summary.same_content = 4, 5
    summary.failed = {"a.png": "refused"}
    summary.left_out = {"review": 2, "caption": 1, "transcription": 3, "ocr": 4}
    assert summary.exit_code == 3
    assert summary.line() == (
        "partial: 9 tasks created, 1 predictions replaced, 2 unchanged, 1 image references fixed, 2 duplicate tasks "
        "removed, 3 annotated tasks kept their predictions, 4 touched duplicate tasks left for you to merge, 5 images "
        "share their content with another (one task each), 1 NOT pushed, left out, the project's labeling config has "
        "no text area for them: 1 captions, 4 image texts (OCR), 2 review markers, 3 per-object texts (OCR) of 12 "
        "images; http://ls:8080/projects/7 (model_version 'v3') in 2.3 s")
    stopped = PushSummary("http://ls", 1, "p", False, "v", error="server gone")
    assert stopped.exit_code == 3 and stopped.line().startswith("partial: 0 tasks created")


def test_a_push_at_the_end_of_a_run_reports_a_failure_in_one_line(out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "k" * 40)
    with Store(out) as store:
        line, ok = push_after_run(store, parse(export_pipeline()), options(retry_for=0, timeout=1))
    assert not ok and line.startswith("labelstudio push to http://127.0.0.1:9 failed: ") and "\n" not in line


def test_batches_and_the_silent_bar() -> None:
    assert list(_batches(list(range(7)), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(_batches([], 3)) == [] and list(_batches([1, 2], 5)) == [[1, 2]]
    with _nobar() as bar:
        assert bar.update(3) is None


def test_a_push_at_the_end_of_a_run_that_fails_is_one_line_saying_why(tmp_path: Path, monkeypatch) -> None:
    """Nothing listens on port 9: the push gives up, and the run's exports line says where and why."""
    from autolabel.labelstudio.push import push_after_run

    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "k3y")
    with Store(tmp_path) as store:
        line, ok = push_after_run(store, parse(export_pipeline()), options(project="ends a run", retry_for=0))
    assert not ok and "\n" not in line
    assert line.startswith("labelstudio push to http://127.0.0.1:9 failed: http://127.0.0.1:9")
    assert "None" not in line and "k3y" not in line


# -- video tasks (media_for's video branch; the live push of clips: tests/video/test_video_labelstudio_live.py) -------
@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store of one labeled clip (the video scene: a car, a person, a ball at 0.25, the ghost flagged)."""
    from video_scene import ONTOLOGY, write_clip

    root = tmp_path_factory.mktemp("clips")
    write_clip(root / "in" / "scene.webm", frames=12)
    Pipeline.from_dict({"name": "clips", "ontology": ONTOLOGY, "video": {"chunk": 8, "overlap": 2},
                        "stages": [{"type": "video_scene:ColourTracks"},
                                   {"type": "track_length", "min_frames": 3, "action": "flag"}],
                        }).run(input=root / "in", output=root / "out")
    return root / "out"


def test_a_store_of_clips_pushes_one_video_task_per_clip(clips: Path) -> None:
    from autolabel.exports.labelstudio_video import VIDEO, video_labeling_config, video_task
    from autolabel.exports.tracks import clip_tracks

    with Store(clips) as store:
        spec = Pipeline.from_dict(store.last_pipeline()).spec
        (clip,) = clip_tracks(store, spec.ontology)
        assert sorted(t.class_name for t in clip.tracks) == ["ball", "car", "ghost", "person"]
        for kind in ("auto", "videos"):  # auto: what the store holds
            media = media_for(store, spec, options(media=kind, task_score="mean", keyframe_tolerance=2.0), "v2")
            assert (media.name, media.data_key, media.config) == ("videos", VIDEO,
                                                                  video_labeling_config(spec.ontology))
            (row,) = media.rows()
            assert row.id == clip.id and len(row.tracks) == 4  # flagged tracks included by default
            assert media.task(row) == video_task(clip, model_version="v2", score="mean", tolerance=2.0)
            assert media.task(row) != video_task(clip, model_version="v2", score="min", tolerance=2.0)
            # fewer keyframes at 2 px than at 1
            assert media.task(row) != video_task(clip, model_version="v2", score="mean", tolerance=1.0)
            assert list(media.omitted(row)) == []
        (low,) = media_for(store, spec, options(media="videos", min_score=0.5, flagged="exclude"), "v2").rows()
        assert sorted(t.class_name for t in low.tracks) == ["car", "person"]  # the ball (0.25), the ghost left out
        (kept,) = media_for(store, spec, options(media="videos", flagged="exclude"), "v2").rows()
        assert sorted(t.class_name for t in kept.tracks) == ["ball", "car", "person"]
        images = media_for(store, spec, options(media="images"), "v2")  # asked for: images, of which there are none
        assert images.name == "images"
        with pytest.raises(AutolabelError, match=r"no labeled images in the store; .*\(it holds 1 labeled clips"):
            list(images.rows())


def test_a_clips_prediction_hash_changes_with_what_its_task_is_made_from(clips: Path) -> None:
    with Store(clips) as store:
        spec = Pipeline.from_dict(store.last_pipeline()).spec

        def digest(version: str = "v1", **kw: object) -> str:
            media = media_for(store, spec, options(media="videos", **kw), version)
            (row,) = media.rows()
            return media.input_hash(row)

        base = digest()
        assert len(base) == 24 and base == digest()  # stable
        changed = [digest("v2"), digest(task_score="mean"), digest(keyframe_tolerance=0.5), digest(min_score=0.5),
                   digest(flagged="exclude")]
        assert base not in changed and len(set(changed)) == 5
        assert digest(masks="none", images="url", image_root="https://x/") == base  # image options: not a clip's


def test_a_store_of_images_and_clips_is_pushed_one_kind_at_a_time(tmp_path: Path) -> None:
    from PIL import Image
    from video_scene import ONTOLOGY, render, write_clip

    write_clip(tmp_path / "in" / "scene.webm", frames=6)
    Image.fromarray(render(3)[0]).save(tmp_path / "in" / "frame.png")
    Pipeline.from_dict({"ontology": ONTOLOGY, "video": {"chunk": 8, "overlap": 2},
                        "stages": [{"type": "video_scene:ColourTracks"}]}).run(input=tmp_path / "in",
                                                                               output=tmp_path / "out")
    with Store(tmp_path / "out") as store:
        spec = Pipeline.from_dict(store.last_pipeline()).spec
        with pytest.raises(AutolabelError) as err:
            media_for(store, spec, options(), "v1")
        assert str(err.value) == (
            f"{tmp_path / 'out' / 'autolabel.db'}: the store holds 1 labeled images and 1 labeled clips, and a Label "
            "Studio project holds one kind: push with --media images (push.media: images) and again with --media "
            "videos to another project")
        assert [r.rel_path for r in media_for(store, spec, options(media="images"), "v1").rows()] == ["frame.png"]
        assert [r.rel_path for r in media_for(store, spec, options(media="videos"), "v1").rows()] == ["scene.webm"]


def test_a_store_of_clips_and_an_image_that_failed_pushes_the_clips(tmp_path: Path) -> None:
    # auto counts labeled media: an image that could not be read is no image to push
    from video_scene import ONTOLOGY, write_clip

    write_clip(tmp_path / "in" / "scene.webm", frames=6)
    (tmp_path / "in" / "broken.png").write_bytes(b"not a png")
    Pipeline.from_dict({"ontology": ONTOLOGY, "video": {"chunk": 8, "overlap": 2},
                        "stages": [{"type": "video_scene:ColourTracks"}]}).run(input=tmp_path / "in",
                                                                               output=tmp_path / "out")
    with Store(tmp_path / "out") as store:
        assert store.count("failed") == 1
        media = media_for(store, Pipeline.from_dict(store.last_pipeline()).spec, options(), "v1")
        assert media.name == "videos" and [r.rel_path for r in media.rows()] == ["scene.webm"]
