"""YOLO datasets in the Ultralytics layout, streamed from the run store::

    yolo/
      data.yaml                 names, nc and one entry per split; paths relative to data.yaml's folder
      images/<split>/<name>     a symlink to the source, or a copy; written upright where EXIF rotates it
      labels/<split>/<stem>.txt one line per box; an image without boxes gets an empty file (a background image)

* ``task: detect`` lines are ``class cx cy w h``; ``task: segment`` lines are ``class x1 y1 x2 y2 ...`` (a mask,
  else a polygon or quad, else the box's corners). All normalised to the displayed size and inside [0, 1].
* A mask in several parts becomes one polygon: the parts joined by zero-width bridges between their closest
  vertices, the rule of Ultralytics' own converter (see :func:`autolabel.exports.geometry.join_parts`).
* The split is deterministic: each image goes to a split by a hash of ``seed`` and its content hash (the store's
  sha256), so identical images land in the same split and re-exports never shuffle.
* ``<name>`` is the path relative to the input root with ``/`` → ``__`` (Ultralytics finds labels by replacing
  the last ``/images/`` in a path, so sub-folders named ``images`` must not survive); a name taken twice gets
  ``__id<store id>``.
* Images Ultralytics reads as-is are linked (``images: symlink``, absolute targets) or copied (``copy``; sources
  behind URLs are always copied). A source whose EXIF orientation is not 1, or in a format trainers do not read
  (GIF), is decoded as the run decoded it and written upright — JPEG (quality 95) for JPEGs, PNG otherwise — so
  the labels match the pixels any trainer loads. A source that is missing, or whose size or content (``copy``)
  differs from what the run saw, is an error: the labels would not match it.
* The whole folder is written into ``.NAME.<random>.tmp`` beside it, then renamed into place; an existing export
  is first renamed aside and deleted after. A crash leaves the previous export untouched (at worst renamed to
  ``.NAME.old-*`` in the instant between the two renames), never a half-written dataset; the next export removes
  such leftovers (so two exports to the same folder must not run at once).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import secrets
import shutil
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import yaml
from PIL import Image

from ..errors import AutolabelError
from ..intake import Source, decode, is_url, read
from ..ontology import Ontology
from ..store import Store
from .geometry import box_polygon, join_parts, rles_polygons
from .rows import Annotation, ImageRow, image_rows, require_labeled

#: Image suffixes Ultralytics loads (``ultralytics.data.utils.IMG_FORMATS``, minus the exotic ones).
IMAGE_SUFFIXES = frozenset({".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp"})
MARKER = "# autolabel YOLO export"
_ORIENTATION = 0x0112


def split_of(key: str, fractions: dict[str, float], seed: int = 0) -> str:
    """The split an image goes to: a uniform draw from ``sha256(seed:key)`` against the cumulative fractions.

    >>> split_of("abc", {"train": 0.8, "val": 0.2}) in ("train", "val")
    True
    """
    draw = int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "big") / 2.0**64
    total = 0.0
    for name, fraction in fractions.items():
        total += fraction
        if draw < total:
            return name
    return next(reversed(fractions))  # rounding: the sum may fall a hair short of 1


def label_lines(row: ImageRow, task: str) -> list[str]:
    """The label file of one image: one line per annotation, coordinates normalised to the displayed size."""
    scale = np.array([row.width, row.height], dtype=np.float64)
    masked = [a for a in row.annotations if a.rle is not None] if task == "segment" else []
    parts = dict(zip((a.index for a in masked), rles_polygons([a.rle for a in masked])))
    lines = []
    for ann in row.annotations:
        if task == "detect":
            x1, y1, x2, y2 = ann.xyxy
            values = [(x1 + x2) / 2 / row.width, (y1 + y2) / 2 / row.height,
                      (x2 - x1) / row.width, (y2 - y1) / row.height]
        else:
            values = np.clip(_outline(ann, parts.get(ann.index)) / scale, 0.0, 1.0).ravel().tolist()
        lines.append(f"{ann.category} " + " ".join(f"{v:.6f}" for v in values))
    return lines


def _outline(ann: Annotation, parts: list[np.ndarray] | None) -> np.ndarray:
    """One polygon for a segment line: the mask's parts joined, else the polygon, else the box's corners."""
    if parts:
        return join_parts(parts)
    if ann.polygon is not None:
        return np.asarray(ann.polygon, dtype=np.float64)
    return box_polygon(ann.xyxy)


def image_name(rel_path: str) -> str:
    """A flat file name for an image: its path relative to the input root with ``/`` → ``__``."""
    return rel_path.replace("\\", "/").strip("/").replace("/", "__")


def data_yaml(ontology: Ontology, splits: list[str], task: str) -> str:
    """``data.yaml``: no ``path`` key, so Ultralytics resolves the split folders against this file's folder."""
    lines = [f"{MARKER} (Ultralytics layout, task: {task}); paths are relative to this file's folder"]
    for split in splits:
        lines.append(f"{split}: images/{split}")
    if "val" not in splits:
        lines.append("val: images/train  # no val split was asked for")
    lines.append(f"nc: {len(ontology)}")
    names = yaml.safe_dump({"names": dict(enumerate(ontology.classes))}, allow_unicode=True, sort_keys=False)
    return "\n".join(lines) + "\n" + names


def write_yolo(
    store: Store,
    ontology: Ontology,
    path: str | Path,
    task: str = "detect",
    split: dict[str, float] | None = None,
    seed: int = 0,
    images: str = "symlink",
    min_score: float = 0.0,
    flagged: bool = True,
) -> list[str]:
    """Write the dataset folder at ``path`` (replacing an earlier YOLO export there); return ``[path]``."""
    require_labeled(store)
    rows = image_rows(store, ontology, min_score=min_score, flagged=flagged)
    return write_dataset(rows, ontology, path, task, split or {"train": 0.8, "val": 0.2}, seed,
                         place=lambda row, target: _place_image(row, target, images))


def write_dataset(
    rows: Iterable[ImageRow],
    ontology: Ontology,
    path: str | Path,
    task: str,
    fractions: dict[str, float],
    seed: int,
    place: Callable[[ImageRow, Path], None],
) -> list[str]:
    """An Ultralytics dataset folder from rows, built aside and swapped into place; ``place`` puts each image.

    Shared by the export and by ``autolabel pull`` (whose images come from Label Studio).
    """
    path = Path(path)
    _check_replaceable(path)
    _remove_leftovers(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        for name in fractions:
            (tmp / "images" / name).mkdir(parents=True)
            (tmp / "labels" / name).mkdir(parents=True)
        for row in rows:
            which = split_of(row.sha256 or row.rel_path, fractions, seed)
            image_path, label_path = _targets(tmp, which, row)
            place(row, image_path)
            label_path.write_text("".join(line + "\n" for line in label_lines(row, task)), encoding="utf-8")
        (tmp / "data.yaml").write_text(data_yaml(ontology, list(fractions), task), encoding="utf-8")
        _swap_into_place(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [str(path)]


def _targets(root: Path, split: str, row: ImageRow) -> tuple[Path, Path]:
    """Where the image and its label file go; a second image of the same name gets ``__id<id>``."""
    name = Path(image_name(row.rel_path))
    suffix = name.suffix if name.suffix.lower() in IMAGE_SUFFIXES else ".png"
    for stem in (name.stem, f"{name.stem}__id{row.id}"):
        image = root / "images" / split / f"{stem}{suffix}"
        label = root / "labels" / split / f"{stem}.txt"
        if not os.path.lexists(image) and not label.exists():
            return image, label
    raise AutolabelError(f"{row.rel_path}: two images map to the file name {name.stem!r} in split {split!r}")


def _place_image(row: ImageRow, target: Path, mode: str) -> None:
    """Link or copy the source; decode and write it upright when its pixels differ from what a trainer loads.

    Sources behind URLs (``s3://`` ...) cannot be linked: they are copied whatever ``mode`` says.
    """
    remote = is_url(row.path)
    if not remote and not os.path.isfile(row.path):
        raise _missing(row, "is missing")
    if mode == "symlink" and not remote:
        orientation, suffix_ok = _check_header(row, row.path)
        if orientation == 1 and suffix_ok:
            os.symlink(os.path.abspath(row.path), target)
            return
    data, reason = read(Source(path=row.path, rel_path=row.rel_path))
    if data is None:
        raise _missing(row, f"cannot be read: {reason}")
    if row.sha256 and hashlib.sha256(data).hexdigest() != row.sha256:
        raise _changed(row, "its content differs from what was labeled")
    orientation, suffix_ok = _check_header(row, io.BytesIO(data))
    if orientation == 1 and suffix_ok:
        target.write_bytes(data)
        return
    upright = decode(data, max_pixels=row.width * row.height)
    upright.save(target, format="JPEG" if target.suffix.lower() in (".jpg", ".jpeg") else "PNG", quality=95)


def _check_header(row: ImageRow, source: str | io.BytesIO) -> tuple[int, bool]:
    """The source's EXIF orientation and whether trainers read its format; fail if its size is not the run's."""
    try:
        with Image.open(source) as image:
            orientation = _orientation(image, source)
            size = image.size[::-1] if orientation in (5, 6, 7, 8) else image.size
    except (OSError, ValueError) as err:
        raise AutolabelError(f"{row.rel_path}: cannot read source image {row.path} ({err})") from None
    if size != (row.width, row.height):
        raise _changed(row, f"its size is {size[0]}x{size[1]}, the run saw {row.width}x{row.height}")
    return orientation, Path(row.rel_path).suffix.lower() in IMAGE_SUFFIXES


def _orientation(image: Image.Image, source: str | io.BytesIO) -> int:
    """EXIF orientation from the header alone (PIL's ``getexif`` decodes a whole PNG to look past its pixels)."""
    if image.format != "PNG":
        return int(image.getexif().get(_ORIENTATION, 1))
    raw = image.info.get("exif") or _png_chunk(source, b"eXIf")
    if not raw:
        return 1
    exif = Image.Exif()
    exif.load(raw)
    return int(exif.get(_ORIENTATION, 1))


def _png_chunk(source: str | io.BytesIO, kind: bytes) -> bytes | None:
    """The first PNG chunk of ``kind`` anywhere in the file, skipping over the others (pixels are never read)."""
    with open(source, "rb") if isinstance(source, str) else contextlib.nullcontext(source) as f:
        f.seek(8)  # the signature
        while header := f.read(8):
            if len(header) < 8:
                return None
            length, found = int.from_bytes(header[:4], "big"), header[4:]
            if found == kind:
                return f.read(length)
            if found == b"IEND":
                return None
            f.seek(length + 4, io.SEEK_CUR)  # data and CRC
    return None


def _missing(row: ImageRow, what: str) -> AutolabelError:
    return AutolabelError(
        f"{row.rel_path}: source image {row.path} {what} (moved or deleted since the run?); "
        "put it back, or run the pipeline again on its new location"
    )


def _changed(row: ImageRow, why: str) -> AutolabelError:
    return AutolabelError(
        f"{row.rel_path}: source image {row.path} changed since the run ({why}); run the pipeline again"
    )


def _check_replaceable(path: Path) -> None:
    """Refuse to replace anything but an earlier YOLO export of ours (or an empty folder)."""
    if not (path.exists() or path.is_symlink()):
        return
    ours = path.is_dir() and (path / "data.yaml").is_file() and \
        (path / "data.yaml").read_text(encoding="utf-8", errors="replace").startswith(MARKER)
    if not ours and not (path.is_dir() and not any(path.iterdir())):
        raise AutolabelError(
            f"{path}: exists and is not an autolabel YOLO export; choose another path or remove it"
        )


def _remove_leftovers(path: Path) -> None:
    """Temp and set-aside folders a crashed export left beside ``path``."""
    for pattern in (f".{path.name}.*.tmp", f".{path.name}.old-*"):
        for leftover in path.parent.glob(pattern):
            shutil.rmtree(leftover, ignore_errors=True)


def _swap_into_place(tmp: Path, path: Path) -> None:
    if path.exists() or path.is_symlink():
        old = path.with_name(f".{path.name}.old-{secrets.token_hex(4)}")
        os.rename(path, old)
        os.rename(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.rename(tmp, path)
