"""--set by stage name and --set-file: the language thresholds.yaml is written in."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from autolabel.cli import main
from autolabel.errors import ConfigError, ExitCode
from autolabel.overrides import apply_overrides, collect_overrides, load_set_file

DATA = {"stages": [{"type": "detect", "name": "boxes"}, {"type": "score_threshold", "threshold": 0.3},
                   {"type": "nms"}]}


def test_a_stage_is_named_by_its_name_its_type_or_its_index() -> None:
    out = apply_overrides(DATA, ["stages.score_threshold.per_class.cat=0.4", "stages.boxes.box_threshold=0.2",
                                 "stages.2.iou=0.6"])
    assert out["stages"] == [{"type": "detect", "name": "boxes", "box_threshold": 0.2},
                             {"type": "score_threshold", "threshold": 0.3, "per_class": {"cat": 0.4}},
                             {"type": "nms", "iou": 0.6}]
    assert DATA["stages"][1] == {"type": "score_threshold", "threshold": 0.3}  # the input is left alone


def test_an_unknown_or_ambiguous_stage_name_is_one_line() -> None:
    with pytest.raises(ConfigError, match=r"stages has no item named 'nope' \(use an index or a name: 'boxes', "):
        apply_overrides(DATA, ["stages.nope.threshold=0.1"])
    twice = {"stages": [{"type": "nms"}, {"type": "nms"}]}
    with pytest.raises(ConfigError, match="2 items named 'nms'; give them distinct names"):
        apply_overrides(twice, ["stages.nms.iou=0.1"])


def test_a_set_file_applies_first_and_set_wins(tmp_path: Path) -> None:
    path = tmp_path / "thresholds.yaml"
    path.write_text("# a comment\nstages.score_threshold.per_class.cat: 0.42\nstages.score_threshold.threshold: 0.5\n")
    assert load_set_file(path) == [("stages.score_threshold.per_class.cat", 0.42),
                                   ("stages.score_threshold.threshold", 0.5)]
    out = apply_overrides(DATA, collect_overrides([path], ["stages.score_threshold.threshold=0.6"]))
    assert out["stages"][1] == {"type": "score_threshold", "threshold": 0.6, "per_class": {"cat": 0.42}}


@pytest.mark.parametrize("content, problem", [
    ("- a\n- b\n", "expected a mapping of dotted keys to values"),
    ("a: [unclosed\n", "invalid YAML"),
    ("stages.nope.threshold: 1\n", "stages has no item named 'nope'"),
])
def test_validate_reads_a_set_file_and_reports_a_bad_one_in_one_line(tmp_path: Path, capsys, content: str,
                                                                      problem: str) -> None:
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(yaml.safe_dump({"ontology": ["cat"], "stages": [{"type": "score_threshold"}]}))
    good = tmp_path / "good.yaml"
    good.write_text("stages.score_threshold.per_class.cat: 0.7\n")
    assert main(["validate", str(pipeline), "--set-file", str(good)]) == ExitCode.OK
    bad = tmp_path / "bad.yaml"
    bad.write_text(content)
    capsys.readouterr()
    assert main(["validate", str(pipeline), "--set-file", str(bad)]) == ExitCode.CONFIG
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and problem in err[0]
    assert main(["validate", str(pipeline), "--set-file", str(tmp_path / "missing.yaml")]) == ExitCode.CONFIG
    assert "no such file" in capsys.readouterr().err


def test_a_set_file_value_out_of_range_names_the_key(tmp_path: Path, capsys) -> None:
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(yaml.safe_dump({"ontology": ["cat"], "stages": [{"type": "score_threshold"}]}))
    bad = tmp_path / "t.yaml"
    bad.write_text("stages.score_threshold.per_class.cat: 1.5\n")
    assert main(["validate", str(pipeline), "--set-file", str(bad)]) == ExitCode.CONFIG
    assert "per_class.cat" in capsys.readouterr().err


def test_schedule_rereads_the_set_file_before_each_run(tmp_path: Path) -> None:
    """The loop's last step: thresholds calibrated between two scheduled runs apply to the next one."""
    import json

    from eval_scripted import make_images, pipeline

    from autolabel.schedule import schedule

    make_images(tmp_path / "in", ["a.png", "b.png"])
    answers = {"a.png": [["cat", 0, 0, 20, 20, 0.9]], "b.png": [["cat", 0, 0, 20, 20, 0.5]]}
    pipeline_file = tmp_path / "p.yaml"
    pipeline_file.write_text(yaml.safe_dump(pipeline(answers, calls=tmp_path / "calls")))
    thresholds = tmp_path / "thresholds.yaml"
    thresholds.write_text("stages.score_threshold.per_class.cat: 0.1\n")
    kept_per_run = []

    def log(line: str) -> None:
        if line.startswith("run "):
            coco = json.loads((tmp_path / "out" / "coco.json").read_text())
            kept_per_run.append(len(coco["annotations"]))
            thresholds.write_text("stages.score_threshold.per_class.cat: 0.7\n")  # "calibrated" after run 1

    code = schedule(pipeline_file, "* * * * * */1", input=[str(tmp_path / "in")], output=str(tmp_path / "out"),
                    set_files=[str(thresholds)], max_runs=2, log=log)
    assert code == ExitCode.OK and kept_per_run == [2, 1]
    assert len((tmp_path / "calls").read_text().splitlines()) == 2  # the second run re-filtered, no model call
