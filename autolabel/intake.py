"""Finding images and decoding them robustly into RGB in the displayed frame.

Bad files never stop a run: each becomes a :class:`Decoded` with ``reason`` set (one line), and the run goes on.
"""

from __future__ import annotations

import glob
import hashlib
import io
import os
import warnings
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, TypeVar

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ConfigError
from .video.spec import is_video_name

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})
LIST_EXTENSIONS = frozenset({".txt", ".lst"})
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class Source:
    """An input file: its path (absolute) and its name relative to the input root (used in exports)."""

    path: str
    rel_path: str


@dataclass
class Decoded:
    """The outcome of reading one source: an RGB image, or a one-line reason it could not be used."""

    source: Source
    sha256: str | None = None
    image: Image.Image | None = None
    reason: str | None = None
    skipped: bool = False  # already labeled with this pipeline: not decoded

    @property
    def ok(self) -> bool:
        return self.image is not None


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def is_input_name(name: str) -> bool:
    """An image's or a clip's name (what folders and globs yield; clips: :mod:`autolabel.video`)."""
    return is_image_name(name) or is_video_name(name)


def discover(inputs: str | Path | Iterable[str | Path]) -> list[Source]:
    """Expand inputs (files, folders searched recursively, globs, text files listing paths) into sources.

    Folders and globs yield only files with an image or video extension (case-insensitive), sorted; files named
    explicitly (directly or in a list) are kept whatever they are, so that a bad one is reported, not skipped.
    Duplicates are dropped (first occurrence wins).
    """
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    seen: dict[str, Source] = {}
    for raw in inputs:
        for source in _expand(str(raw)):
            seen.setdefault(source.path, source)
    return list(seen.values())


def is_url(text: str) -> bool:
    """``s3://…``, ``gs://…``, ``memory://…``, ``file://…``: read through fsspec (the ``remote`` extra)."""
    return "://" in text


def _expand(raw: str) -> Iterator[Source]:
    if is_url(raw):
        yield from _expand_url(raw)
        return
    text = os.path.expanduser(raw)
    if _GLOB_CHARS & set(text):
        root = _glob_root(text)
        matches = sorted(glob.glob(text, recursive=True))
        if not matches:
            raise ConfigError(f"input {raw!r}: the pattern matches no files")
        for match in matches:
            if is_input_name(match) and not os.path.isdir(match):
                yield _source(match, root)
        return
    path = Path(text)
    if path.is_dir():
        for dirpath, dirnames, filenames in os.walk(path, followlinks=True):
            dirnames.sort()
            for name in sorted(filenames):
                if is_input_name(name):
                    yield _source(os.path.join(dirpath, name), str(path))
    elif path.suffix.lower() in LIST_EXTENSIONS and path.is_file():
        yield from _read_list(path)
    elif path.exists() or path.is_symlink():
        yield _source(str(path), str(path.parent))
    else:
        raise ConfigError(f"input {raw!r}: no such file or folder")


def _expand_url(url: str) -> Iterator[Source]:
    """A folder (searched recursively), a glob or a single file behind an fsspec URL; rel_path is below the root."""
    fs, root = _filesystem(url)
    if _GLOB_CHARS & set(root):
        base = _glob_root(root)
        paths = [p for p in sorted(fs.glob(root)) if is_input_name(p)]
        if not paths:
            raise ConfigError(f"input {url!r}: the pattern matches no files")
    elif fs.isdir(root):
        base = root
        paths = sorted(p for p in fs.find(root) if is_input_name(p))
    elif fs.exists(root):
        base, paths = root.rsplit("/", 1)[0] if "/" in root else "", [root]
    else:
        raise ConfigError(f"input {url!r}: no such file or folder")
    base = base.rstrip("/")
    for path in paths:
        rel = path[len(base) + 1:] if base and path.startswith(base + "/") else path.rsplit("/", 1)[-1]
        yield Source(path=fs.unstrip_protocol(path), rel_path=rel)


def _filesystem(url: str):  # noqa: ANN202 — (fsspec.AbstractFileSystem, path)
    try:
        import fsspec
    except ImportError:
        raise ConfigError(f"input {url!r}: URLs need fsspec: pip install 'autolabel[remote]'") from None
    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as err:
        protocol = url.split("://", 1)[0]
        raise ConfigError(
            f"input {url!r}: no filesystem for {protocol}:// ({' '.join(str(err).split())}); "
            f"install its fsspec package (s3fs for s3://, gcsfs for gs://)"
        ) from None


def _read_list(path: Path) -> Iterator[Source]:
    """A text file with one path per line (relative to the list's folder); blank lines and ``#`` comments skipped."""
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        entry = Path(os.path.expanduser(line))
        if not entry.is_absolute():
            entry = path.parent / entry
        yield _source(str(entry), str(path.parent))


def _glob_root(pattern: str) -> str:
    parts = Path(pattern).parts
    fixed = list(parts[: next(i for i, p in enumerate(parts) if _GLOB_CHARS & set(p))])
    return str(Path(*fixed)) if fixed else "."


def _source(path: str, root: str) -> Source:
    absolute = os.path.abspath(path)
    rel = os.path.relpath(absolute, os.path.abspath(root))
    if rel.startswith(".."):
        rel = os.path.basename(absolute)
    return Source(path=absolute, rel_path=rel.replace(os.sep, "/"))


def read(source: Source) -> tuple[bytes | None, str | None]:
    """The file's bytes, or a one-line reason it cannot be read."""
    path = source.path
    if is_url(path):
        try:
            fs, inner = _filesystem(path)
            with fs.open(inner, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None, "file not found"
        except (OSError, ConfigError) as err:
            return None, f"cannot read: {' '.join(str(err).split())}"
        return (data, None) if data else (None, "empty file (0 bytes)")
    if os.path.islink(path) and not os.path.exists(path):
        return None, f"dangling link (points to {os.readlink(path)})"
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None, "file not found"
    except IsADirectoryError:
        return None, "is a folder, not an image"
    except OSError as err:
        return None, f"cannot read: {err.strerror or err}"
    if not data:
        return None, "empty file (0 bytes)"
    return data, None


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def decode(data: bytes, max_pixels: int = 89_478_485) -> Image.Image:
    """Decode bytes into an RGB image in the displayed frame (EXIF orientation applied, first frame).

    Raises ``ValueError`` with a one-line reason for anything that is not a complete, reasonably sized image:
    truncated files are errors (Pillow's ``LOAD_TRUNCATED_IMAGES`` must stay off), never half-grey images.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise ValueError(
                    f"too large: {width}x{height} = {width * height:,} pixels exceeds max_image_pixels "
                    f"{max_pixels:,} (raise it in the pipeline file if the image is genuine)"
                )
            image.seek(0)  # animated images: the first frame
            image.load()
            image = ImageOps.exif_transpose(image) or image
    except ValueError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ValueError(f"too large (decompression-bomb guard): {err}") from None
    except UnidentifiedImageError:
        raise ValueError("not an image (Pillow cannot identify the format)") from None
    except (OSError, SyntaxError, EOFError) as err:
        msg = " ".join(str(err).split())
        if "truncated" in msg.lower() or isinstance(err, EOFError):
            raise ValueError(f"truncated or corrupt image data ({msg or 'unexpected end of file'})") from None
        raise ValueError(f"corrupt image ({msg})") from None
    return to_rgb(image)


def to_rgb(image: Image.Image) -> Image.Image:
    """Normalise any mode to 8-bit RGB: 16-bit and float scaled, alpha composited on white, CMYK/palette converted."""
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        if mode.startswith("I;16") or (mode == "I" and array.max(initial=0) > 255):
            array = array / 257.0  # 16-bit range onto 8-bit
        gray = Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8), "L")
        return gray.convert("RGB")
    # "transparency" also comes with L and RGB PNGs (a tRNS colour key), not only with palette ones
    if "transparency" in image.info or mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode != "RGB":
        return image.convert("RGB")
    return image


def load(source: Source, max_pixels: int = 89_478_485, known: Callable[[Source, str], bool] | None = None) -> Decoded:
    """Read, hash and decode one source. ``known(source, sha)`` true means skip decoding (already done)."""
    data, reason = read(source)
    if data is None:
        return Decoded(source, reason=reason)
    digest = sha256(data)
    if known is not None and known(source, digest):
        return Decoded(source, sha256=digest, skipped=True)
    try:
        image = decode(data, max_pixels)
    except ValueError as err:
        return Decoded(source, sha256=digest, reason=str(err))
    return Decoded(source, sha256=digest, image=image)


T = TypeVar("T")
R = TypeVar("R")


def prefetch(fn: Callable[[T], R], items: Iterable[T], workers: int, ahead: int) -> Iterator[R]:
    """``map(fn, items)`` in background threads, in order, with at most ``ahead`` results in flight.

    Bounded so memory stays flat however many images there are; threads because decoding releases the GIL.
    """
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="autolabel-decode") as pool:
        pending: deque = deque()
        iterator = iter(items)
        for item in iterator:
            pending.append(pool.submit(fn, item))
            if len(pending) >= ahead:
                break
        for item in iterator:
            yield pending.popleft().result()
            pending.append(pool.submit(fn, item))
        for future in pending:
            yield future.result()
