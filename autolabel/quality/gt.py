"""Ground truth from the formats people have: COCO JSON, a YOLO dataset (``data.yaml``), Pascal VOC XML, or what
``autolabel pull`` wrote from a Label Studio review. Everything becomes :class:`GroundTruth`: images with their
name (a path relative to the dataset), size, boxes (``xyxy`` pixels), class names and, where given, segmentations.

A file that does not parse is one :class:`GroundTruthError` line naming the file and the problem.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image, UnidentifiedImageError

from ..errors import AutolabelError, ExitCode

FORMATS = ("coco", "yolo", "voc", "labelstudio")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")


class GroundTruthError(AutolabelError):
    """The ground truth cannot be used (does not parse, names no known class, shares no image with the run)."""

    exit_code = ExitCode.CONFIG


@dataclass
class GtImage:
    """One annotated image. ``segmentations[i]`` is a COCO segmentation (polygons or RLE) or None."""

    name: str  # posix path relative to the dataset (what is matched to the run's rel_path)
    width: int
    height: int
    boxes: np.ndarray  # (N, 4) float64 xyxy pixels
    classes: list[str]
    segmentations: list[Any] = field(default_factory=list)
    crowd: np.ndarray | None = None  # (N,) bool: COCO iscrowd (ignored regions)
    file: Path | None = None  # the image file, when it exists (for matching by content hash)
    texts: list[str] = field(default_factory=list)  # per box: its text (an OCR line), "" when none

    def __post_init__(self) -> None:
        if not self.segmentations:
            self.segmentations = [None] * len(self.classes)
        if not self.texts:
            self.texts = [""] * len(self.classes)
        if self.crowd is None:
            self.crowd = np.zeros(len(self.classes), dtype=bool)


@dataclass
class GroundTruth:
    path: str
    format: str
    images: list[GtImage]
    classes: list[str]  # every class name the dataset declares, in its order


def load_ground_truth(path: str | Path) -> GroundTruth:
    """Read ``path``: a ``.json`` (COCO), a ``data.yaml`` or a folder holding one (YOLO), a folder of VOC ``.xml``,
    or an ``autolabel pull`` output folder (``review_summary.json`` beside ``coco.json`` or ``yolo/``)."""
    path = Path(path)
    if not path.exists():
        raise GroundTruthError(f"--gt {path}: no such file or folder")
    if path.is_dir():
        if (path / "review_summary.json").is_file():
            inner = path / "coco.json" if (path / "coco.json").is_file() else path / "yolo" / "data.yaml"
            if not inner.is_file():
                raise GroundTruthError(f"--gt {path}: an autolabel pull folder without coco.json or yolo/data.yaml")
            gt = load_ground_truth(inner)
            return GroundTruth(str(path), "labelstudio", gt.images, gt.classes)
        if (path / "data.yaml").is_file():
            return read_yolo(path / "data.yaml")
        if (path / "coco.json").is_file():
            return read_coco(path / "coco.json")
        xmls = sorted(path.rglob("*.xml"))
        if xmls:
            return read_voc(path, xmls)
        raise GroundTruthError(f"--gt {path}: found no coco.json, data.yaml or Pascal VOC .xml files in this folder")
    if path.suffix.lower() == ".json":
        return read_coco(path)
    if path.suffix.lower() in (".yaml", ".yml"):
        return read_yolo(path)
    if path.suffix.lower() == ".xml":
        return read_voc(path.parent, [path])
    raise GroundTruthError(f"--gt {path}: unknown format (give a COCO .json, a YOLO data.yaml or a VOC folder)")


# -- COCO ------------------------------------------------------------------------------------------------------
def read_coco(path: Path) -> GroundTruth:
    """A COCO instances file; image files are looked for beside it (for matching by content hash)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        categories = {int(c["id"]): str(c["name"]) for c in data["categories"]}
        images: dict[int, GtImage] = {}
        for im in data["images"]:
            name = str(im["file_name"]).replace("\\", "/")
            images[int(im["id"])] = GtImage(name, int(im.get("width") or 0), int(im.get("height") or 0),
                                            np.zeros((0, 4)), [], file=_existing(path.parent, name))
        per_image: dict[int, list[dict[str, Any]]] = {}
        for a in data.get("annotations", []):
            per_image.setdefault(int(a["image_id"]), []).append(a)
        for image_id, anns in per_image.items():
            if image_id not in images:
                raise KeyError(f"annotation {anns[0].get('id')} names image_id {image_id}, which is not in images")
            im = images[image_id]
            boxes = np.array([[float(v) for v in a["bbox"]] for a in anns], dtype=np.float64).reshape(-1, 4)
            boxes[:, 2:] += boxes[:, :2]
            im.boxes = boxes
            im.classes = [categories[int(a["category_id"])] for a in anns]
            im.segmentations = [a.get("segmentation") or None for a in anns]
            im.crowd = np.array([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool)
            im.texts = [_text(a) for a in anns]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise GroundTruthError(f"--gt {path}: not a readable COCO JSON file ({_line(err)})") from None
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise GroundTruthError(f"--gt {path}: not a COCO instances file ({_line(err)}; expected images, "
                               "annotations with image_id, category_id and bbox, and categories)") from None
    return GroundTruth(str(path), "coco", list(images.values()), list(dict.fromkeys(categories.values())))


def _text(annotation: dict[str, Any]) -> str:
    """An annotation's text (an OCR line): ``attributes.text`` as autolabel's exports and pull write it, or ``text``."""
    attributes = annotation.get("attributes")
    text = attributes.get("text") if isinstance(attributes, dict) else None
    return str(text if text is not None else annotation.get("text") or "")


# -- YOLO ------------------------------------------------------------------------------------------------------
def read_yolo(path: Path) -> GroundTruth:
    """An Ultralytics dataset: ``names``, ``path`` and the ``train`` / ``val`` / ``test`` image folders or lists.
    Sizes come from the image headers (EXIF-rotated sizes, as Ultralytics normalises to them)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or "names" not in data:
            raise ValueError("no 'names' key")
        names = data["names"]
        names = {int(k): str(v) for k, v in names.items()} if isinstance(names, dict) else dict(enumerate(names))
        root = path.parent / str(data.get("path") or ".")
        image_sets = [data[k] for k in ("train", "val", "test") if data.get(k)]
    except (OSError, UnicodeDecodeError, yaml.YAMLError, ValueError, AttributeError) as err:
        raise GroundTruthError(f"--gt {path}: not a YOLO data.yaml ({_line(err)})") from None
    images: list[GtImage] = []
    seen: set[Path] = set()
    for entry in image_sets:
        for folder in entry if isinstance(entry, list) else [entry]:
            base = root / str(folder)
            files = sorted(p for p in base.rglob("*") if p.suffix.lower() in _IMAGE_SUFFIXES) if base.is_dir() else []
            for file in files:
                if file in seen:
                    continue
                seen.add(file)
                images.append(_yolo_image(path, file, base, names))
    if not images:
        raise GroundTruthError(f"--gt {path}: no images found under its train/val/test folders")
    return GroundTruth(str(path), "yolo", images, list(names.values()))


def _yolo_image(data_yaml: Path, file: Path, base: Path, names: dict[int, str]) -> GtImage:
    parts = list(file.parts)
    where = len(parts) - 1 - parts[::-1].index("images") if "images" in parts else None
    label = Path(*parts[:where], "labels", *parts[where + 1:]) if where is not None else file
    label = label.with_suffix(".txt")
    width, height = _image_size(file, data_yaml)
    boxes, classes, segs = [], [], []
    text = label.read_text(encoding="utf-8") if label.is_file() else ""
    for n, line in enumerate(text.splitlines(), 1):
        values = line.split()
        if not values:
            continue
        try:
            cls, coords = int(values[0]), [float(v) for v in values[1:]]
            if cls not in names or len(coords) < 4 or (len(coords) > 4 and len(coords) % 2):
                raise ValueError(f"class {cls} not in names" if cls not in names else "wrong number of values")
        except ValueError as err:
            raise GroundTruthError(f"--gt {label}: line {n}: not a YOLO label line ({_line(err)})") from None
        if len(coords) == 4:
            cx, cy, w, h = coords
            boxes.append([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height])
            segs.append(None)
        else:
            xy = np.array(coords).reshape(-1, 2) * (width, height)
            boxes.append([*xy.min(axis=0), *xy.max(axis=0)])
            segs.append([xy.reshape(-1).tolist()])
        classes.append(names[cls])
    return GtImage(file.relative_to(base).as_posix(), width, height,
                   np.array(boxes, dtype=np.float64).reshape(-1, 4), classes, segs, file=file)


def _image_size(file: Path, where: Path) -> tuple[int, int]:
    try:
        with Image.open(file) as im:
            width, height = im.size
            if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                width, height = height, width
    except (OSError, UnidentifiedImageError) as err:
        raise GroundTruthError(f"--gt {where}: cannot read image {file} ({_line(err)})") from None
    return width, height


# -- Pascal VOC ------------------------------------------------------------------------------------------------
def read_voc(root: Path, files: list[Path]) -> GroundTruth:
    """Pascal VOC annotation files (``<annotation>`` with ``filename``, ``size`` and ``object``/``bndbox``).
    Image names are the ``filename`` relative to the folder of the ``.xml`` files' root."""
    images, classes = [], []
    for xml in files:
        try:
            node = ET.parse(xml).getroot()
            if node.tag != "annotation":
                continue  # other XML in the folder
            filename = node.findtext("filename") or (xml.stem + ".jpg")
            size = node.find("size")
            width = int(float(size.findtext("width"))) if size is not None else 0
            height = int(float(size.findtext("height"))) if size is not None else 0
            boxes, names = [], []
            for obj in node.iter("object"):
                box = obj.find("bndbox")
                boxes.append([float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")])
                names.append(str(obj.findtext("name")).strip())
        except ET.ParseError as err:
            raise GroundTruthError(f"--gt {xml}: not valid XML ({_line(err)})") from None
        except (AttributeError, TypeError, ValueError) as err:
            raise GroundTruthError(f"--gt {xml}: not a Pascal VOC annotation (bndbox needs xmin, ymin, xmax, ymax "
                                   f"numbers; {_line(err)})") from None
        rel = (xml.parent.relative_to(root) / filename).as_posix() if xml.parent != root else filename
        file = _existing(xml.parent, filename) or _existing(xml.parent.parent / "JPEGImages", filename)
        if not width and file is not None:
            width, height = _image_size(file, xml)
        images.append(GtImage(rel.removeprefix("./"), width, height,
                              np.array(boxes, dtype=np.float64).reshape(-1, 4), names, file=file))
        classes.extend(names)
    if not images:
        raise GroundTruthError(f"--gt {root}: no Pascal VOC <annotation> files found")
    return GroundTruth(str(root), "voc", images, list(dict.fromkeys(classes)))


def _existing(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / "images" / name):
        if candidate.is_file():
            return candidate
    return None


def _line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__
