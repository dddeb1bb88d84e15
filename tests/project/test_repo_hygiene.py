"""Nothing binary or large is committed: no weights, wheels, archives; images only as tiny, listed test fixtures."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAX_BYTES = 3 * 1024 * 1024  # any tracked file
FIXTURE_MAX_BYTES = 64 * 1024  # an allowed binary fixture
#: The binary files allowed, each a small image the docs or the golden tests use. Add new ones here, explicitly.
ALLOWED_BINARIES = {
    "examples/images/exit_sign.png",
    "examples/images/platform_sideways.jpg",
    "examples/images/shop_sign.jpg",
    "tests/golden/exports/inputs/rotated.jpg",
    "tests/golden/exports/inputs/square.png",
    "tests/golden/exports/inputs/sub/tall.png",
    "tests/golden/exports/inputs/wide.png",
}
BINARY_SUFFIXES = {
    ".whl", ".zip", ".gz", ".tgz", ".bz2", ".xz", ".tar", ".7z", ".egg",  # packages and archives
    ".pt", ".pth", ".bin", ".safetensors", ".onnx", ".ckpt", ".h5", ".npy", ".npz", ".pkl", ".pickle",  # weights
    ".so", ".dylib", ".dll", ".exe", ".pyc", ".db", ".sqlite",  # built or generated
    ".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff", ".pdf",  # images and documents
}


def _tracked() -> list[str]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: nothing tracked to check")
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    return [p for p in out.decode().split("\0") if p and (ROOT / p).is_file()]


def _is_binary(path: Path) -> bool:
    if path.suffix.lower() in BINARY_SUFFIXES:
        return True
    with path.open("rb") as f:
        return b"\0" in f.read(8192)


def test_no_tracked_file_is_large() -> None:
    large = [f"{p} ({(ROOT / p).stat().st_size:,} bytes)" for p in _tracked() if (ROOT / p).stat().st_size > MAX_BYTES]
    assert not large, f"tracked files over {MAX_BYTES:,} bytes: {large}"


def test_no_tracked_file_is_binary_except_the_listed_tiny_fixtures() -> None:
    tracked = _tracked()
    binary = [p for p in tracked if _is_binary(ROOT / p)]
    unlisted = [p for p in binary if p not in ALLOWED_BINARIES]
    assert not unlisted, f"binary files tracked (remove them, or list a tiny fixture in ALLOWED_BINARIES): {unlisted}"
    too_big = [p for p in binary if (ROOT / p).stat().st_size > FIXTURE_MAX_BYTES]
    assert not too_big, f"binary fixtures over {FIXTURE_MAX_BYTES:,} bytes: {too_big}"


def test_the_checks_see_a_wheel_and_a_nul_byte(tmp_path: Path) -> None:
    (tmp_path / "tool-1.0-py3-none-any.whl").write_bytes(b"PK\x03\x04")
    (tmp_path / "weights").write_bytes(b"\x00\x01")
    (tmp_path / "notes.md").write_text("plain text\n")
    assert [_is_binary(tmp_path / n) for n in ("tool-1.0-py3-none-any.whl", "weights", "notes.md")] == [
        True, True, False,
    ]
