"""YOLO exports, read back by an independent parser of the Ultralytics layout written here from its docs.

Ultralytics finds an image's labels by replacing the last ``/images/`` of its path with ``/labels/`` and its
suffix with ``.txt``; each line is ``class cx cy w h`` (detect) or ``class x1 y1 x2 y2 ...`` (segment), normalised.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from PIL import Image
from pycocotools import mask as mask_utils
from plugins import export_pipeline, make_export_images
from test_export_fastpaths import png_chunks

from autolabel import Pipeline
from autolabel.config import ExportSpec, parse
from autolabel.errors import AutolabelError
from autolabel.exports import write_export, yolo
from autolabel.geometry import join_parts, mask_polygons
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


@contextlib.contextmanager
def moved_aside(source: Path) -> Iterator[None]:
    """The source image is missing while inside (renamed beside itself), and back afterwards whatever happened."""
    os.rename(source, source.with_suffix(".moved"))
    try:
        yield
    finally:
        os.rename(source.with_suffix(".moved"), source)


def test_missing_source_is_a_clear_error_and_keeps_the_previous_export(run: Path) -> None:
    root = export(run, path="keep", images="copy")
    before = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    source = run.parent / "in" / "wide.png"
    with moved_aside(source), pytest.raises(AutolabelError) as err:
        export(run, path="keep", images="copy")
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


# --- pixels a trainer loads: every EXIF orientation, PNG and JPEG, linked or copied -----------------------------------

def blocks() -> np.ndarray:
    """24x16 stored pixels in six flat 8x8 blocks of distinct colours: any turn or mirror of it shows."""
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255)]
    pixels = np.zeros((16, 24, 3), np.uint8)
    for k, colour in enumerate(colours):
        pixels[(k // 3) * 8 : (k // 3) * 8 + 8, (k % 3) * 8 : (k % 3) * 8 + 8] = colour
    return pixels


@pytest.fixture(scope="module")
def oriented(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run over one PNG (eXIf before the pixels) and one JPEG per EXIF orientation 1..8, a GIF, and a PNG whose
    eXIf chunk lies after IEND (not part of the image: the run saw it unrotated)."""
    from PIL import ImageOps

    root = tmp_path_factory.mktemp("oriented")
    (root / "in").mkdir()
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        Image.fromarray(blocks()).save(root / "in" / f"o{orientation}_png.png", exif=exif)
        Image.fromarray(blocks()).save(root / "in" / f"o{orientation}_jpg.jpg", quality=95, subsampling=0, exif=exif)
        with Image.open(root / "in" / f"o{orientation}_png.png") as image:
            assert ImageOps.exif_transpose(image).size == ((16, 24) if orientation >= 5 else (24, 16))
    Image.fromarray(blocks()).save(root / "in" / "still.gif")
    plain = io.BytesIO()
    Image.fromarray(blocks()).save(plain, "PNG")
    exif = Image.Exif()
    exif[0x0112] = 6
    tagged = io.BytesIO()
    Image.fromarray(blocks()).save(tagged, "PNG", exif=exif)
    chunk = next(c for c in png_chunks(tagged.getvalue()) if c[4:8] == b"eXIf")
    (root / "in" / "trailing.png").write_bytes(plain.getvalue() + chunk)
    Pipeline.from_dict(export_pipeline()).run(input=root / "in", output=root / "out")
    return root


def upright(path: Path) -> np.ndarray:
    from PIL import ImageOps

    with Image.open(path) as image:
        return np.asarray(ImageOps.exif_transpose(image).convert("RGB"), dtype=np.int32)


@pytest.mark.parametrize("images", ["symlink", "copy"])
def test_every_orientation_is_written_as_the_run_saw_it(oriented: Path, images: str) -> None:
    root = export(oriented / "out", path=f"o_{images}", images=images, split={"train": 1.0})
    written = {p.name: p for p in (root / "images" / "train").iterdir()}
    assert sorted(written) == sorted([f"o{k}_{s}.{s}" for k in range(1, 9) for s in ("png", "jpg")]
                                     + ["still.png", "trailing.png"])
    for name, path in written.items():
        source = oriented / "in" / ("still.gif" if name == "still.png" else name)
        expected = upright(source)
        with Image.open(path) as image:
            assert image.getexif().get(0x0112, 1) == 1 or name in ("o1_png.png", "o1_jpg.jpg"), name
            assert image.format == ("JPEG" if name.endswith(".jpg") else "PNG"), name  # what its suffix says
            pixels = np.asarray(image.convert("RGB"), dtype=np.int32)
        assert pixels.shape == expected.shape, name
        if name.endswith(".jpg"):  # a JPEG encoded again (chroma subsampled): each block's colour, at its centre
            centres = np.ix_(range(4, pixels.shape[0], 8), range(4, pixels.shape[1], 8))
            assert np.array_equal(pixels[centres] > 127, expected[centres] > 127), name
        else:
            assert np.array_equal(pixels, expected), name
        as_is = name in ("o1_png.png", "o1_jpg.jpg", "trailing.png")  # nothing to turn: the source itself
        assert path.is_symlink() == (as_is and images == "symlink"), name
        if as_is and images == "copy":
            assert path.read_bytes() == source.read_bytes(), name
        rows = [line.split() for line in (root / "labels" / "train" / (path.stem + ".txt")).read_text().splitlines()]
        assert rows[0] == ["0", "0.500000", "0.500000", "0.500000", "0.500000"]  # CenterBox, in the displayed frame


def test_png_chunks_after_iend_are_not_the_images() -> None:
    from autolabel.exports.yolo import _png_chunk

    exif = Image.Exif()
    exif[0x0112] = 8
    tagged, plain = io.BytesIO(), io.BytesIO()
    Image.fromarray(blocks()).save(tagged, "PNG", exif=exif)
    Image.fromarray(blocks()).save(plain, "PNG")
    chunk = next(c for c in png_chunks(tagged.getvalue()) if c[4:8] == b"eXIf")
    assert _png_chunk(io.BytesIO(tagged.getvalue()), b"eXIf") == chunk[8:-4]
    assert _png_chunk(io.BytesIO(plain.getvalue() + chunk), b"eXIf") is None
    assert _png_chunk(io.BytesIO(plain.getvalue()[:-7]), b"eXIf") is None  # truncated: a short chunk header


def test_missing_source_is_a_clear_error_when_linking_too(run: Path) -> None:
    source = run.parent / "in" / "sub" / "tall.png"
    with moved_aside(source), pytest.raises(AutolabelError) as err:
        export(run, path="missing_link", images="symlink")
    assert str(err.value) == (f"sub/tall.png: source image {source} is missing (moved or deleted since the run?); "
                              "put it back, or run the pipeline again on its new location")
    assert not (run / "missing_link").exists()


# --- the dataset folder from hand-made rows (write_dataset: what the export and `autolabel pull` share) -------------

def shape_row(id_: int, rel_path: str, shapes: list, width: int = 20, height: int = 10) -> "yolo.ShapeRow":
    return yolo.ShapeRow(id_, f"/in/{rel_path}", rel_path, f"sha{id_}", width, height, shapes)


def test_label_lines_exactly() -> None:
    box = yolo.Shape(0, 1, (2.0, 1.0, 12.0, 6.0), None, None)
    tri = yolo.Shape(1, 0, (0.0, 0.0, 20.0, 10.0), None, [[0.0, 0.0], [20.0, 0.0], [10.0, 10.0]])
    mask = np.zeros((10, 20), bool)
    mask[2:5, 3:7] = True
    coded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    masked = yolo.Shape(2, 2, (3.0, 2.0, 7.0, 5.0), {"size": coded["size"], "counts": coded["counts"].decode()},
                        [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    row = shape_row(1, "a.png", [box, tri, masked])
    assert yolo.label_text(row, "detect") == (
        "1 0.350000 0.350000 0.500000 0.500000\n0 0.500000 0.500000 1.000000 1.000000\n"
        "2 0.250000 0.350000 0.200000 0.300000\n")
    assert yolo.label_text(row, "segment") == (
        "1 0.100000 0.100000 0.600000 0.100000 0.600000 0.600000 0.100000 0.600000\n"  # the box's corners
        "0 0.000000 0.000000 1.000000 0.000000 0.500000 1.000000\n"  # the polygon
        "2 0.175000 0.250000 0.175000 0.450000 0.325000 0.450000 0.325000 0.250000\n")  # the mask, not the polygon
    empty = shape_row(2, "b.png", [])
    assert yolo.label_text(empty, "segment") == yolo.label_text(empty, "detect") == ""


def test_names_suffixes_and_collisions(tmp_path: Path) -> None:
    assert yolo.image_name("/a/b\\c/d.png") == "a__b__c__d.png"
    assert yolo._stem_suffix("x/a.b.jpg") == ("a.b", ".jpg")
    assert yolo._stem_suffix("x/.hidden") == (".hidden", "") and yolo._stem_suffix("a.") == ("a.", "")
    box = [yolo.Shape(0, 0, (0.0, 0.0, 10.0, 10.0), None, None)]
    rows = [shape_row(1, "p/q.png", box), shape_row(2, "p__q.png", box), shape_row(3, "scan.gif", []),
            shape_row(4, "notes", box)]
    placed: list[tuple[int, str]] = []
    ontology = parse(export_pipeline()).ontology
    paths = yolo.write_dataset(rows, ontology, tmp_path / "ds", "detect", {"train": 1.0}, 0,
                               place=lambda row, target: placed.append((row.id, target)))
    assert paths == [str(tmp_path / "ds")]
    names = [os.path.basename(target) for _, target in placed]
    assert names == ["p__q.png", "p__q__id2.png", "scan.png", "notes.png"]  # a GIF, no suffix: PNG
    assert all(target.startswith(str(tmp_path / ".ds.")) for _, target in placed)  # built aside
    labels = tmp_path / "ds" / "labels" / "train"
    assert sorted(p.name for p in labels.iterdir()) == ["notes.txt", "p__q.txt", "p__q__id2.txt", "scan.txt"]
    assert (labels / "scan.txt").read_text() == "" and (labels / "p__q__id2.txt").read_text().startswith("0 0.25")
    data = yaml.safe_load((tmp_path / "ds" / "data.yaml").read_text())
    assert data == {"train": "images/train", "val": "images/train", "nc": 3, "names": {0: "cat", 1: "dog", 2: "text"}}
    assert (tmp_path / "ds" / "data.yaml").read_text().startswith(
        "# autolabel YOLO export (Ultralytics layout, task: detect)")
    with pytest.raises(AutolabelError, match=r"p__q.png: two images map to the file name 'p__q' in split 'train'"):
        yolo.write_dataset([rows[0], shape_row(9, "p__q__id5.png", box), shape_row(5, "p__q.png", box)], ontology,
                           tmp_path / "ds", "detect",
                           {"train": 1.0}, 0, place=lambda row, target: None)
    assert sorted(p.name for p in labels.iterdir()) == ["notes.txt", "p__q.txt", "p__q__id2.txt", "scan.txt"]


def test_replacing_an_export_removes_leftovers_and_refuses_strangers(tmp_path: Path) -> None:
    ontology = parse(export_pipeline()).ontology
    rows = [shape_row(1, "a.png", [])]
    (tmp_path / "empty").mkdir()
    yolo.write_dataset(rows, ontology, tmp_path / "empty", "segment", {"train": 0.5, "val": 0.5}, 0,
                       place=lambda row, target: None)  # an empty folder may be filled
    assert "task: segment" in (tmp_path / "empty" / "data.yaml").read_text()
    for leftover in (".empty.1234.tmp", ".empty.old-abcd"):
        (tmp_path / leftover).mkdir()
    (tmp_path / ".other.1234.tmp").mkdir()
    yolo.write_dataset(rows, ontology, tmp_path / "empty", "detect", {"train": 1.0}, 0, place=lambda row, t: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.1234.tmp", "empty"]
    (tmp_path / "file").write_text("x")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "data.yaml").write_text("names: [a]\n")
    for target in ("file", "foreign"):
        with pytest.raises(AutolabelError, match=f"{target}: exists and is not an autolabel YOLO export; choose"):
            yolo.write_dataset(rows, ontology, tmp_path / target, "detect", {"train": 1.0}, 0,
                               place=lambda row, t: None)
    assert (tmp_path / "file").read_text() == "x" and (tmp_path / "foreign" / "data.yaml").is_file()
    nested = tmp_path / "new" / "deeper" / "ds"
    yolo.write_dataset(rows, ontology, nested, "detect", {"train": 1.0}, 0, place=lambda row, t: None)
    assert (nested / "data.yaml").is_file()


def test_write_yolo_defaults(run: Path) -> None:
    """Called with no options: detect lines, 80/20 by content hash with seed 0, images linked, every score and
    flagged box."""
    ontology = parse(export_pipeline()).ontology
    with Store(run) as store:
        assert yolo.write_yolo(store, ontology, run / "dflt") == [str(run / "dflt")]
        yolo.write_yolo(store, ontology, run / "expl", "detect", {"train": 0.8, "val": 0.2}, 0, "symlink", 0.0, True)
    listing = lambda root: sorted(  # noqa: E731
        (str(p.relative_to(root)), p.is_symlink(), p.read_bytes() if p.is_file() else b"") for p in root.rglob("*"))
    assert listing(run / "dflt") == listing(run / "expl")
    dataset = read_dataset(run / "dflt")
    assert sorted(dataset) == ["train", "val"]
    every = [rows for split in dataset.values() for rows in split.values()]
    assert len(every) == len(SIZES) and all(len(rows) == 4 and all(len(r) == 5 for r in rows) for rows in every)
    assert any(p.is_symlink() for p in (run / "dflt").glob("images/*/*"))
