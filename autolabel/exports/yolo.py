"""YOLO datasets in the Ultralytics layout, streamed from the run store::

    yolo/
      data.yaml                 names, nc and one entry per split; paths relative to data.yaml's folder
      images/<split>/<name>     a symlink to the source, or a copy; written upright where EXIF rotates it
      labels/<split>/<stem>.txt one line per box; an image without boxes gets an empty file (a background image)

* ``task: detect`` lines are ``class cx cy w h``; ``task: segment`` lines are ``class x1 y1 x2 y2 ...`` (a mask,
  else a polygon or quad, else the box's corners). All normalised to the displayed size and inside [0, 1].
* A mask in several parts becomes one polygon: the parts joined by zero-width bridges between their closest
  vertices, the rule of Ultralytics' own converter (see :func:`autolabel.geometry.join_parts`).
* The split is deterministic: each image goes to a split by a hash of ``seed`` and its content hash (the store's
  sha256), so identical images land in the same split and re-exports never shuffle; a split with a fraction > 0
  that would come out empty gets the nearest image of another split when there are images enough (the rule:
  :mod:`autolabel.exports.splits`), so a small dataset still trains.
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

from typing import TYPE_CHECKING

import contextlib
import hashlib
import io
import os
import secrets
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from ..errors import AutolabelError
from ..intake import EXIF_ORIENTATION, Source, decode, displayed_size, is_url, read
from ..ontology import Ontology
from ..store import Store
from ..geometry import box_polygon, join_parts, rles_polygons
from .rows import Annotation, ImageRow, Shape, ShapeRow, require_labeled, selection, shape_rows
from .splits import SplitPlan, split_of  # noqa: F401 — split_of: part of this module's API

if TYPE_CHECKING:
    from ..config import PipelineSpec, YoloExport

#: Image suffixes Ultralytics loads (``ultralytics.data.utils.IMG_FORMATS``, minus the exotic ones).
IMAGE_SUFFIXES = frozenset({".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp"})
MARKER = "# autolabel YOLO export"


def label_text(row: ImageRow | ShapeRow, task: str) -> str:
    """The label file of one image: one line per annotation, coordinates normalised to the displayed size.

    The export's hot path: one ``%`` per detect line; segment outlines scaled, clipped and formatted for the whole
    image at once.
    """
    if not row.annotations:
        return ""
    if task == "detect":  # plain floats: for ~10 boxes an image, numpy's per-call cost exceeds the arithmetic
        w, h = row.width, row.height
        return "".join(_DETECT_LINE % (a.category, (x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h)
                       for a in row.annotations for x1, y1, x2, y2 in (a.xyxy,))
    masked = [a for a in row.annotations if a.rle is not None]
    parts = dict(zip((a.index for a in masked), rles_polygons([a.rle for a in masked])))
    outlines = [_outline(ann, parts.get(ann.index)) for ann in row.annotations]
    values = np.clip(np.concatenate(outlines) / (float(row.width), float(row.height)), 0.0, 1.0).ravel().tolist()
    fmt = "".join("%d" + " %.6f" * (2 * len(outline)) + "\n" for outline in outlines)  # one % for the image
    args, at = [], 0
    for ann, outline in zip(row.annotations, outlines):
        end = at + 2 * len(outline)
        args.append(ann.category)
        args.extend(values[at:end])
        at = end
    return fmt % tuple(args)


_DETECT_LINE = "%d %.6f %.6f %.6f %.6f\n"


def _outline(ann: Annotation | Shape, parts: list[np.ndarray] | None) -> np.ndarray:
    """One polygon for a segment line: the mask's parts joined, else the polygon, else the box's corners."""
    if parts:
        return parts[0] if len(parts) == 1 else join_parts(parts)  # one part: already (K, 2) float64
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
    rows = shape_rows(store, ontology, min_score=min_score, flagged=flagged)
    return write_dataset(rows, ontology, path, task, split or {"train": 0.8, "val": 0.2}, seed,
                         place=lambda row, target: _place_image(row, target, images))


def write_dataset(
    rows: Iterable[ImageRow] | Iterable[ShapeRow],
    ontology: Ontology,
    path: str | Path,
    task: str,
    fractions: dict[str, float],
    seed: int,
    place: Callable[[ImageRow | ShapeRow, str], None],
) -> list[str]:
    """An Ultralytics dataset folder from rows, built aside and swapped into place; ``place`` puts each image at
    the path it is given (a ``str``: a ``Path`` per image costs more than the label's arithmetic).

    Shared by the export and by ``autolabel pull`` (whose images come from Label Studio).
    """
    path = Path(path)
    _check_replaceable(path)
    _remove_leftovers(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    plan = SplitPlan(fractions, seed)
    try:
        for name in fractions:
            (tmp / "images" / name).mkdir(parents=True)
            (tmp / "labels" / name).mkdir(parents=True)
        root = str(tmp)
        for row in rows:
            text = label_text(row, task).encode("utf-8")
            _, (image_path, _) = plan.assign(row.sha256 or row.rel_path,
                                             lambda split: _claim(root, split, row, text))  # noqa: B023
            place(row, image_path)
        for (image_path, label_path), _old, new in plan.moves():
            for moving, kind in ((image_path, "images"), (label_path, "labels")):
                os.rename(moving, os.path.join(root, kind, new, os.path.basename(moving)))
        (tmp / "data.yaml").write_text(data_yaml(ontology, list(fractions), task), encoding="utf-8")
        _swap_into_place(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [str(path)]


def _claim(root: str, split: str, row: ImageRow | ShapeRow, text: bytes) -> tuple[str, str]:
    """Write the label file under a free name and return ``(image path, label path)``; a second image of the same
    name gets ``__id<id>``. The label file is created exclusively: an image's name is taken exactly when its label's
    is (same stem), so one ``open`` both checks and claims the name."""
    stem, suffix = _stem_suffix(image_name(row.rel_path))
    if suffix.lower() not in IMAGE_SUFFIXES:
        suffix = ".png"
    for candidate in (stem, f"{stem}__id{row.id}"):
        label = os.path.join(root, "labels", split, candidate + ".txt")
        try:
            fd = os.open(label, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue
        try:
            os.write(fd, text)
        finally:
            os.close(fd)
        return os.path.join(root, "images", split, candidate + suffix), label
    raise AutolabelError(f"{row.rel_path}: two images map to the file name {stem!r} in split {split!r}")


def _stem_suffix(path: str) -> tuple[str, str]:
    """``PurePosixPath(path).stem`` and ``.suffix`` without building a path object (once per image)."""
    name = path.rpartition("/")[2]
    dot = name.rfind(".")
    return (name[:dot], name[dot:]) if 0 < dot < len(name) - 1 else (name, "")


def _place_image(row: ImageRow | ShapeRow, target: str, mode: str) -> None:
    """Link or copy the source; decode and write it upright when its pixels differ from what a trainer loads.

    Sources behind URLs (``s3://`` ...) cannot be linked: they are copied whatever ``mode`` says.
    """
    remote = is_url(row.path)
    if mode == "symlink" and not remote:
        header = _png_header(row.path)  # a readable PNG exists: no separate existence check
        if header is None and not os.path.isfile(row.path):
            raise _missing(row, "is missing")
        orientation, suffix_ok = _check_header(row, row.path, header)
        if orientation == 1 and suffix_ok:
            os.symlink(os.path.abspath(row.path), target)
            return
    elif not remote and not os.path.isfile(row.path):
        raise _missing(row, "is missing")
    data, reason = read(Source(path=row.path, rel_path=row.rel_path))
    if data is None:
        raise _missing(row, f"cannot be read: {reason}")
    if row.sha256 and hashlib.sha256(data).hexdigest() != row.sha256:
        raise _changed(row, "its content differs from what was labeled")
    orientation, suffix_ok = _check_header(row, io.BytesIO(data))
    if orientation == 1 and suffix_ok:
        Path(target).write_bytes(data)
        return
    upright = decode(data, max_pixels=row.width * row.height)
    jpeg = _stem_suffix(target)[1].lower() in (".jpg", ".jpeg")
    upright.save(target, format="JPEG" if jpeg else "PNG", quality=95)


def _check_header(
    row: ImageRow | ShapeRow, source: str | io.BytesIO, header: _Header | None | bool = False
) -> tuple[int, bool]:
    """The source's EXIF orientation and whether trainers read its format; fail if its size is not the run's.
    ``header``: :func:`_png_header` of ``source`` when the caller has read it already (``False``: not read)."""
    if header is False:
        header = _png_header(source) if isinstance(source, str) else None
    if header is not None:  # a PNG file: its header read directly, ~10x faster than PIL's open
        (width, height), raw = header
        orientation = _exif_orientation(raw) if raw else 1
        size = displayed_size((width, height), orientation)
    else:
        try:
            with Image.open(source) as image:
                orientation = _orientation(image, source)
                size = displayed_size(image.size, orientation)
        except (OSError, ValueError) as err:
            raise AutolabelError(f"{row.rel_path}: cannot read source image {row.path} ({err})") from None
    if size != (row.width, row.height):
        raise _changed(row, f"its size is {size[0]}x{size[1]}, the run saw {row.width}x{row.height}")
    return orientation, _stem_suffix(row.rel_path)[1].lower() in IMAGE_SUFFIXES


def _orientation(image: Image.Image, source: str | io.BytesIO) -> int:
    """EXIF orientation from the header alone (PIL's ``getexif`` decodes a whole PNG to look past its pixels)."""
    if image.format != "PNG":
        return int(image.getexif().get(EXIF_ORIENTATION, 1))
    raw = image.info.get("exif") or _png_chunk(source, b"eXIf")
    return _exif_orientation(raw) if raw else 1


def _exif_orientation(raw: bytes) -> int:
    exif = Image.Exif()
    exif.load(raw)
    return int(exif.get(EXIF_ORIENTATION, 1))


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")


_Header = tuple[tuple[int, int], "bytes | None"]


def _png_header(path: str) -> _Header | None:
    """A PNG file's size (IHDR) and its ``eXIf`` chunk, read without PIL; ``None`` when the file is not a plain
    PNG or keeps EXIF in a text chunk (PIL reads those: the caller falls back to it).

    One ``read`` of the file's head holds every chunk header of a small image; bigger ones are walked by ``pread``
    (raw system calls: Python's buffered ``open`` adds four per file).
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None  # PIL will say what is wrong with it
    try:
        head = os.read(fd, 4096)
        if len(head) < 33 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
            return None  # signature, IHDR's length and type, width, height, the rest of IHDR and its CRC
        size = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
        at = 33
        while len(header := _bytes_at(fd, head, at, 8)) == 8:
            length, kind = int.from_bytes(header[:4], "big"), header[4:]
            if kind == b"eXIf":
                return size, _bytes_at(fd, head, at + 8, length)
            if kind == b"IEND":
                break
            if kind in _TEXT_CHUNKS and _bytes_at(fd, head, at + 8, 5) == b"exif\0":
                return None
            at += 8 + length + 4  # chunk header, data and CRC
        return size, None
    except OSError:
        return None
    finally:
        os.close(fd)


def _bytes_at(fd: int, head: bytes, at: int, n: int) -> bytes:
    """``n`` bytes of the file at offset ``at``: from its head when there, else read (short at the end)."""
    return head[at : at + n] if at + n <= len(head) else os.pread(fd, n, at)


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


def _missing(row: ImageRow | ShapeRow, what: str) -> AutolabelError:
    return AutolabelError(
        f"{row.rel_path}: source image {row.path} {what} (moved or deleted since the run?); "
        "put it back, or run the pipeline again on its new location"
    )


def _changed(row: ImageRow | ShapeRow, why: str) -> AutolabelError:
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


def export_yolo(store: Store, spec: PipelineSpec, export: YoloExport, path: Path) -> list[str]:
    """``format: yolo`` (:class:`autolabel.config.YoloExport`)."""
    return write_yolo(store, spec.ontology, path, task=export.task, split=export.split, seed=export.seed,
                      images=export.images, **selection(export))
