"""``to_rgb`` mode by mode and ``decode``'s exact one-line reasons, by pixel value and by message.
Written to kill what mutation testing found unchecked (BENCHMARKS.md, "Mutation testing")."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from autolabel.intake import decode, to_rgb


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("mode", ["I;16", "I;16L", "I;16B", "I;16N"])
def test_16_bit_modes_are_scaled_onto_8_bits(mode: str) -> None:
    image = Image.new(mode, (3, 1))
    for x, value in enumerate((0, 257 * 100, 65535)):
        image.putpixel((x, 0), value)
    rgb = to_rgb(image)
    assert rgb.mode == "RGB" and [rgb.getpixel((x, 0)) for x in range(3)] == [(0,) * 3, (100,) * 3, (255,) * 3]


@pytest.mark.parametrize(("values", "expected"), [
    ((0, 100, 255), (0, 100, 255)),  # 8-bit data held in a 32-bit mode: kept as is (255 is still 8-bit)
    ((0, 257, 256 * 257), (0, 1, 255)),  # anything above 255 (even 256): a 16-bit range, scaled
    ((0, 128, 256), (0, 0, 1)),
    ((0, 256, 25700), (0, 1, 100)),
])
def test_mode_i_is_scaled_only_when_its_values_leave_the_8_bit_range(values: tuple, expected: tuple) -> None:
    image = Image.fromarray(np.array([values], dtype=np.int32), "I")
    assert [to_rgb(image).getpixel((x, 0))[0] for x in range(3)] == list(expected)


def test_float_mode_is_rounded_and_clipped_not_scaled_or_wrapped() -> None:
    image = Image.fromarray(np.array([[-5.0, 99.6, 256.0, 300.0]], dtype=np.float32), "F")
    assert [to_rgb(image).getpixel((x, 0)) for x in range(4)] == [(0,) * 3, (100,) * 3, (255,) * 3, (255,) * 3]


@pytest.mark.parametrize(("mode", "clear"), [
    ("RGBA", (9, 9, 9, 0)), ("LA", (9, 0)), ("PA", (0, 0)), ("RGBa", (0, 0, 0, 0)),
])  # not "La": Pillow converts it to nothing (and no file decodes to it)
def test_every_alpha_mode_is_composited_on_white(mode: str, clear: tuple) -> None:
    image = Image.new(mode, (2, 1), clear)
    opaque = (7, 7, 7, 255) if len(clear) == 4 else (7, 255)
    if mode == "PA":
        image.putpalette([0, 0, 0, 7, 7, 7])
        opaque = (1, 255)
    image.putpixel((1, 0), opaque)
    rgb = to_rgb(image)
    assert rgb.mode == "RGB" and [rgb.getpixel((x, 0)) for x in range(2)] == [(255, 255, 255), (7, 7, 7)]


def test_cmyk_and_opaque_palette_are_converted() -> None:
    assert to_rgb(Image.new("CMYK", (1, 1), (0, 255, 255, 0))).getpixel((0, 0)) == (255, 0, 0)
    palette = Image.new("P", (1, 1), 1)
    palette.putpalette([0, 0, 0, 10, 20, 30])
    assert to_rgb(palette).getpixel((0, 0)) == (10, 20, 30)


def test_the_pixel_limit_is_inclusive_and_its_message_names_the_numbers() -> None:
    data = _png(Image.new("RGB", (10, 10)))
    assert decode(data, max_pixels=100).size == (10, 10)
    with pytest.raises(ValueError) as err:
        decode(data, max_pixels=99)
    assert str(err.value) == ("too large: 10x10 = 100 pixels exceeds max_image_pixels 99 "
                              "(raise it in the pipeline file if the image is genuine)")


def test_pillows_own_bomb_guard_becomes_a_one_line_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 60)  # warns over 60 pixels, refuses over 120
    for side in (10, 20):  # the warning (made an error) and Pillow's own error
        with pytest.raises(ValueError, match=r"^too large \(decompression-bomb guard\): Image size \(\d+ pixels\)"):
            decode(_png(Image.new("RGB", (side, side))))


def test_corrupt_and_truncated_data_get_their_own_reasons() -> None:
    rng = np.random.default_rng(0)
    png = bytearray(_png(Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))))
    with pytest.raises(ValueError) as err:
        decode(bytes(png[: len(png) // 2]))
    assert str(err.value) == "truncated or corrupt image data (image file is truncated)"
    at = png.index(b"IDAT") + 100
    png[at:at + 20] = bytes(b ^ 0x55 for b in png[at:at + 20])
    with pytest.raises(ValueError) as err:
        decode(bytes(png))
    assert str(err.value) == "corrupt image (broken data stream when reading image file)"


@pytest.mark.parametrize(("mode", "key", "other"), [("RGB", (255, 0, 255), (1, 2, 3)), ("L", 7, 9), ("P", 0, 1)])
def test_a_transparent_colour_key_is_white_in_every_mode(mode: str, key: object, other: object) -> None:
    image = Image.new(mode, (2, 1), key)
    if mode == "P":
        image.putpalette([255, 0, 255, 1, 2, 3])
    image.putpixel((1, 0), other)
    buf = io.BytesIO()
    image.save(buf, "PNG", transparency=key)  # a tRNS chunk: the key colour is fully transparent
    rgb = decode(buf.getvalue())
    expected_other = {"RGB": (1, 2, 3), "L": (9, 9, 9), "P": (1, 2, 3)}[mode]
    assert [rgb.getpixel((x, 0)) for x in range(2)] == [(255, 255, 255), expected_other]
