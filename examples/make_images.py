"""Render the example images in examples/images/ (our own work, CC0: see examples/LICENSE).

    python examples/make_images.py

Deterministic: text on simple scenes, one stored sideways with an EXIF orientation tag (displayed upright),
one non-square. Pillow's bundled font, so no system fonts are needed.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

OUT = Path(__file__).resolve().parent / "images"


def sign(text: str, size: tuple[int, int], colour: tuple[int, int, int]) -> Image.Image:
    image = Image.new("RGB", size, (235, 235, 228))
    draw = ImageDraw.Draw(image)
    w, h = size
    draw.rectangle([w * 0.08, h * 0.25, w * 0.92, h * 0.75], fill=colour, outline=(30, 30, 30), width=4)
    font = ImageFont.load_default(size=int(h * 0.16))
    box = draw.textbbox((0, 0), text, font=font)
    tw, th = box[2] - box[0], box[3] - box[1]
    draw.text(((w - tw) / 2 - box[0], (h - th) / 2 - box[1]), text, fill=(255, 255, 255), font=font)
    draw.ellipse([w * 0.02, h * 0.80, w * 0.12, h * 0.98], fill=(90, 140, 60))
    return image


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    sign("OPEN 24 HOURS", (640, 360), (180, 40, 40)).save(OUT / "shop_sign.jpg", quality=92)
    sign("EXIT", (320, 320), (30, 120, 60)).save(OUT / "exit_sign.png")
    # stored rotated 90° clockwise with EXIF orientation 6: viewers (and autolabel) show it upright, 300x480
    upright = sign("PLATFORM 2", (480, 300), (40, 60, 160))
    exif = Image.Exif()
    exif[0x0112] = 6
    upright.transpose(Image.Transpose.ROTATE_90).save(OUT / "platform_sideways.jpg", quality=92, exif=exif.tobytes())


if __name__ == "__main__":
    main()
