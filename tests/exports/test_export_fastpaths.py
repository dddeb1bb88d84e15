"""The YOLO export's fast paths give what the general ones give: box geometry without the rest of each box
(``image_shapes`` against ``image_row``), the closest-vertex search in plain floats against numpy's argmin, and PNG
headers read past the first block of a file."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import supervision as sv
from PIL import Image
from pycocotools import mask as mask_utils

from autolabel.errors import AutolabelError
from autolabel.geometry import _closest
from autolabel.exports.rows import image_row, image_shapes
from autolabel.exports.yolo import _png_header
from autolabel.labels import Labels
from autolabel.records import to_record

IDS = {"cat": 0, "dog": 1}


def store_row(rng: np.random.Generator, n: int) -> dict:
    """A store row of ``n`` random boxes: some outside the image, every decision, classless and unscored ones,
    masks, polygons and quads."""
    width, height = 60, 40
    x1, y1 = rng.uniform(-20, 70, n), rng.uniform(-20, 50, n)
    xyxy = np.stack([x1, y1, x1 + rng.uniform(-5, 30, n), y1 + rng.uniform(-5, 30, n)], axis=1).astype(np.float32)
    masks = rng.random((n, height, width)) < 0.1
    polygon = np.empty(n, dtype=object)
    polygon[:] = [rng.uniform(-10, 70, (int(rng.integers(2, 6)), 2)).astype(np.float32) if rng.random() < 0.5
                  else None for _ in range(n)]
    quad = rng.uniform(-10, 70, (n, 8)).astype(np.float32)
    quad[rng.random(n) < 0.5] = np.nan
    confidence = rng.uniform(0, 1, n).astype(np.float32)
    confidence[rng.random(n) < 0.2] = np.nan
    det = sv.Detections(xyxy=xyxy, mask=masks if rng.random() < 0.7 else None, confidence=confidence, data={
        "class_name": np.array(rng.choice(["cat", "dog", ""], n), dtype=object),
        "status": np.array(rng.choice(["kept", "flagged", "dropped"], n), dtype=object),
        "polygon": polygon, "quad": quad,
    })
    labels = Labels(width=width, height=height)
    labels.add(det, stage="s", provenance={"model": "m"})
    return {"id": 3, "path": "/data/a.png", "rel_path": "a.png", "sha256": "ab", "width": width, "height": height,
            "labels": to_record(labels)}


@pytest.mark.parametrize("seed", range(3))
def test_shapes_are_the_geometry_of_image_rows(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(30):
        row = store_row(rng, int(rng.integers(0, 12)))
        for options in ({}, {"min_score": 0.5}, {"flagged": False}):
            full, shapes = image_row(row, IDS, **options), image_shapes(row, IDS, **options)
            assert [(a.index, a.category, a.xyxy, a.rle, a.polygon) for a in full.annotations] == \
                [tuple(s) for s in shapes.annotations]
            assert (shapes.id, shapes.path, shapes.rel_path, shapes.sha256, shapes.width, shapes.height) == \
                (full.id, full.path, full.rel_path, full.sha256, full.width, full.height)
    assert any(s.rle is not None for s in image_shapes(store_row(np.random.default_rng(0), 12), IDS).annotations)


def test_shapes_refuse_a_class_the_ontology_lost_as_image_rows_do() -> None:
    row = store_row(np.random.default_rng(1), 5)
    row["labels"]["boxes"]["data"]["class_name"][2] = "horse"
    with pytest.raises(AutolabelError) as full:
        image_row(row, IDS)
    with pytest.raises(AutolabelError) as shapes:
        image_shapes(row, IDS)
    assert str(shapes.value) == str(full.value)


def test_closest_vertices_in_plain_floats_equal_numpy_argmin() -> None:
    rng = np.random.default_rng(0)
    for _ in range(3000):
        n, m = (int(v) for v in rng.integers(1, 17, 2))
        grid = rng.random() < 0.5  # half-pixel grids: many ties, the first in row-major order must win
        a = rng.integers(0, 6, (n, 2)) + 0.5 if grid else rng.uniform(0, 1000, (n, 2))
        b = rng.integers(0, 6, (m, 2)) + 0.5 if grid else rng.uniform(0, 1000, (m, 2))
        d = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        assert _closest(a, b) == tuple(int(v) for v in np.unravel_index(int(np.argmin(d)), d.shape))


def png_chunks(data: bytes) -> list[bytes]:
    chunks, at = [], 8
    while at < len(data):
        length = int.from_bytes(data[at : at + 4], "big")
        chunks.append(data[at : at + 12 + length])
        at += 12 + length
    return chunks


def text_chunk(payload: bytes) -> bytes:
    import zlib

    return len(payload).to_bytes(4, "big") + b"tEXt" + payload + zlib.crc32(b"tEXt" + payload).to_bytes(4, "big")


def test_png_header_reads_chunks_past_the_first_block(tmp_path: Path) -> None:
    """Noise pixels make IDAT far longer than the block read first: chunks after it are found by seeking."""
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (70, 90, 3), dtype=np.uint8)).save(
        buffer, "PNG", exif=exif)
    data = buffer.getvalue()
    ihdr, exif_chunk, idat, iend = png_chunks(data)
    assert exif_chunk[4:8] == b"eXIf" and len(idat) > 3 * 4096
    cases = {
        "after.png": (ihdr + idat + exif_chunk + iend, ((90, 70), exif_chunk[8:-4])),
        "none.png": (ihdr + idat + iend, ((90, 70), None)),
        "text.png": (ihdr + idat + text_chunk(b"exif\0" + b"0" * 10) + iend, None),  # PIL reads those
        "other_text.png": (ihdr + text_chunk(b"Comment\0" + b"x" * 5000) + idat + exif_chunk + iend,
                           ((90, 70), exif_chunk[8:-4])),
        "truncated.png": (ihdr + idat[: len(idat) // 2], ((90, 70), None)),
        "not_png.png": (b"GIF89a" + b"\0" * 40, None),
    }
    for name, (body, expected) in cases.items():
        (tmp_path / name).write_bytes(data[:8] + body if body[:3] != b"GIF" else body)
        assert _png_header(str(tmp_path / name)) == expected, name
    assert _png_header(str(tmp_path / "missing.png")) is None
    with Image.open(tmp_path / "after.png") as image:  # the file is a PNG PIL reads, with that size
        assert image.size == (90, 70)


def test_rle_fixture_masks_are_compressed_rle() -> None:
    """The rows above carry masks as the store keeps them (COCO RLE, ``counts`` a str)."""
    row = store_row(np.random.default_rng(0), 12)
    rle = next(s.rle for s in image_shapes(row, IDS).annotations if s.rle is not None)
    assert isinstance(rle["counts"], str)
    assert mask_utils.area({"size": rle["size"], "counts": rle["counts"].encode()}) > 0
