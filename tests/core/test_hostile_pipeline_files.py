"""Pipeline files (and ``--set`` / ``--set-file``) written to hurt (issue 20): every one refused in one line naming
the file and the limit, before anything expands, with the configuration exit code."""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import pytest
import yaml

from autolabel import bounded_yaml
from autolabel.cli import main
from autolabel.config import load_file
from autolabel.errors import ConfigError, ExitCode
from autolabel.overrides import collect_overrides, parse_override

#: nine levels of nine aliases each: 9**9 (387 million) strings from 470 bytes; l6 (line 7 of it) is the first
#: level past 1,000,000 values
LAUGHS = "".join(
    [f"      l0: &l0 [{', '.join(['lol'] * 9)}]\n"]
    + [f"      l{k}: &l{k} [{', '.join([f'*l{k - 1}'] * 9)}]\n" for k in range(1, 9)]
)


def _validate(path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> list[str]:
    assert main(["validate", str(path), *extra]) == ExitCode.CONFIG
    return capsys.readouterr().err.strip().splitlines()


def test_a_billion_laughs_under_a_models_options_is_refused_before_it_expands(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "laughs.yaml"
    path.write_text("models:\n  m:\n    id: x\n    options:\n" + LAUGHS + "stages:\n  - {type: florence2, model: m}\n")
    assert path.stat().st_size < 700
    tracemalloc.start()
    try:
        lines = _validate(path, capsys)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert lines == [f"autolabel: error: {path}: line 11: expands to over 1,000,000 values through its aliases "
                     "(*name repeating &name); a pipeline file needs far fewer: write the values out, or repeat less"]
    assert peak < 20 * 2**20  # nothing was expanded


def test_aliases_a_file_uses_sensibly_still_load(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("ontology:\n  cat: &animal [animal, pet]\n  dog: *animal\n"
                    "stages:\n  - &check {type: score_threshold, threshold: 0.3}\n")
    assert load_file(path)["ontology"] == {"cat": ["animal", "pet"], "dog": ["animal", "pet"]}


@pytest.mark.parametrize("text,line", [
    ("stages:\n  - &x [*x]\n", 2),  # a list holding itself
    ("stages: &x\n  - type: score_threshold\n    more: *x\n", 1),  # a mapping holding itself, further down
])
def test_an_anchor_that_holds_itself_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, line: int
) -> None:
    path = tmp_path / "self.yaml"
    path.write_text(text)
    assert _validate(path, capsys) == [
        f"autolabel: error: {path}: line {line}: an anchor contains an alias of itself (a value that holds itself "
        "cannot be read); repeat a value only outside its own anchor"]


def test_a_file_too_large_a_folder_a_fifo_and_a_device_are_refused_unread(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("# padding\n" * (bounded_yaml.MAX_BYTES // 10 + 1))
    assert _validate(big, capsys) == [
        f"autolabel: error: {big}: {big.stat().st_size:,} bytes; a pipeline file may hold at most 1,048,576"]
    (tmp_path / "dir.yaml").mkdir()
    assert _validate(tmp_path / "dir.yaml", capsys) == [f"autolabel: error: {tmp_path / 'dir.yaml'}: a folder, not a "
                                                         "pipeline file"]
    os.mkfifo(tmp_path / "fifo.yaml")  # opened the usual way, this waits for a writer forever
    for path in (tmp_path / "fifo.yaml", Path("/dev/zero")):
        assert _validate(path, capsys) == [f"autolabel: error: {path}: not a regular file (a pipe or a device); pass "
                                           "the pipeline file itself"]
    (tmp_path / "latin1.yaml").write_bytes(b"name: caf\xe9\n")
    assert _validate(tmp_path / "latin1.yaml", capsys) == [
        f"autolabel: error: {tmp_path / 'latin1.yaml'}: not UTF-8 text (byte 9: b'\\xe9')"]


def test_overrides_are_bounded_the_same_way(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        parse_override("stages.0.x=&x [*x]")
    assert str(err.value) == ("--set 'stages.0.x=&x [*x]': value is not valid YAML (line 1: an anchor contains an "
                              "alias of itself (a value that holds itself cannot be read); repeat a value only "
                              "outside its own anchor)")
    laughs = tmp_path / "thresholds.yaml"
    laughs.write_text("stages.0.options:\n" + LAUGHS.replace("      ", "  "))
    with pytest.raises(ConfigError, match=r"^--set-file .*thresholds\.yaml: line 8: expands to over 1,000,000"):
        collect_overrides([laughs])
    with pytest.raises(ConfigError, match=r"^--set-file .*nope\.yaml: no such file$"):
        collect_overrides([tmp_path / "nope.yaml"])


def _stages(tmp_path: Path, *types: str) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"stages": [{"type": t} for t in types]}))
    return path


def test_a_type_path_must_name_a_stage_class_or_a_model_class(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "raises_on_import.py").write_text("raise RuntimeError('this module cannot be imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    path = _stages(tmp_path, "os:system", "plugins:CenterBoxParams", ":x", "raises_on_import:Stage")
    must = "a stage type is a built-in name or 'package.module:Class' naming a subclass of autolabel.Stage"
    assert _validate(path, capsys) == [
        f"autolabel: error: stages[0].type: 'os:system' is a builtin_function_or_method, not a stage type: {must}",
        f"autolabel: error: stages[1].type: 'plugins:CenterBoxParams' is the class CenterBoxParams, not a stage type: "
        f"{must}",
        "autolabel: error: stages[2].type: cannot import stage type ':x' (ValueError: Empty module name)",
        "autolabel: error: stages[3].type: cannot import stage type 'raises_on_import:Stage' (RuntimeError: this "
        "module cannot be imported)",
    ]
    models = tmp_path / "m.yaml"
    models.write_text(yaml.safe_dump({"models": {"m": {"type": "os:path", "id": "x"}},
                                      "stages": [{"type": "score_threshold"}]}))
    assert _validate(models, capsys) == [
        "autolabel: error: models.m.type: 'os:path' is a module, not a model type: a model type is a built-in name or "
        "'package.module:Class' naming a class with load(spec)"]
