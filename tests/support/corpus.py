"""An awkward-input corpus, generated: every image mode and container the intake must handle, and every bad file.

``make_corpus(folder)`` returns ``(good, bad)``: good maps a relative path to its *displayed* (width, height);
bad maps a relative path to a fragment its failure reason must contain.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image


def _pattern(w: int, h: int) -> Image.Image:
    """A non-uniform RGB image (a gradient), so that JPEG and resizes keep something to see."""
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, h, dtype=np.float32)[:, None, None]
    rgb = np.concatenate([np.broadcast_to(x, (h, w, 1)), np.broadcast_to(y, (h, w, 1)), np.full((h, w, 1), 128.0)], 2)
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


def exif_jpeg(w: int, h: int, orientation: int) -> bytes:
    """A JPEG stored as w x h with an EXIF orientation tag (6 and 8 rotate: displayed h x w)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    _pattern(w, h).save(buf, "JPEG", exif=exif.tobytes(), quality=90)
    return buf.getvalue()


def make_corpus(folder: Path) -> tuple[dict[str, tuple[int, int]], dict[str, str]]:
    folder.mkdir(parents=True, exist_ok=True)
    good: dict[str, tuple[int, int]] = {}
    bad: dict[str, str] = {}

    def save(name: str, image: Image.Image, size: tuple[int, int] | None = None, **kw: object) -> None:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, **kw)
        good[name] = size or image.size

    save("plain.jpg", _pattern(64, 48))
    save("upper_case.JPG", _pattern(50, 30), format="JPEG")
    (folder / "rotated6.jpg").write_bytes(exif_jpeg(80, 40, 6))
    good["rotated6.jpg"] = (40, 80)
    (folder / "rotated3.jpg").write_bytes(exif_jpeg(60, 30, 3))
    good["rotated3.jpg"] = (60, 30)
    save("gray.png", _pattern(33, 21).convert("L"))
    save("rgba.png", _pattern(40, 40).convert("RGBA"))
    palette = _pattern(30, 20).convert("P")
    save("palette_transparent.png", palette, transparency=0)
    save("cmyk.jpg", _pattern(36, 24).convert("CMYK"))
    deep = Image.fromarray((np.arange(32 * 16, dtype=np.uint16).reshape(16, 32) * 120).astype(np.uint16))
    save("deep16.png", deep)
    save("nested/deeper/in_subfolder.webp", _pattern(20, 24))
    save("bitmap.bmp", _pattern(18, 12))
    save("scan.tiff", _pattern(25, 15))
    frames = [_pattern(22, 11), _pattern(22, 11).transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    good["animated.gif"] = (22, 11)

    (folder / "empty.jpg").write_bytes(b"")
    bad["empty.jpg"] = "empty file"
    full = io.BytesIO()
    _pattern(200, 200).save(full, "JPEG", quality=95)
    (folder / "truncated.jpg").write_bytes(full.getvalue()[: len(full.getvalue()) // 2])
    bad["truncated.jpg"] = "truncated"
    png = io.BytesIO()
    _pattern(128, 128).save(png, "PNG")
    (folder / "truncated.png").write_bytes(png.getvalue()[: len(png.getvalue()) // 2])
    bad["truncated.png"] = "truncated"
    (folder / "not_an_image.png").write_text("this is text, not pixels\n")
    bad["not_an_image.png"] = "not an image"
    save("huge.png", _pattern(300, 300))  # over the test's max_image_pixels (see tests): a stand-in bomb
    del good["huge.png"]
    bad["huge.png"] = "too large"
    os.symlink(folder / "missing-target.jpg", folder / "dangling.jpg")
    bad["dangling.jpg"] = "dangling link"

    (folder / "notes.txt").write_text("not an input: wrong extension\n")
    (folder / "model.onnx").write_bytes(b"\0" * 10)
    return good, bad
