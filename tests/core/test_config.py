"""Pipeline files: every malformed file is one line naming the key, exit code 2, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from autolabel.cli import main
from autolabel.config import load_file, parse
from autolabel.errors import ConfigError, ExitCode

VALID = """\
name: demo
models:
  florence:
    id: florence-community/Florence-2-base
ontology:
  dog: [dog, puppy]
  cat: cat
stages:
  - type: plugins:ModelCenterBox
    name: detect
    model: florence
    label: dog
  - type: score_threshold
    threshold: 0.3
exports:
  - format: coco
"""

# (description, file text or a (search, replace) edit of VALID, expected message line)
MALFORMED = [
    ("unknown model", ("model: florence\n", "model: florenc\n"),
     "stages[0].model: unknown model 'florenc' (known: florence)"),
    ("unknown stage type", ("type: score_threshold", "type: score_treshold"),
     "stages[1].type: unknown stage type 'score_treshold' (known:"),
    ("unknown top-level key", ("name: demo\n", "name: demo\nbatchsize: 4\n"),
     "batchsize: unknown key (known: version, name, input, output, batch_size,"),
    ("batch size zero", ("name: demo\n", "name: demo\nbatch_size: 0\n"),
     "batch_size: input should be greater than or equal to 1 (got 0)"),
    ("threshold not a number", ("threshold: 0.3", "threshold: high"),
     "stages[1].threshold: input should be a valid number, unable to parse string as a number (got 'high')"),
    ("threshold out of range", ("threshold: 0.3", "threshold: 1.5"),
     "stages[1].threshold: input should be less than or equal to 1 (got 1.5)"),
    ("unknown stage key", ("threshold: 0.3", "treshold: 0.3"),
     "stages[1].treshold: unknown key (known: type, name, "),
    ("no stages", VALID.split("stages:")[0], "stages: missing required key"),
    ("model without id", ("    id: florence-community/Florence-2-base\n", "    revision: main\n"),
     "models.florence.id: missing required key"),
    ("unknown model key", ("    id: florence-community/Florence-2-base\n",
                           "    id: florence-community/Florence-2-base\n    dtpye: float16\n"),
     "models.florence.dtpye: unknown key (known: type, id, revision, dtype, device,"),
    ("bad dtype", ("    id: florence-community/Florence-2-base\n",
                   "    id: florence-community/Florence-2-base\n    dtype: float8\n"),
     "models.florence.dtype: input should be 'auto', 'float32', 'float16' or 'bfloat16' (got 'float8')"),
    ("unknown model type", ("    id: florence-community/Florence-2-base\n",
                            "    id: florence-community/Florence-2-base\n    type: florance2\n"),
     "models.florence.type: unknown model type 'florance2' (known:"),
    ("unknown export format", ("format: coco", "format: voc"), "exports[0].format: input should be 'coco'"),
    ("duplicate stage names", ("type: score_threshold\n", "type: score_threshold\n    name: detect\n"),
     "stages[1].name: duplicate stage name 'detect'"),
    ("per-class threshold for an unknown class", ("threshold: 0.3", "per_class: {dgo: 0.5}"),
     "stages[1].per_class: unknown class 'dgo' (known: dog, cat)"),
    ("stage without type", ("  - type: score_threshold\n", "  - kind: score_threshold\n"),
     "stages[1].type: missing (every stage needs a type"),
    ("empty prompt list", ("cat: cat", "cat: []"), "ontology: value error, class 'cat': prompts must be"),
    ("YAML syntax", ("  cat: cat\n", "  cat: [cat\n"), "invalid YAML"),
    ("not a mapping", "- just\n- a list\n", "expected a mapping of keys"),
]


def _write(tmp_path: Path, text: str | tuple[str, str]) -> Path:
    if isinstance(text, tuple):
        assert text[0] in VALID, text[0]
        text = VALID.replace(text[0], text[1], 1)
    path = tmp_path / "pipeline.yaml"
    path.write_text(text)
    return path


def test_valid_file_validates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(_write(tmp_path, VALID))]) == ExitCode.OK
    assert "ok (1 models, 2 stages: detect, score_threshold; 2 classes; 1 exports)" in capsys.readouterr().out


@pytest.mark.parametrize("what,text,expected", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_file_is_one_line_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], what: str, text: str | tuple[str, str], expected: str
) -> None:
    path = _write(tmp_path, text)
    assert main(["validate", str(path)]) == ExitCode.CONFIG
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("autolabel: error: ")
    assert expected in err[0], err[0]


def test_all_problems_are_reported_at_once() -> None:
    data = yaml.safe_load(VALID.replace("model: florence\n", "model: x\n").replace("threshold: 0.3", "threshold: 2"))
    with pytest.raises(ConfigError) as info:
        parse(data)
    assert len(info.value.problems) == 2


def test_missing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["validate", str(tmp_path / "nope.yaml")]) == ExitCode.CONFIG
    assert "nope.yaml: no such pipeline file" in capsys.readouterr().err


def test_set_overrides_values_and_list_items(tmp_path: Path) -> None:
    data = load_file(_write(tmp_path, VALID))
    spec = parse(data, ["stages.1.threshold=0.7", "batch_size=2", "models.florence.id=/weights/florence",
                        "ontology.cat=[cat, kitten]", "output=runs/x"])
    assert spec.stages[1][2].threshold == 0.7
    assert spec.config.batch_size == 2 and spec.config.output == "runs/x"
    assert spec.config.models["florence"].id == "/weights/florence"
    assert spec.ontology.prompts["cat"] == ("cat", "kitten")


@pytest.mark.parametrize(
    "override,message",
    [
        ("stages.5.threshold=0.3", "--set stages.5.threshold=0.3: stages has 2 items, no index 5"),
        ("stages.first.threshold=0.3", "stages has no item named 'first' (use an index or a name: "),
        ("batch_size", "expected KEY=VALUE"),
        ("stages.1.threshold=[1, 2", "value is not valid YAML"),
        ("name.sub=1", "name is a str, cannot set 'sub' in it"),
        ("stages.1.threshold=oops", "stages[1].threshold: input should be a valid number"),
    ],
)
def test_bad_overrides(tmp_path: Path, capsys: pytest.CaptureFixture[str], override: str, message: str) -> None:
    path = _write(tmp_path, VALID)
    assert main(["validate", str(path), "--set", override]) == ExitCode.CONFIG
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_hash_ignores_defaults_spelled_out_and_device_but_not_thresholds(tmp_path: Path) -> None:
    data = load_file(_write(tmp_path, VALID))
    base = parse(data).hash
    assert parse(data, ["models.florence.dtype=auto", "models.florence.device=cpu", "batch_size=3"]).hash == base
    assert parse(data, ["stages.1.threshold=0.31"]).hash != base


def test_cli_error_has_no_traceback(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    path = _write(tmp_path, VALID.replace("model: florence\n", "model: florenc\n"))
    done = subprocess.run([sys.executable, "-m", "autolabel", "validate", str(path)], capture_output=True, text=True,
                          env=subprocess_env, timeout=120)
    assert done.returncode == ExitCode.CONFIG
    assert done.stderr.strip() == "autolabel: error: stages[0].model: unknown model 'florenc' (known: florence)"
    assert "Traceback" not in done.stderr


def test_unknown_cli_flag_is_a_config_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run", "x.yaml", "--bogus"])
    assert info.value.code == ExitCode.CONFIG
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err
