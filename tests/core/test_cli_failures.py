"""Every failure of a command is one line on stderr and a documented exit code (docs/reference/exit-codes.md),
and the end of a run says which images failed and why (issue 20). In-process: ``main([...])`` is the command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from autolabel.cli import main
from autolabel.errors import ExitCode
from runs import make_images, pipeline_dict


def _run(tmp: Path, capsys: pytest.CaptureFixture[str], data: dict | None = None, output: Path | None = None,
         inputs: Path | None = None) -> tuple[int, list[str]]:
    (tmp / "p.yaml").write_text(yaml.safe_dump(data or pipeline_dict()))
    capsys.readouterr()
    code = main(["run", str(tmp / "p.yaml"), "-i", str(inputs or tmp / "in"), "-o", str(output or tmp / "out"),
                 "--no-progress"])
    return code, capsys.readouterr().err.strip().splitlines()


def test_an_empty_input_folder_says_so_with_its_own_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                               ) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    code, err = _run(tmp_path, capsys)
    assert (code, err) == (ExitCode.NOTHING_LABELED, [
        f"autolabel: error: input {tmp_path / 'in'}: no images found (an image is a file named .bmp, .gif, .jpeg, "
        ".jpg, .png, .tif, .tiff, .webp, in any case); nothing was labeled"])
    assert not (tmp_path / "out").exists()  # nothing was started: no store, no export error


def test_a_stage_that_fails_on_every_image_shows_its_exception_and_ends_without_an_export(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_images(tmp_path / "in", 3)
    code, err = _run(tmp_path, capsys, pipeline_dict(fail_on="img"))
    out = tmp_path / "out"
    assert code == ExitCode.NOTHING_LABELED
    assert err == [
        *(f"autolabel: failed: {tmp_path / 'in' / f'img00{i}.png'}: stage 'box': RuntimeError: cannot label "
          f"img00{i}.png" for i in range(3)),
        f"autolabel: error: all 3 inputs failed; nothing was labeled or exported (the first: "
        f"{tmp_path / 'in' / 'img000.png'}: stage 'box': RuntimeError: cannot label img000.png; every reason is in "
        f"{out / 'run.json'})",
    ]
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "failed" and run["error"].startswith("NothingLabeledError: all 3 inputs failed")
    assert not (out / "coco.json").exists()  # not "export failed: no labeled images"


def test_a_partial_run_lists_the_first_failures_and_where_the_rest_are(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_images(tmp_path / "in", 9)
    for i in range(7):
        (tmp_path / "in" / f"bad{i}.png").write_bytes(b"not a png")
    code, err = _run(tmp_path, capsys)
    out = tmp_path / "out"
    assert code == ExitCode.PARTIAL
    assert err[0] == (f"autolabel: partial: 9 labeled, 0 already done, 7 failed of 16 seen; details in "
                      f"{out / 'run.json'}")
    assert err[1:7] == [
        *(f"autolabel: failed: {tmp_path / 'in' / f'bad{i}.png'}: not an image (Pillow cannot identify the format)"
          for i in range(5)),
        f"autolabel: ... and 2 more failed (every failure is in {out / 'run.json'})",
    ]
    assert err[7:] == [f"autolabel: wrote {out / 'coco.json'}", f"autolabel: wrote {out / 'captions.json'}"]


def test_an_output_that_is_a_file_or_lies_below_one_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                                 ) -> None:
    make_images(tmp_path / "in", 1)
    (tmp_path / "file").write_text("x")
    assert _run(tmp_path, capsys, output=tmp_path / "file") == (ExitCode.CONFIG, [
        f"autolabel: error: output {tmp_path / 'file'}: a file, not a folder; pass a folder (it is created when "
        "missing)"])
    assert _run(tmp_path, capsys, output=tmp_path / "file" / "out") == (ExitCode.CONFIG, [
        f"autolabel: error: output {tmp_path / 'file' / 'out'}: lies below the file {tmp_path / 'file'}; pass a "
        "folder"])
    assert (tmp_path / "file").read_text() == "x"


def test_export_onto_a_folder_in_the_files_place_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                              ) -> None:
    make_images(tmp_path / "in", 2)
    assert _run(tmp_path, capsys)[0] == ExitCode.OK
    (tmp_path / "out" / "coco.json").unlink()
    (tmp_path / "out" / "coco.json").mkdir()
    capsys.readouterr()
    assert main(["export", str(tmp_path / "out")]) == ExitCode.EXPORT
    assert capsys.readouterr().err.strip().splitlines() == [
        f"autolabel: error: export coco to {tmp_path / 'out' / 'coco.json'} failed: Is a directory; no file was left "
        "half-written and the store is unchanged: free space or remove what is in the way, then export again"]


def test_an_unexpected_error_is_one_line_naming_where_its_traceback_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import autolabel.history

    def broken(*args: object, **kwargs: object) -> None:
        raise TypeError("a bug\nover two lines")

    monkeypatch.setattr(autolabel.history, "print_runs", broken)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.delenv("AUTOLABEL_TRACEBACK", raising=False)
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    assert main(["runs", str(tmp_path)]) == ExitCode.FATAL
    (line,) = capsys.readouterr().err.strip().splitlines()
    (trace,) = tmp_path.glob("autolabel-traceback-*.txt")
    assert line == (f"autolabel: error: unexpected TypeError: a bug over two lines (a bug in autolabel: please report "
                    f"it; the traceback is in {trace})")
    assert "Traceback (most recent call last)" in trace.read_text() and "def broken" not in line
    monkeypatch.setenv("AUTOLABEL_TRACEBACK", "1")
    with pytest.raises(TypeError, match="a bug"):
        main(["runs", str(tmp_path)])
