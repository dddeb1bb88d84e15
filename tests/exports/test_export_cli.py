"""``autolabel export`` and the exports a pipeline file lists: flags, defaults, errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from plugins import export_pipeline, make_export_images

from autolabel import Pipeline
from autolabel.cli import main
from autolabel.config import parse
from autolabel.errors import ConfigError


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    make_export_images(root / "in")
    Pipeline.from_dict(export_pipeline()).run(input=root / "in", output=root / "out")
    return root / "out"


def test_pipeline_exports_run_at_the_end_of_each_run(tmp_path: Path) -> None:
    make_export_images(tmp_path / "in")
    exports = [{"format": "coco", "segmentation": "rle"}, {"format": "yolo", "task": "segment"},
               {"format": "labelstudio", "path": "ls/tasks.json", "masks": "none"}, {"format": "coco-results"}]
    summary = Pipeline.from_dict(export_pipeline(exports=exports)).run(input=tmp_path / "in", output=tmp_path / "out")
    out = tmp_path / "out"
    assert summary.exports == [str(out / p) for p in (
        "coco.json", "captions.json", "yolo", "ls/tasks.json", "ls/tasks_config.xml", "coco_results.json")]
    assert json.loads((out / "coco.json").read_text())["annotations"][1]["segmentation"]["counts"]
    assert "task: segment" in (out / "yolo" / "data.yaml").read_text()
    assert json.loads((out / "run.json").read_text())["exports"] == summary.exports


def test_export_subcommand_writes_each_format(run: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["export", str(run), "--format", "yolo", "--task", "segment", "--split", "train=0.5,val=0.5",
                 "--seed", "2", "--images", "copy", "--path", "ds"]) == 0
    assert f"autolabel: wrote {run / 'ds'}" in capsys.readouterr().err
    data = yaml.safe_load((run / "ds" / "data.yaml").read_text())
    assert data["names"] == {0: "cat", 1: "dog", 2: "text"}
    assert not [p for p in (run / "ds").rglob("*") if p.is_symlink()]
    assert main(["export", str(run), "--format", "labelstudio", "--image-root", "s3://b/p", "--model-version",
                 "v7", "--task-score", "mean", "--masks", "polygon", "--min-score", "0.7"]) == 0
    tasks = json.loads((run / "labelstudio_tasks.json").read_text())
    assert tasks[0]["data"]["image"].startswith("s3://b/p/") and tasks[0]["predictions"][0]["model_version"] == "v7"
    assert main(["export", str(run), "--format", "coco", "--segmentation", "rle", "--no-captions",
                 "--flagged", "exclude", "--path", "c.json"]) == 0
    anns = json.loads((run / "c.json").read_text())["annotations"]
    assert {a["category_id"] for a in anns} == {1, 3} and not (run / "c_captions.json").exists()
    assert main(["export", str(run), "--format", "coco-results"]) == 0
    assert isinstance(json.loads((run / "coco_results.json").read_text()), list)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--format", "coco", "--task", "segment"],
         "--task: option of format yolo, not coco (coco takes: segmentation, captions)"),
        (["--format", "yolo", "--image-root", "x"], "--image-root: option of format labelstudio, not yolo"),
        (["--format", "labelstudio", "--no-captions"], "--no-captions: option of format coco, not labelstudio"),
        (["--format", "yolo", "--split", "train=0.5"], "--split: fractions must sum to 1 (got 0.5)"),
        (["--format", "yolo", "--split", "train:0.5"], "--split: expected NAME=FRACTION[,NAME=FRACTION...]"),
        (["--format", "coco", "--min-score", "2"], "--min-score: input should be less than or equal to 1"),
    ],
)
def test_bad_flags_are_one_line_config_errors(
    run: Path, capsys: pytest.CaptureFixture, argv: list[str], message: str
) -> None:
    assert main(["export", str(run), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_no_store_and_empty_store(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["export", str(tmp_path)]) == 1
    assert "no run store (autolabel.db) here" in capsys.readouterr().err
    from autolabel.store import Store

    Store(tmp_path / "empty").close()
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(yaml.safe_dump(export_pipeline()))
    assert main(["export", str(tmp_path / "empty"), "--pipeline", str(pipeline)]) == 1
    assert "no labeled images in the store; nothing to export" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "empty" / "coco.json")


def test_pipeline_file_errors_name_the_export_key() -> None:
    with pytest.raises(ConfigError) as err:
        parse(export_pipeline(exports=[{"format": "yolo", "segmentation": "rle"}, {"format": "coco", "bogus": 1}]))
    assert err.value.problems == [
        "exports[0].segmentation: option of format coco / coco-results, not yolo (yolo takes: task, split, seed, "
        "images) (got 'rle')",
        "exports[1].bogus: unknown key (known: format, path, min_score, flagged, segmentation, captions, task, split, "
        "seed, images, image_root, model_version, task_score, masks, video_root, keyframe_tolerance)",
    ]
