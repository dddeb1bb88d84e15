"""Intake of sources at the unit level: fsspec URLs (memory://), list files, glob roots and the exact reason each
unreadable file gets. Written to kill what mutation testing found unchecked (BENCHMARKS.md, "Mutation testing")."""

from __future__ import annotations

import io
import os
import uuid
from pathlib import Path

import fsspec
import pytest
from PIL import Image

from autolabel.errors import ConfigError
from autolabel.intake import Decoded, Source, _glob_root, discover, load, read


def _png(value: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (3, 2), (value, 0, 0)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def bucket() -> str:
    """A fresh folder on fsspec's in-memory filesystem (shared by the whole process, so removed afterwards)."""
    fs = fsspec.filesystem("memory")
    root = f"/mutation-{uuid.uuid4().hex}"
    fs.pipe(f"{root}/b.png", _png(2))
    fs.pipe(f"{root}/a.png", _png(1))
    fs.pipe(f"{root}/sub/c.JPG", _png(3))
    fs.pipe(f"{root}/sub/notes.txt", b"not an image")
    fs.pipe(f"{root}/empty.png", b"")
    yield root
    fs.rm(root, recursive=True)


def test_a_url_folder_is_searched_recursively_sorted_with_paths_below_its_root(bucket: str) -> None:
    sources = discover(f"memory://{bucket}")
    assert [s.rel_path for s in sources] == ["a.png", "b.png", "empty.png", "sub/c.JPG"]
    assert [s.path for s in sources] == [f"memory://{bucket}/{s.rel_path}" for s in sources]
    assert [s.rel_path for s in discover(f"memory://{bucket}/")] == [s.rel_path for s in sources]


def test_a_url_glob_keeps_images_only_and_names_them_below_the_fixed_part(bucket: str) -> None:
    sources = discover(f"memory://{bucket}/sub/*")
    assert [(s.path, s.rel_path) for s in sources] == [(f"memory://{bucket}/sub/c.JPG", "c.JPG")]
    assert [s.rel_path for s in discover(f"memory://{bucket}/*.png")] == ["a.png", "b.png", "empty.png"]
    with pytest.raises(ConfigError, match=r"^input 'memory://.*/\*\.gif': the pattern matches no files$"):
        discover(f"memory://{bucket}/*.gif")


def test_a_single_url_file_is_named_by_its_basename(bucket: str) -> None:
    (source,) = discover(f"memory://{bucket}/sub/c.JPG")
    assert source == Source(path=f"memory://{bucket}/sub/c.JPG", rel_path="c.JPG")
    with pytest.raises(ConfigError, match=r"^input 'memory://.*/nope\.png': no such file or folder$"):
        discover(f"memory://{bucket}/nope.png")


def test_an_unknown_protocol_names_it_and_the_package_to_install() -> None:
    with pytest.raises(ConfigError) as err:
        discover("nosuchfs://bucket/x.png")
    assert str(err.value) == ("input 'nosuchfs://bucket/x.png': no filesystem for nosuchfs:// (Protocol not known: "
                              "nosuchfs); install its fsspec package (s3fs for s3://, gcsfs for gs://)")
    with pytest.raises(ConfigError, match=r"no filesystem for nosuchfs:// \(Protocol not known: nosuchfs\)"):
        discover("nosuchfs://bucket/a://b.png")  # the protocol is what comes before the first ://
    data, reason = read(Source(path="nosuchfs://bucket/x.png", rel_path="x.png"))
    assert data is None and reason.startswith("cannot read: input 'nosuchfs://bucket/x.png': no filesystem for")


def test_reading_through_a_url_gives_the_bytes_or_the_exact_reason(bucket: str) -> None:
    assert read(Source(f"memory://{bucket}/a.png", "a.png")) == (_png(1), None)
    assert read(Source(f"memory://{bucket}/gone.png", "gone.png")) == (None, "file not found")
    assert read(Source(f"memory://{bucket}/empty.png", "empty.png")) == (None, "empty file (0 bytes)")
    decoded = load(Source(f"memory://{bucket}/b.png", "b.png"))
    assert decoded.ok and decoded.image.getpixel((0, 0)) == (2, 0, 0)


def test_reading_a_local_file_gives_the_bytes_or_the_exact_reason(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(_png(1))
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "folder.png").mkdir()
    os.symlink(tmp_path / "target.png", tmp_path / "dangling.png")

    def reason(name: str) -> str | None:
        return read(Source(str(tmp_path / name), name))[1]

    assert read(Source(str(tmp_path / "a.png"), "a.png")) == (_png(1), None)
    assert reason("missing.png") == "file not found"
    assert reason("empty.png") == "empty file (0 bytes)"
    assert reason("folder.png") == "is a folder, not an image"
    assert reason("dangling.png") == f"dangling link (points to {tmp_path / 'target.png'})"


def test_a_list_file_resolves_relative_entries_beside_it_and_keeps_absolute_ones(tmp_path: Path) -> None:
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "near.png").write_bytes(_png(1))
    (tmp_path / "far").mkdir()
    (tmp_path / "far" / "abs.png").write_bytes(_png(2))
    listing = tmp_path / "lists" / "todo.lst"
    (tmp_path / "lists" / "sub").mkdir()
    listing.write_text(f"  near.png  \nsub/deep.png\n# {tmp_path / 'skipped.png'}\n\n{tmp_path / 'far' / 'abs.png'}\n",
                       "utf-8")
    sources = discover(listing)
    assert [(s.path, s.rel_path) for s in sources] == [
        (str(tmp_path / "lists" / "near.png"), "near.png"),
        (str(tmp_path / "lists" / "sub" / "deep.png"), "sub/deep.png"),  # relative to the list's folder
        (str(tmp_path / "far" / "abs.png"), "abs.png"),  # outside the list's folder: its own name
    ]


def test_the_glob_root_is_the_fixed_part_of_the_pattern() -> None:
    assert _glob_root("data/photos/**/*.png") == "data/photos"
    assert _glob_root("*.png") == "."
    assert _glob_root("/abs/x?/y.png") == "/abs"


def test_a_local_glob_names_files_below_its_fixed_part(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "d" / "e").mkdir(parents=True)
    (tmp_path / "d" / "e" / "x.png").write_bytes(_png(1))
    (tmp_path / "top.png").write_bytes(_png(2))
    monkeypatch.chdir(tmp_path)
    assert [s.rel_path for s in discover("d/**/*.png")] == ["e/x.png"]
    assert [s.rel_path for s in discover("*.png")] == ["top.png"]


def test_load_keeps_the_digest_of_skipped_and_undecodable_files(tmp_path: Path) -> None:
    from autolabel.intake import sha256

    (tmp_path / "a.png").write_bytes(_png(1))
    (tmp_path / "bad.png").write_bytes(b"not a png at all")
    seen: list[tuple[Source, str]] = []
    source = Source(str(tmp_path / "a.png"), "a.png")
    skipped = load(source, known=lambda s, digest: seen.append((s, digest)) or True)
    assert skipped == Decoded(source, sha256=sha256(_png(1)), skipped=True)
    assert seen == [(source, sha256(_png(1)))]
    bad = Source(str(tmp_path / "bad.png"), "bad.png")
    assert load(bad) == Decoded(bad, sha256=sha256(b"not a png at all"),
                                reason="not an image (Pillow cannot identify the format)")


def test_prefetch_runs_in_named_threads_of_the_given_number_and_reads_only_ahead_items() -> None:
    import threading
    import time

    from autolabel.intake import prefetch

    pulled: list[int] = []

    def items():
        for i in range(10):
            pulled.append(i)
            yield i

    def work(i: int) -> tuple[int, str]:
        time.sleep(0.05)
        return i, threading.current_thread().name

    stream = prefetch(work, items(), workers=1, ahead=3)
    first = next(stream)
    assert len(pulled) == 3 + 1  # `ahead` submitted, the next one read but held until a result is taken
    results = [first, *stream]
    assert [i for i, _ in results] == list(range(10))
    (name,) = {name for _, name in results}  # one worker thread, named so that py-spy and logs show it
    assert name.startswith("autolabel-decode_")
    names = {name for _, name in prefetch(work, range(8), workers=4, ahead=8)}
    assert 1 < len(names) <= 4


def test_urls_without_fsspec_say_which_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "fsspec", None)  # what `import fsspec` meets where it is not installed
    with pytest.raises(ConfigError) as err:
        discover("s3://bucket/photos")
    assert str(err.value) == "input 's3://bucket/photos': URLs need fsspec: pip install 'autolabel[remote]'"


def test_a_glob_at_the_filesystem_root_names_top_level_files_by_their_names() -> None:
    fs = fsspec.filesystem("memory")
    prefix = f"mutation-top-{uuid.uuid4().hex}"
    fs.pipe(f"/{prefix}-a.png", _png(1))
    try:
        (source,) = discover(f"memory:///{prefix}-*.png")
        assert source.rel_path == f"{prefix}-a.png"
    finally:
        fs.rm(f"/{prefix}-a.png")


def test_a_local_read_error_is_named_by_its_reason_only(tmp_path: Path) -> None:
    (tmp_path / "file.png").write_bytes(_png(1))
    assert read(Source(str(tmp_path / "file.png" / "x.png"), "x.png")) == (None, "cannot read: Not a directory")


def test_local_globs_and_folders_keep_images_only_and_follow_linked_folders(tmp_path: Path) -> None:
    (tmp_path / "in" / "dir.png").mkdir(parents=True)  # a folder with an image's name is not an image
    (tmp_path / "in" / "a.png").write_bytes(_png(1))
    (tmp_path / "in" / "notes.txt").write_text("no")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "b.png").write_bytes(_png(2))
    os.symlink(tmp_path / "elsewhere", tmp_path / "in" / "linked")
    assert [s.rel_path for s in discover(str(tmp_path / "in" / "*"))] == ["a.png"]
    assert [s.rel_path for s in discover(tmp_path / "in")] == ["a.png", "linked/b.png"]


def test_an_unreadable_folder_is_said_by_name_and_the_rest_is_still_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A sub-folder the run cannot list (its permissions; the tests run as root, which reads everything, so the
    refusal is the kernel's answer played by a stand-in for os.scandir): one warning naming it, the others found."""
    import autolabel.intake as intake

    for name in ("a/1.png", "locked/2.png", "z/3.png"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    real = os.scandir

    def scandir(path):  # type: ignore[no-untyped-def]
        if os.path.basename(path) == "locked":
            raise PermissionError(13, "Permission denied", path)
        return real(path)

    monkeypatch.setattr(intake.os, "scandir", scandir)
    with caplog.at_level("WARNING", "autolabel.intake"):
        found = [s.rel_path for s in discover(tmp_path)]
    assert found == ["a/1.png", "z/3.png"]
    assert [r.getMessage() for r in caplog.records] == [
        f"autolabel: warning: {tmp_path / 'locked'}: cannot read this folder (Permission denied): its files are not "
        "labeled; fix its permissions and run again (what is labeled is kept)"]
