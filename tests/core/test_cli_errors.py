"""Every argument error is one line naming the right `--help`, with the configuration exit code."""

from __future__ import annotations

import pytest

from autolabel.cli import _parser, _subcommands, main
from autolabel.errors import ExitCode

COMMANDS = sorted(_subcommands(_parser()))  # read from the parser: a command added later is checked too


def test_the_commands_are_found() -> None:
    assert {"run", "validate", "export", "runs", "schedule", "push", "pull", "version"} <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_an_unknown_option_names_the_subcommands_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([command, "--bogus"])
    assert exit_.value.code == ExitCode.CONFIG
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("autolabel: error: ") and line.endswith(f"(see autolabel {command} --help)")
    assert "autolabel autolabel" not in line


def test_an_unknown_option_after_valid_arguments_names_the_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["run", "pipelines/ocr.yaml", "--bogus"])
    assert exit_.value.code == ExitCode.CONFIG
    assert capsys.readouterr().err.strip() == (
        "autolabel: error: unrecognized arguments: --bogus (see autolabel run --help)"
    )


@pytest.mark.parametrize("argv", [["--bogus"], [], ["nosuchcommand"]])
def test_errors_of_the_command_itself_name_its_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == ExitCode.CONFIG
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("autolabel: error: ") and line.endswith("(see autolabel --help)")
