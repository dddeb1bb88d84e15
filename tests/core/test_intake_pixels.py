"""Decoding checked by pixel values, not sizes: where a marker lands for each EXIF orientation, and what 16-bit,
CMYK, palette, alpha and animated inputs become.

Every expectation is computed here with numpy from the stored pixels and the format's definition (EXIF 2.3's
orientation table, 16→8 bit as ``round(v / 257)``), never by asking Pillow to do the same transform.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from autolabel import Pipeline
from autolabel.intake import decode

BLOCK = 8  # JPEG blocks are 8x8: flat blocks of one colour decode (almost) exactly with subsampling off
#: a 4 x 2 grid of distinct colours: every block tells where it came from
COLOURS = np.array([
    [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)],
    [(0, 255, 255), (255, 0, 255), (128, 128, 128), (0, 0, 0)],
], dtype=np.uint8)

#: EXIF orientation → how the stored (rows, cols) array is shown; the EXIF 2.3 table ("0th row / 0th column")
DISPLAYED = {
    1: lambda a: a,                                   # top / left
    2: lambda a: a[:, ::-1],                          # top / right: mirrored left-right
    3: lambda a: a[::-1, ::-1],                       # bottom / right: rotated 180°
    4: lambda a: a[::-1, :],                          # bottom / left: mirrored top-bottom
    5: lambda a: a.transpose(1, 0, 2),                # left / top: transposed
    6: lambda a: np.rot90(a, k=-1),                   # right / top: rotated 90° clockwise to display
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),    # right / bottom: transversed
    8: lambda a: np.rot90(a, k=1),                    # left / bottom: rotated 90° counter-clockwise to display
}


def stored_blocks() -> np.ndarray:
    """The stored image: 32 wide, 16 high, each 8x8 block one colour of COLOURS."""
    return np.repeat(np.repeat(COLOURS, BLOCK, axis=0), BLOCK, axis=1)


def jpeg_with_orientation(pixels: np.ndarray, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=100, subsampling=0, exif=exif.tobytes())
    return buf.getvalue()


def block_colours(image: np.ndarray) -> np.ndarray:
    """The mean colour of each 8x8 block (rows of blocks, columns of blocks, 3)."""
    h, w, _ = image.shape
    return image.reshape(h // BLOCK, BLOCK, w // BLOCK, BLOCK, 3).mean(axis=(1, 3))


@pytest.mark.parametrize("orientation", sorted(DISPLAYED))
def test_every_exif_orientation_puts_each_block_where_the_tag_says(orientation: int) -> None:
    stored = stored_blocks()
    decoded = np.asarray(decode(jpeg_with_orientation(stored, orientation)))
    expected = DISPLAYED[orientation](stored)
    assert decoded.shape == expected.shape
    got, want = block_colours(decoded), block_colours(expected.astype(np.float64))
    assert np.abs(got - want).max() < 6, f"orientation {orientation}: blocks\n{got.round()}\nexpected\n{want}"


def test_the_eight_orientations_are_eight_different_images() -> None:
    """Guards the table above: a test whose expectations coincide for two tags could not tell them apart."""
    shown = {o: DISPLAYED[o](stored_blocks()).tobytes() + bytes(DISPLAYED[o](stored_blocks()).shape) for o in DISPLAYED}
    assert len(set(shown.values())) == 8


def test_sixteen_bit_grey_is_scaled_by_257_and_rounded() -> None:
    values = np.array([[0, 1, 128, 129], [257, 32767, 32896, 65535]], dtype=np.uint16)
    want = np.rint(values / 257.0).astype(np.uint8)  # 65535 → 255, 32896 → 128, 128 → 0, 129 → 1
    png = io.BytesIO()
    Image.fromarray(values).save(png, "PNG")
    tiff = io.BytesIO()  # big-endian 16-bit, as scanners write it
    Image.frombytes("I;16B", (4, 2), values.astype(">u2").tobytes()).save(tiff, "TIFF")
    for data in (png.getvalue(), tiff.getvalue()):
        rgb = np.asarray(decode(data))
        assert rgb.shape == (2, 4, 3)
        assert (rgb == want[..., None]).all(), rgb[..., 0]


def test_dark_sixteen_bit_image_stays_dark() -> None:
    """All values under 256 in a 16-bit file are still 16-bit values: near black, not mid grey."""
    png = io.BytesIO()
    Image.fromarray(np.full((3, 3), 200, dtype=np.uint16)).save(png, "PNG")
    assert np.asarray(decode(png.getvalue())).max() == 1  # round(200 / 257)


@pytest.mark.parametrize("fmt", ["TIFF", "JPEG"])
def test_cmyk_becomes_the_rgb_it_denotes(fmt: str) -> None:
    # (c, m, y, k) → RGB = 255 - min(255, channel + k) per channel (naive conversion, exact for pure inks)
    inks = np.array([[(0, 0, 0, 0), (0, 255, 255, 0), (255, 0, 255, 0), (0, 0, 0, 255)]], dtype=np.uint8)
    want = 255 - np.minimum(255, inks[..., :3].astype(int) + inks[..., 3:].astype(int))
    pixels = np.repeat(np.repeat(inks, BLOCK, axis=0), BLOCK, axis=1)
    buf = io.BytesIO()
    Image.fromarray(pixels, "CMYK").save(buf, fmt, **({"quality": 100} if fmt == "JPEG" else {}))
    got = block_colours(np.asarray(decode(buf.getvalue())).astype(np.float64))
    assert np.abs(got - want).max() < 4, got.round()


def test_palette_pixels_take_their_palette_colour_and_transparent_ones_white() -> None:
    palette = [(200, 10, 10), (10, 200, 10), (10, 10, 200), (90, 80, 70)]
    indexes = np.array([[0, 1, 2, 3], [3, 2, 1, 0]], dtype=np.uint8)
    image = Image.fromarray(indexes, "P")
    image.putpalette([c for rgb in palette for c in rgb])
    want = np.array(palette, dtype=np.uint8)[indexes]
    plain, transparent = io.BytesIO(), io.BytesIO()
    image.save(plain, "PNG")
    image.save(transparent, "PNG", transparency=2)  # index 2 is see-through: composited on white
    assert (np.asarray(decode(plain.getvalue())) == want).all()
    want[indexes == 2] = 255
    assert (np.asarray(decode(transparent.getvalue())) == want).all()


def test_partial_alpha_is_composited_on_white() -> None:
    rgba = np.array([[(0, 0, 0, 0), (0, 0, 0, 255), (100, 0, 200, 128), (250, 250, 250, 64)]], dtype=np.uint8)
    alpha = rgba[..., 3:].astype(np.float64) / 255
    want = rgba[..., :3] * alpha + 255 * (1 - alpha)
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, "PNG")
    assert np.abs(np.asarray(decode(buf.getvalue())).astype(float) - want).max() <= 1


@pytest.mark.parametrize("fmt,kw", [("GIF", {}), ("PNG", {}), ("WEBP", {"lossless": True}), ("TIFF", {})])
def test_animated_image_gives_its_first_frame(fmt: str, kw: dict) -> None:
    colours = [(250, 0, 0), (0, 0, 250), (0, 250, 0)]
    frames = [Image.new("RGB", (12, 6), c) for c in colours]
    buf = io.BytesIO()
    frames[0].save(buf, fmt, save_all=True, append_images=frames[1:], duration=100, loop=0, **kw)
    assert Image.open(io.BytesIO(buf.getvalue())).n_frames == 3  # really animated
    rgb = np.asarray(decode(buf.getvalue())).astype(int)
    assert np.abs(rgb - np.array(colours[0])).max() <= 2, rgb[0, 0]


def test_a_run_labels_the_marker_where_it_is_displayed(tmp_path: Path) -> None:
    """End to end: a stage that boxes the red marker sees it, and the export writes it, in the displayed frame."""
    stored = np.full((16, 32, 3), 255, dtype=np.uint8)
    stored[:8, :8] = (255, 0, 0)  # red in the stored top-left block
    (tmp_path / "in").mkdir()
    for orientation in DISPLAYED:
        (tmp_path / "in" / f"o{orientation}.jpg").write_bytes(jpeg_with_orientation(stored, orientation))
    pipeline = Pipeline.from_dict({
        "ontology": ["marker"],
        "stages": [{"type": "probes:MarkerBox", "label": "marker"}],
        "exports": [{"format": "coco"}],
    })
    assert pipeline.run(tmp_path / "in", tmp_path / "out").counts["labeled"] == 8
    coco = json.loads((tmp_path / "out" / "coco.json").read_text())
    names = {im["id"]: im["file_name"] for im in coco["images"]}
    boxes = {names[a["image_id"]]: a["bbox"] for a in coco["annotations"]}
    for orientation, show in DISPLAYED.items():
        shown = show(stored)
        rows, cols = np.nonzero((shown[..., 1] < 128) & (shown[..., 0] > 128))
        want = [cols.min(), rows.min(), cols.max() + 1 - cols.min(), rows.max() + 1 - rows.min()]
        assert boxes[f"o{orientation}.jpg"] == pytest.approx(want, abs=1), orientation
