"""YOLO exports, read back by an independent parser of the Ultralytics layout written here from its docs.

Ultralytics finds an image's labels by replacing the last ``/images/`` of its path with ``/labels/`` and its
suffix with ``.txt``; each line is ``class cx cy w h`` (detect) or ``class x1 y1 x2 y2 ...`` (segment), normalised.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from PIL import Image
from plugins import export_pipeline, make_export_images

from autolabel import Pipeline
from autolabel.config import ExportSpec, parse
from autolabel.errors import AutolabelError
from autolabel.exports import write_export
from autolabel.exports.geometry import join_parts, mask_polygons
from autolabel.exports.yolo import split_of
from autolabel.store import Store

SIZES = {"rotated.jpg": (40, 80), "square.png": (64, 64), "sub/tall.png": (30, 50), "wide.png": (96, 48)}
IMAGE_SUFFIXES = {".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp"}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("yolo")
    make_export_images(root / "in")
    Pipeline.from_dict(export_pipeline()).run(input=root / "in", output=root / "out")
    return root / "out"


def export(out: Path, **options: object) -> Path:
    with Store(out) as store:
        return Path(write_export(store, parse(export_pipeline()), ExportSpec(format="yolo", **options), out)[0])


def read_dataset(root: Path) -> dict[str, dict[str, list[list[float]]]]:
    """Parse a YOLO dataset the way Ultralytics does: split → image file → label rows (class, then numbers)."""
    data = yaml.safe_load((root / "data.yaml").read_text())
    assert "path" not in data  # resolved against data.yaml's folder
    names = data["names"]
    assert data["nc"] == len(names) and sorted(names) == list(range(len(names)))
    out: dict[str, dict[str, list[list[float]]]] = {}
    for split in ("train", "val", "test"):
        if split not in data:
            continue
        folder = root / data[split]
        out[split] = {}
        for image in sorted(folder.iterdir()):
            assert image.suffix.lower() in IMAGE_SUFFIXES
            text = str(image)
            label = "/labels/".join(text.rsplit("/images/", 1)).rsplit(".", 1)[0] + ".txt"
            rows = [[float(v) for v in line.split()] for line in Path(label).read_text().splitlines()]
            for row in rows:
                assert row[0] == int(row[0]) and 0 <= row[0] < len(names)
                assert all(0.0 <= v <= 1.0 for v in row[1:])
            out[split][image.name] = rows
    return out


def test_detect_labels_are_normalised_boxes(run: Path) -> None:
    root = export(run, path="det")
    dataset = read_dataset(root)
    files = {name: rows for split in dataset.values() for name, rows in split.items()}
    assert sorted(files) == ["rotated.jpg", "square.png", "sub__tall.png", "wide.png"]
    for name, rows in files.items():
        assert all(len(r) == 5 for r in rows)
        w, h = SIZES[name.replace("__", "/")]
        center, cat, dog, text = rows  # the dropped box is not there
        assert center == [0, 0.5, 0.5, 0.5, 0.5]
        assert cat[0] == 0 and dog[0] == 1 and text[0] == 2
        x1, y1, x2, y2 = w // 8, h // 8, w * 7 // 8, h * 7 // 8
        assert cat[1:] == pytest.approx([(x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h], abs=1e-6)


def test_split_is_seeded_by_content_hash(run: Path, tmp_path: Path) -> None:
    dataset = read_dataset(export(run, path="split"))
    with Store(run) as store:
        hashes = {r["rel_path"].replace("/", "__"): r["sha256"] for r in store.images(labels=False)}
    for split, files in dataset.items():
        for name in files:
            assert split_of(hashes[name], {"train": 0.8, "val": 0.2}, 0) == split
    again = read_dataset(export(run, path="split"))
    assert {s: sorted(f) for s, f in again.items()} == {s: sorted(f) for s, f in dataset.items()}
    three = read_dataset(export(run, path="split3", split={"train": 0.5, "val": 0.25, "test": 0.25}, seed=3))
    assert sorted(three) == ["test", "train", "val"]
    assert sum(len(f) for f in three.values()) == len(SIZES)


def test_split_of_is_deterministic_and_follows_fractions() -> None:
    keys = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(2000)]
    splits = [split_of(k, {"train": 0.8, "val": 0.2}, seed=0) for k in keys]
    assert splits == [split_of(k, {"train": 0.8, "val": 0.2}, seed=0) for k in keys]
    assert 0.77 < splits.count("train") / len(splits) < 0.83
    assert splits != [split_of(k, {"train": 0.8, "val": 0.2}, seed=1) for k in keys]


def test_identical_images_land_in_the_same_split(tmp_path: Path) -> None:
    make_export_images(tmp_path / "in")
    for i in range(6):
        shutil.copy(tmp_path / "in" / "square.png", tmp_path / "in" / f"copy{i}.png")
    Pipeline.from_dict(export_pipeline()).run(input=tmp_path / "in", output=tmp_path / "out")
    dataset = read_dataset(export(tmp_path / "out", split={"train": 0.5, "val": 0.5}))
    homes = {split for split, files in dataset.items() for name in files if name.startswith(("copy", "square"))}
    assert len(homes) == 1


def test_exif_rotated_source_is_written_upright_and_others_linked(run: Path) -> None:
    root = export(run, path="linked", images="symlink")
    found = {p.name: p for p in root.glob("images/*/*")}
    rotated = found["rotated.jpg"]
    assert not rotated.is_symlink()
    with Image.open(rotated) as image:
        assert image.size == SIZES["rotated.jpg"]  # the displayed size, what the labels are normalised to
        assert image.getexif().get(0x0112, 1) == 1
        pixels = np.asarray(image.convert("RGB"), dtype=np.int32)
    top, bottom = pixels[:40].mean(axis=(0, 1)), pixels[40:].mean(axis=(0, 1))
    assert top[0] > 200 > top[2] and bottom[2] > 200 > bottom[0]  # red on top: turned the right way
    for name in ("square.png", "wide.png", "sub__tall.png"):
        assert found[name].is_symlink()
        assert os.readlink(found[name]) == str(run.parent / "in" / name.replace("__", "/"))


def test_copy_mode_copies_bytes(run: Path) -> None:
    root = export(run, path="copied", images="copy")
    square = next(root.glob("images/*/square.png"))
    assert not square.is_symlink()
    assert square.read_bytes() == (run.parent / "in" / "square.png").read_bytes()


def test_segment_lines_keep_every_mask_part(run: Path) -> None:
    dataset = read_dataset(export(run, path="seg", task="segment"))
    files = {name: rows for split in dataset.values() for name, rows in split.items()}
    for name, rows in files.items():
        w, h = SIZES[name.replace("__", "/")]
        center, cat, dog, text = rows
        assert center[1:] == pytest.approx([0.25, 0.25, 0.75, 0.25, 0.75, 0.75, 0.25, 0.75])  # box as polygon
        assert dog[1:] == pytest.approx(
            [w * 4 // 8 / w, h // 8 / h, w * 7 // 8 / w, h * 7 // 8 / h, w // 8 / w, h * 7 // 8 / h], abs=1e-6
        )
        # the two-part mask as one polygon, filled the way Ultralytics' polygon2mask fills it (int32, fillPoly)
        points = (np.array(cat[1:]).reshape(-1, 2) * [w, h]).astype(np.int32)
        drawn = np.zeros((h, w), np.uint8)
        cv2.fillPoly(drawn, [points], 1)
        truth = np.zeros((h, w), np.uint8)
        truth[h // 8 : h * 3 // 8, w // 8 : w * 3 // 8] = 1
        truth[h * 5 // 8 : h * 7 // 8, w * 5 // 8 : w * 7 // 8] = 1
        iou = (drawn & truth).sum() / (drawn | truth).sum()
        assert iou > 0.9, (name, iou)  # the only extra pixels: the bridge, drawn one pixel wide
        assert drawn[h // 4, w // 4] and drawn[h * 3 // 4, w * 3 // 4] and not drawn[h // 2, w * 3 // 4 + 1]


def test_join_parts_bridges_have_no_area() -> None:
    a = np.array([[0, 0], [2, 0], [2, 2], [0, 2]], float)
    parts = [a, a + [5, 0], a + [10, 0]]
    joined = join_parts(parts)
    area = lambda p: 0.5 * abs(np.dot(p[:, 0], np.roll(p[:, 1], -1)) - np.dot(p[:, 1], np.roll(p[:, 0], -1)))  # noqa: E731
    assert area(joined) == pytest.approx(12.0)  # three 2x2 squares, nothing for the bridges
    assert {tuple(p) for p in joined} == {tuple(p) for part in parts for p in part}
    assert np.array_equal(join_parts([a]), a)


def test_mask_polygons_one_per_part_largest_first() -> None:
    mask = np.zeros((10, 10), bool)
    mask[1:4, 1:4] = True
    mask[5:9, 4:9] = True
    mask[0, 9] = True  # one pixel: its square, not lost
    parts = mask_polygons(mask)
    assert [p.tolist() for p in parts] == [
        [[4.5, 5.5], [4.5, 8.5], [8.5, 8.5], [8.5, 5.5]],
        [[1.5, 1.5], [1.5, 3.5], [3.5, 3.5], [3.5, 1.5]],
        [[9.0, 0.0], [10.0, 0.0], [10.0, 1.0], [9.0, 1.0]],
    ]
    assert mask_polygons(np.zeros((4, 4), bool)) == []


def test_missing_source_is_a_clear_error_and_keeps_the_previous_export(run: Path) -> None:
    root = export(run, path="keep", images="copy")
    before = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    source = run.parent / "in" / "wide.png"
    os.rename(source, source.with_suffix(".moved"))
    try:
        with pytest.raises(AutolabelError) as err:
            export(run, path="keep", images="copy")
    finally:
        os.rename(source.with_suffix(".moved"), source)
    message = str(err.value)
    assert message.startswith("wide.png: source image ") and "is missing (moved or deleted since the run?)" in message
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*")) == before
    assert not [p for p in os.listdir(run) if p.startswith(".keep")]


def test_changed_source_is_a_clear_error(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    make_export_images(tmp_path / "in")
    Pipeline.from_dict(export_pipeline()).run(input=tmp_path / "in", output=out)
    Image.new("RGB", (64, 64), (1, 2, 3)).save(tmp_path / "in" / "square.png")
    with pytest.raises(AutolabelError, match=r"square.png: source image .* changed since the run \(its content"):
        export(out, images="copy")
    Image.new("RGB", (10, 10), (1, 2, 3)).save(tmp_path / "in" / "square.png")
    with pytest.raises(AutolabelError, match=r"changed since the run \(its size is 10x10, the run saw 64x64\)"):
        export(out, images="symlink")


def test_refuses_to_replace_a_folder_it_did_not_write(run: Path) -> None:
    (run / "mine").mkdir()
    (run / "mine" / "notes.txt").write_text("precious")
    with pytest.raises(AutolabelError, match="exists and is not an autolabel YOLO export"):
        export(run, path="mine")
    assert (run / "mine" / "notes.txt").read_text() == "precious"


def test_empty_store_is_a_clear_error(tmp_path: Path) -> None:
    with Store(tmp_path) as store, pytest.raises(AutolabelError, match="no labeled images in the store"):
        write_export(store, parse(export_pipeline()), ExportSpec(format="yolo"), tmp_path)
    assert not (tmp_path / "yolo").exists()


def test_sources_behind_urls_are_copied(tmp_path: Path) -> None:
    import fsspec

    make_export_images(tmp_path / "in")
    fs = fsspec.filesystem("memory")
    root = f"/export-yolo-{tmp_path.name}"
    for path in (tmp_path / "in").rglob("*.*"):
        fs.pipe(f"{root}/{path.relative_to(tmp_path / 'in').as_posix()}", path.read_bytes())
    Pipeline.from_dict(export_pipeline()).run("memory://" + root, tmp_path / "out")
    dataset = export(tmp_path / "out", images="symlink")
    images = {p.name: p for p in dataset.glob("images/*/*")}
    assert sorted(images) == ["rotated.jpg", "square.png", "sub__tall.png", "wide.png"]
    assert not any(p.is_symlink() for p in images.values())
    assert images["square.png"].read_bytes() == (tmp_path / "in" / "square.png").read_bytes()
    with Image.open(images["rotated.jpg"]) as upright:
        assert upright.size == SIZES["rotated.jpg"]
    fs.rm(root, recursive=True)


def test_png_orientation_after_its_pixels_is_honoured(tmp_path: Path) -> None:
    """A PNG may carry its eXIf chunk after the pixel data; the run applies it, so the export must too."""
    import io

    stored = np.zeros((20, 30, 3), np.uint8)
    stored[:, :15] = (255, 0, 0)
    stored[:, 15:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 3  # rotated 180°
    buffer = io.BytesIO()
    Image.fromarray(stored).save(buffer, "PNG", exif=exif)
    data, chunks, at = buffer.getvalue(), [], 8
    while at < len(data):
        length = int.from_bytes(data[at : at + 4], "big")
        chunks.append(data[at : at + 12 + length])
        at += 12 + length
    kinds = [c[4:8] for c in chunks]
    assert kinds == [b"IHDR", b"eXIf", b"IDAT", b"IEND"]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "flipped.png").write_bytes(data[:8] + chunks[0] + chunks[2] + chunks[1] + chunks[3])
    with Image.open(tmp_path / "in" / "flipped.png") as probe:
        assert "exif" not in probe.info  # not visible before the pixels are read
    Pipeline.from_dict(export_pipeline()).run(input=tmp_path / "in", output=tmp_path / "out")
    written = next(export(tmp_path / "out", images="symlink").glob("images/*/flipped.png"))
    assert not written.is_symlink()
    with Image.open(written) as image:
        pixels = np.asarray(image.convert("RGB"))
    assert tuple(pixels[0, 0]) == (0, 0, 255) and tuple(pixels[0, -1]) == (255, 0, 0)  # turned upright


def test_two_images_of_one_name_get_distinct_files(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    Image.new("RGB", (20, 20), (9, 9, 9)).save(tmp_path / "in" / "a.png")
    Image.new("RGB", (30, 20), (9, 9, 9)).save(tmp_path / "in" / "a.jpg")
    Pipeline.from_dict(export_pipeline()).run(input=tmp_path / "in", output=tmp_path / "out")
    dataset = read_dataset(export(tmp_path / "out", split={"train": 1.0}))
    assert sorted(dataset["train"]) == ["a.jpg", "a__id2.png"]  # ids in discovery order: a.jpg, then a.png
    assert [len(rows) for _, rows in sorted(dataset["train"].items())] == [4, 4]
