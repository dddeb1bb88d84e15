"""What a user's folder can hold, met without a crash, a hang or a lost label (issue 20): names that are not UTF-8,
special files, oversized files, link loops, the same file reached twice.

In-process runs over tiny pipelines (tests/support/plugins.py's CenterBox): the point is the intake and the store, not a
model. The process-level behaviour (signals while a read hangs, exit codes, no traceback) is in
tests/core/test_hostile_cli.py.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
from pathlib import Path

import pytest
from PIL import Image

from autolabel import Pipeline
from autolabel.errors import ConfigError, ExitCode
from autolabel.intake import Source, discover, read
from autolabel.names import shown
from runs import coco_by_file, make_images, pipeline_dict

LATIN1 = b"caf\xe9.png"  # "café.png" written in Latin-1: not valid UTF-8
NAME = os.fsdecode(LATIN1)  # how Python spells it: "caf\udce9.png"


def _bytes_folder(root: Path) -> Path:
    """Three PNGs, one of them named by bytes that are not UTF-8."""
    make_images(root, 2)
    Image.new("RGB", (40, 20), (10, 200, 30)).save(os.path.join(os.fsencode(root), LATIN1), "PNG")
    return root


def test_a_name_that_is_not_utf8_is_labeled_kept_exported_and_skipped_next_time(tmp_path: Path) -> None:
    folder = _bytes_folder(tmp_path / "in")
    data = pipeline_dict()
    data["exports"] = [{"format": "coco"}, {"format": "yolo", "split": {"train": 1.0}}, {"format": "labelstudio"}]
    summary = Pipeline.from_dict(data).run(folder, tmp_path / "out")
    assert summary.exit_code == ExitCode.OK and summary.counts["labeled"] == 3

    out = tmp_path / "out"
    coco_text = (out / "coco.json").read_bytes().decode("utf-8")  # strict: the file is valid UTF-8 ...
    assert '"caf\\udce9.png"' in coco_text  # ... the odd byte is a JSON escape, which Python reads back exactly
    boxes = coco_by_file(out / "coco.json")
    assert boxes[NAME] == [(1, [10.0, 5.0, 20.0, 10.0], pytest.approx(boxes[NAME][0][2]))]
    assert os.path.exists(os.path.join(folder, NAME))  # the name COCO gives opens the file

    yolo = out / "yolo"
    assert os.path.exists(os.path.join(os.fsencode(yolo / "labels" / "train"), b"caf\xe9.txt"))  # the bytes kept
    assert os.path.islink(os.path.join(os.fsencode(yolo / "images" / "train"), LATIN1))

    tasks = json.loads((out / "labelstudio_tasks.json").read_bytes().decode("utf-8"))
    (task,) = [t for t in tasks if t["data"]["rel_path"] == NAME]
    assert task["data"]["image"] == "/data/local-files/?d=caf%E9.png"  # a URL of the file's bytes

    with sqlite3.connect(out / "autolabel.db") as conn:  # the store keys it by its bytes: exact, readable there
        assert conn.execute("SELECT rel_path FROM images WHERE typeof(path) = 'blob'").fetchall() == [(LATIN1,)]

    again = Pipeline.from_dict(data).run(folder, tmp_path / "out")
    assert again.counts == {"seen": 3, "labeled": 0, "skipped": 3, "failed": 0}


def test_a_list_file_names_files_by_any_bytes_and_messages_show_them_escaped(tmp_path: Path) -> None:
    folder = _bytes_folder(tmp_path / "in")
    listing = tmp_path / "todo.txt"
    listing.write_bytes(b"in/" + LATIN1 + b"\r\nin/img000.png\nin/gone-\xff.png\n")
    sources = discover(listing)
    assert [s.rel_path for s in sources] == [f"in/{NAME}", "in/img000.png", "in/gone-\udcff.png"]
    assert read(sources[0])[0] == (folder / NAME).read_bytes()
    summary = Pipeline.from_dict(pipeline_dict()).run(listing, tmp_path / "out")
    assert summary.counts["failed"] == 1 and summary.failures[0]["reason"] == "file not found"
    assert shown(summary.failures[0]["path"]).endswith("in/gone-\\xff.png")
    run = json.loads((tmp_path / "out" / "run.json").read_text("ascii"))  # run.json stays ASCII JSON
    assert run["failures"][0]["path"] == str(tmp_path / "in" / "gone-\udcff.png")


@pytest.fixture
def hostile(tmp_path: Path) -> Path:
    """Two images beside everything a folder may hold that is not one (each named like an image)."""
    root = tmp_path / "in"
    make_images(root, 2)
    os.mkfifo(root / "fifo.png")  # opened the usual way, it blocks until a writer comes: forever
    os.symlink("/dev/zero", root / "zero.png")  # read whole, it grows memory without end
    (root / "folder.png").mkdir()
    (root / "big.png").write_bytes((root / "img000.png").read_bytes() + bytes(3000))
    return root


def test_special_and_oversized_files_are_refused_unread_and_the_run_goes_on(hostile: Path, tmp_path: Path) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(hostile / "sock.png"))
        data = pipeline_dict()
        data["max_file_bytes"] = 2000  # the PNGs are ~100 bytes; big.png is over
        summary = Pipeline.from_dict(data).run(hostile, tmp_path / "out")
    assert summary.exit_code == ExitCode.PARTIAL
    assert summary.counts == {"seen": 6, "labeled": 2, "skipped": 0, "failed": 4}  # the folder is no image name
    reasons = {Path(f["path"]).name: f["reason"] for f in summary.failures}
    size = (hostile / "big.png").stat().st_size
    assert reasons == {
        "big.png": f"too large: {size:,} bytes exceeds max_file_bytes 2,000 (raise it in the pipeline file if the "
                   "file is genuine): not read",
        "fifo.png": "a named pipe (FIFO), not an image file: not read",
        "sock.png": "a socket, not an image file: not read",
        "zero.png": "a character device (the link points to /dev/zero), not an image file: not read",
    }
    assert sorted(coco_by_file(tmp_path / "out" / "coco.json")) == ["img000.png", "img001.png"]


def test_a_folder_in_an_image_s_place_is_refused_on_its_handle(hostile: Path) -> None:
    assert discover(hostile / "folder.png") == []  # given as an input, a folder is searched
    assert read(Source(str(hostile / "folder.png"), "folder.png")) == (None, "is a folder, not an image")


def test_the_byte_cap_counts_what_is_read_not_what_the_file_says(tmp_path: Path) -> None:
    status = Path("/proc/self/status")  # a regular file that says it is 0 bytes long and is not
    if not status.is_file() or status.stat().st_size:
        pytest.skip("no procfs here")
    assert read(Source(str(status), "status"), max_bytes=64) == (
        None, "too large: more bytes than its size said (it grew while read) exceeds max_file_bytes 64 (raise it in "
              "the pipeline file if the file is genuine): not read")
    data, reason = read(Source(str(status), "status"), max_bytes=1 << 20)
    assert reason is None and b"Name:" in data


def _names(sources: list) -> list[str]:
    return [s.rel_path for s in sources]


def test_link_loops_end_and_each_real_file_is_labeled_once_under_its_real_name(tmp_path: Path) -> None:
    root = tmp_path / "in"
    make_images(root / "a", 1)
    make_images(root / "b", 1)
    os.symlink(".", root / "self")  # self -> .
    os.symlink("../b", root / "a" / "to_b")  # two folders linking to each other: a loop through both
    os.symlink("../a", root / "b" / "to_a")
    os.symlink("b/img000.png", root / "0-link.png")  # sorts first, but a link: the real name wins
    os.link(root / "a" / "img000.png", root / "hard.png")  # a hard link is the same file too
    (tmp_path / "elsewhere").mkdir()
    Image.new("RGB", (9, 9)).save(tmp_path / "elsewhere" / "far.png")
    os.symlink(tmp_path / "elsewhere", root / "z-linked")  # only reachable through a link: followed
    expected = ["hard.png", "b/img000.png", "z-linked/far.png"]
    assert _names(discover(root)) == expected
    assert _names(discover(str(root / "**" / "*.png"))) == expected  # a recursive glob walks the same way
    assert _names(discover([root, root / "a", root / "b" / "img000.png"])) == expected  # inputs overlap: once


def test_a_glob_keeps_globs_rules_for_hidden_names_and_depth(tmp_path: Path) -> None:
    root = tmp_path / "in"
    make_images(root / "sub" / "deeper", 1)
    make_images(root / ".hidden", 1)
    make_images(root, 1)
    assert _names(discover(str(root / "*.png"))) == ["img000.png"]
    with pytest.raises(ConfigError, match="the pattern matches no files"):  # sub holds a folder; .hidden is hidden
        discover(str(root / "*" / "*.png"))
    assert _names(discover(str(root / ".hidden" / "*.png"))) == ["img000.png"]
    assert _names(discover(str(root / "**" / "*.png"))) == ["img000.png", "sub/deeper/img000.png"]
    assert _names(discover(str(root / "s?b" / "*" / "img00[0-9].png"))) == ["sub/deeper/img000.png"]
