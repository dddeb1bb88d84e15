"""Ground truth read the way each format means it: YOLO's normalised centres scaled by width and height (not the
other way round: the images here are not square), COCO's x-y-width-height, VOC's corners; where images and label
files are looked for; every unreadable file one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from autolabel.quality.gt import GroundTruthError, load_ground_truth, read_coco, read_voc, read_yolo


def image(path: Path, size: tuple[int, int] = (200, 100), orientation: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.new("RGB", size, (40, 80, 120))
    if orientation:
        exif = Image.Exif()
        exif[0x0112] = orientation
        im.save(path, exif=exif)
    else:
        im.save(path)
    return path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# -- YOLO --------------------------------------------------------------------------------------------------------
def test_yolo_boxes_scale_x_by_the_width_and_y_by_the_height(tmp_path: Path) -> None:
    image(tmp_path / "images" / "train" / "wide.png", (200, 100))
    write(tmp_path / "labels" / "train" / "wide.txt", "1 0.25 0.5 0.1 0.4\n\n0 0.5 0.1 1.0 0.2\n")
    gt = read_yolo(write(tmp_path / "data.yaml", "names: [cat, dog]\ntrain: images/train\n"))
    (im,) = gt.images
    assert (gt.format, gt.classes, im.name, im.width, im.height) == ("yolo", ["cat", "dog"], "wide.png", 200, 100)
    np.testing.assert_allclose(im.boxes, [[40, 30, 60, 70], [0, 0, 200, 20]])
    assert im.classes == ["dog", "cat"] and im.segmentations == [None, None] and im.file == tmp_path / (
        "images/train/wide.png")
    assert im.crowd.tolist() == [False, False]
    assert im.texts == ["", ""]  # YOLO has no text: one empty text per box (training reads one per box)


def test_yolo_polygons_are_segmentations_in_pixels_with_their_bounding_box(tmp_path: Path) -> None:
    image(tmp_path / "images" / "tall.png", (50, 200))
    write(tmp_path / "labels" / "tall.txt", "0 0.2 0.1 0.8 0.1 0.6 0.9\n")
    (im,) = read_yolo(write(tmp_path / "data.yaml", "names: {0: leaf}\ntrain: images\n")).images
    assert im.segmentations == [[[10.0, 20.0, 40.0, 20.0, 30.0, 180.0]]]
    np.testing.assert_allclose(im.boxes, [[10, 20, 40, 180]])
    assert im.classes == ["leaf"]
    write(tmp_path / "labels" / "tall.txt", "0 0.2 0.1 0.8 0.1 0.8 0.9 0.2 0.9\n")  # four points: eight values
    (im,) = read_yolo(tmp_path / "data.yaml").images
    assert im.segmentations == [[[10.0, 20.0, 40.0, 20.0, 40.0, 180.0, 10.0, 180.0]]]


def test_an_unreadable_yolo_image_is_one_line_naming_the_data_yaml_and_the_image(tmp_path: Path) -> None:
    write(tmp_path / "images" / "a.png", "not an image")
    data = write(tmp_path / "data.yaml", "names: [cat]\ntrain: images\n")
    with pytest.raises(GroundTruthError, match=f"^--gt {data}: cannot read image {tmp_path / 'images' / 'a.png'} "):
        read_yolo(data)


def test_yolo_sizes_come_from_the_displayed_frame_of_exif_rotated_images(tmp_path: Path) -> None:
    image(tmp_path / "images" / "turned.jpg", (200, 100), orientation=6)  # stored 200x100, displayed 100x200
    write(tmp_path / "labels" / "turned.txt", "0 0.5 0.5 0.2 0.1\n")
    (im,) = read_yolo(write(tmp_path / "data.yaml", "names: [cat]\ntrain: images\n")).images
    assert (im.width, im.height) == (100, 200)
    np.testing.assert_allclose(im.boxes, [[40, 90, 60, 110]])
    image(tmp_path / "images" / "mirrored.jpg", (200, 100), orientation=2)  # mirrored, not turned
    gt = read_yolo(tmp_path / "data.yaml")
    assert [(i.name, i.width, i.height) for i in gt.images] == [("mirrored.jpg", 200, 100), ("turned.jpg", 100, 200)]


def test_yolo_splits_lists_path_and_labels_beside_a_nested_images_folder(tmp_path: Path) -> None:
    root = tmp_path / "set"
    image(root / "images" / "train" / "a" / "one.png")
    image(root / "images" / "val" / "two.png")
    write(root / "images" / "val" / "notes.txt", "not an image suffix: ignored")
    write(root / "labels" / "train" / "a" / "one.txt", "0 0.5 0.5 0.5 0.5\n")
    # no label file for two.png: an image without boxes; val and test the same folder: each image read once
    data = write(tmp_path / "meta" / "data.yaml", "path: ../set\nnames: [cat]\ntrain: [images/train]\n"
                 "val: images/val\ntest: images/val\n")
    gt = read_yolo(data)
    assert [(i.name, len(i.classes)) for i in gt.images] == [("a/one.png", 1), ("two.png", 0)]
    assert gt.images[1].boxes.shape == (0, 4)
    assert load_ground_truth(tmp_path / "meta").format == "yolo"  # a folder holding a data.yaml
    assert load_ground_truth(data).path == str(data)


@pytest.mark.parametrize(("line", "problem"), [
    ("0 0.5 0.5 0.1", "line 2: not a YOLO label line (wrong number of values)"),
    ("0 0.1 0.1 0.2 0.2 0.3", "line 2: not a YOLO label line (wrong number of values)"),
    ("0 0.1 0.1 0.2 0.2 0.3 0.3 0.4 0.4 0.5", "line 2: not a YOLO label line (wrong number of values)"),
    ("7 0.5 0.5 0.1 0.1", "line 2: not a YOLO label line (class 7 not in names)"),
    ("cat 0.5 0.5 0.1 0.1", "line 2: not a YOLO label line (invalid literal for int() with base 10: 'cat')"),
])
def test_a_bad_yolo_line_is_one_line_naming_the_file_and_line(tmp_path: Path, line: str, problem: str) -> None:
    image(tmp_path / "images" / "a.png")
    label = write(tmp_path / "labels" / "a.txt", f"0 0.5 0.5 0.1 0.1\n{line}\n")
    with pytest.raises(GroundTruthError) as err:
        read_yolo(write(tmp_path / "data.yaml", "names: [cat]\ntrain: images\n"))
    assert str(err.value) == f"--gt {label}: {problem}"


@pytest.mark.parametrize(("text", "problem"), [
    ("- just a list\n", "not a YOLO data.yaml (no 'names' key)"),
    ("names: [cat\n", "not a YOLO data.yaml (while parsing a flow sequence"),
    ("names: [cat]\ntrain: nowhere\n", "no images found under its train/val/test folders"),
])
def test_a_bad_data_yaml_is_one_line(tmp_path: Path, text: str, problem: str) -> None:
    data = write(tmp_path / "data.yaml", text)
    with pytest.raises(GroundTruthError) as err:
        read_yolo(data)
    assert str(err.value).startswith(f"--gt {data}: {problem}")
    assert "\n" not in str(err.value)


# -- COCO ---------------------------------------------------------------------------------------------------------
def coco(path: Path, images: list, annotations: list, categories: list | None = None) -> Path:
    return write(path, json.dumps({"images": images, "annotations": annotations,
                                   "categories": categories or [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]}))


def test_coco_boxes_are_x_y_width_height_and_keep_their_segmentation_and_crowd_flag(tmp_path: Path) -> None:
    image(tmp_path / "images" / "a.png")
    path = coco(tmp_path / "gt.json", [{"id": 10, "file_name": "a.png", "width": 200, "height": 100},
                                       {"id": 11, "file_name": "sub\\b.png"}],
                [{"id": 1, "image_id": 10, "category_id": 7, "bbox": [5, 10, 20, 30]},
                 {"id": 2, "image_id": 10, "category_id": 3, "bbox": [0, 0, 4, 2], "iscrowd": 1,
                  "segmentation": {"size": [100, 200], "counts": "abc"}},
                 {"id": 3, "image_id": 10, "category_id": 3, "bbox": [1, 1, 1, 1], "segmentation": []}])
    gt = read_coco(path)
    a, b = gt.images
    assert (gt.format, gt.classes) == ("coco", ["cat", "dog"])
    np.testing.assert_allclose(a.boxes, [[5, 10, 25, 40], [0, 0, 4, 2], [1, 1, 2, 2]])
    assert a.classes == ["dog", "cat", "cat"] and a.crowd.tolist() == [False, True, False]
    assert a.segmentations == [None, {"size": [100, 200], "counts": "abc"}, None]  # an empty one is none
    assert (a.width, a.height, a.file) == (200, 100, tmp_path / "images" / "a.png")  # found under images/
    assert (b.name, b.width, b.height, b.boxes.shape, b.classes, b.file) == ("sub/b.png", 0, 0, (0, 4), [], None)
    assert a.texts == ["", "", ""]  # no text on any annotation


def test_a_coco_annotations_text_is_its_attributes_text_else_its_own_text(tmp_path: Path) -> None:
    path = coco(tmp_path / "gt.json", [{"id": 1, "file_name": "a.png", "width": 20, "height": 10}],
                [{"id": k, "image_id": 1, "category_id": 3, "bbox": [0, 0, 1, 1], **extra} for k, extra in enumerate([
                    {"attributes": {"text": "EXIT"}, "text": "ignored"}, {"text": "PUSH"}, {"attributes": {}},
                    {"attributes": {"text": 42}}, {"attributes": "not a mapping", "text": "PULL"}], 1)])
    (a,) = read_coco(path).images
    assert a.texts == ["EXIT", "PUSH", "", "42", "PULL"]


@pytest.mark.parametrize(("content", "problem"), [
    ('{"images": [{"id": 1, "file_name": "a.png"}], "annotations": [{"id": 5, "image_id": 2, "category_id": 3, '
     '"bbox": [0, 0, 1, 1]}], "categories": [{"id": 3, "name": "cat"}]}',
     "not a COCO instances file ('annotation 5 names image_id 2, which is not in images'; expected images,"),
    ('{"images": [{"id": 1, "file_name": "a.png"}], "annotations": [{"id": 5, "image_id": 1, "category_id": 9, '
     '"bbox": [0, 0, 1, 1]}], "categories": [{"id": 3, "name": "cat"}]}', "not a COCO instances file (9; expected"),
    ("[1, 2]", "not a COCO instances file (list indices must be integers or slices, not str; expected"),
    # the reader's own words say where the file breaks
    (b"\xff\xfe".decode("latin-1"), "not a readable COCO JSON file ('utf-8' codec can't decode byte 0xff in position"),
    ("{not json", "not a readable COCO JSON file (Expecting property name enclosed in double quotes: line 1 column 2"),
])
def test_a_bad_coco_file_is_one_line(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "gt.json"
    path.write_bytes(content.encode("latin-1"))
    with pytest.raises(GroundTruthError) as err:
        read_coco(path)
    assert str(err.value).startswith(f"--gt {path}: {problem}")


# -- Pascal VOC --------------------------------------------------------------------------------------------------
def voc(name: str | None, objects: list[tuple], size: tuple[int, int] | None = (200, 100)) -> str:
    head = f"<filename>{name}</filename>" if name else ""
    size_xml = f"<size><width>{size[0]}</width><height>{size[1]}.0</height></size>" if size else ""
    objs = "".join(f"<object><name> {c} </name><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax>"
                   f"<ymax>{y2}</ymax></bndbox></object>" for c, x1, y1, x2, y2 in objects)
    return f"<annotation>{head}{size_xml}{objs}</annotation>"


def test_voc_corners_sizes_and_names_relative_to_the_folder(tmp_path: Path) -> None:
    write(tmp_path / "Annotations" / "one.xml", voc("one.jpg", [("cat", 1, 2, 30, 40), ("dog", 5.5, 6, 7, 8)]))
    write(tmp_path / "Annotations" / "sub" / "two.xml", voc(None, [("dog", 0, 0, 10, 10)], size=None))
    image(tmp_path / "Annotations" / "JPEGImages" / "two.jpg", (64, 48))  # beside the .xml's folder
    write(tmp_path / "Annotations" / "other.xml", "<config><x>1</x></config>")  # other XML: skipped
    gt = load_ground_truth(tmp_path / "Annotations")
    assert gt.format == "voc" and gt.classes == ["cat", "dog"]
    one, two = gt.images
    assert (one.name, one.width, one.height, one.classes, one.file) == ("one.jpg", 200, 100, ["cat", "dog"], None)
    np.testing.assert_allclose(one.boxes, [[1, 2, 30, 40], [5.5, 6, 7, 8]])
    assert one.texts == ["", ""] and one.segmentations == [None, None] and one.crowd.tolist() == [False, False]
    # no <filename>: the file's stem + .jpg; no <size>: the image's
    assert (two.name, two.width, two.height) == ("sub/two.jpg", 64, 48)
    assert two.file == tmp_path / "Annotations" / "JPEGImages" / "two.jpg"
    write(tmp_path / "lone" / "three.xml", voc("three.jpg", [("cat", 0, 0, 5, 5)], size=None))  # nor an image
    (three,) = load_ground_truth(tmp_path / "lone").images
    assert (three.width, three.height) == (0, 0)  # unknown, not a guess


def test_a_voc_folder_of_other_xml_only_is_one_line(tmp_path: Path) -> None:
    write(tmp_path / "a.xml", "<config/>")
    with pytest.raises(GroundTruthError, match=r"no Pascal VOC <annotation> files found"):
        read_voc(tmp_path, [tmp_path / "a.xml"])


# -- which reader -------------------------------------------------------------------------------------------------
def test_the_reader_is_chosen_by_file_and_folder_and_a_pull_folder_reads_as_labelstudio(tmp_path: Path) -> None:
    cat = [{"id": 1, "name": "cat"}]
    coco(tmp_path / "pulled" / "coco.json", [{"id": 1, "file_name": "a.png"}], [], cat)
    write(tmp_path / "pulled" / "review_summary.json", "{}")
    pulled = load_ground_truth(tmp_path / "pulled")
    assert (pulled.format, pulled.path, pulled.classes) == ("labelstudio", str(tmp_path / "pulled"), ["cat"])
    coco(tmp_path / "c" / "coco.json", [{"id": 1, "file_name": "a.png"}], [], cat)
    assert load_ground_truth(tmp_path / "c").format == "coco"
    assert load_ground_truth(tmp_path / "c" / "coco.json").format == "coco"
    write(tmp_path / "v" / "x.XML", voc("x.jpg", []))
    assert load_ground_truth(tmp_path / "v" / "x.XML").format == "voc"
    image(tmp_path / "y" / "images" / "a.png")
    write(tmp_path / "y" / "data.yml", "names: [cat]\ntrain: images\n")
    assert load_ground_truth(tmp_path / "y" / "data.yml").format == "yolo"
    write(tmp_path / "empty-pull" / "review_summary.json", "{}")
    image(tmp_path / "pulled-yolo" / "yolo" / "images" / "a.png")  # `autolabel pull --format yolo`'s folder
    write(tmp_path / "pulled-yolo" / "yolo" / "data.yaml", "names: [cat]\ntrain: images\n")
    write(tmp_path / "pulled-yolo" / "review_summary.json", "{}")
    assert load_ground_truth(tmp_path / "pulled-yolo").classes == ["cat"]
    with pytest.raises(GroundTruthError, match="an autolabel pull folder without coco.json or yolo/data.yaml"):
        load_ground_truth(tmp_path / "empty-pull")
    with pytest.raises(GroundTruthError, match="no such file or folder"):
        load_ground_truth(tmp_path / "nowhere")
    with pytest.raises(GroundTruthError, match=r"unknown format \(give a COCO .json, a YOLO data.yaml or a VOC"):
        load_ground_truth(write(tmp_path / "gt.csv", "a,b\n"))
