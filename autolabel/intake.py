"""Finding images and decoding them robustly into RGB in the displayed frame.

Bad files never stop a run: each becomes a :class:`Decoded` with ``reason`` set (one line), and the run goes on.
What a hostile folder can hold is met before any byte is read:

* discovery follows links to folders once and enters each real folder once (a ``self -> .`` link, two folders
  linking to each other), so it always ends; each real file is labeled once, under its real name when it has one
  (files are told apart by device and inode: a link, a hard link or a second input naming it is the same file);
* a file is opened without blocking and checked on its open handle: a FIFO, a device (a link to ``/dev/zero``),
  a socket or a folder is refused unread, as is a file larger than ``max_file_bytes``; reading stops at that cap
  whatever the file claims its size is;
* any byte sequence is a name (see :mod:`autolabel.names`).
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import logging
import os
import queue
import stat
import threading
import warnings
from collections import deque
from concurrent.futures import Future, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, TypeVar

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ConfigError, one_line
from .video.spec import is_video_name

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})
LIST_EXTENSIONS = frozenset({".txt", ".lst"})
_GLOB_CHARS = set("*?[")
log = logging.getLogger(__name__)
#: the default of the pipeline file's ``max_file_bytes``: an uncompressed 8-bit RGB bitmap at Pillow's pixel limit
#: (89,478,485 pixels, about 256 MiB) fits with room to spare
MAX_FILE_BYTES = 512 * 2**20


#: EXIF's orientation tag; the orientations that turn an image a quarter (its displayed size is the stored one's
#: transpose). Decoding applies the orientation (:func:`decode`); what reads a size without decoding uses these.
EXIF_ORIENTATION = 0x0112
QUARTER_TURNS = (5, 6, 7, 8)


def displayed_size(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    """The (width, height) an image of stored ``size`` is shown at, given its EXIF ``orientation``.

    >>> displayed_size((40, 30), 6), displayed_size((40, 30), 1)
    ((30, 40), (40, 30))
    """
    return (size[1], size[0]) if orientation in QUARTER_TURNS else size


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
    A file met twice (the same path, a link to it, a hard link) is kept once: its first occurrence, where a
    folder's own files come before what its links lead to.
    """
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    seen: set[object] = set()
    out: list[Source] = []
    for raw in inputs:
        for source in _expand(os.fspath(raw)):
            key = _identity(source.path)
            if key not in seen:
                seen.add(key)
                out.append(source)
    return out


def _identity(path: str) -> object:
    """What makes two paths one file: (device, inode) of what they lead to; the path itself when it leads nowhere."""
    if is_url(path):
        return path
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return path
    return st.st_dev, st.st_ino


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
        parts = Path(text).parts[len(Path(root).parts) if root != "." else 0:]
        matches = [path for path in walk(root, None if "**" in parts else len(parts) - 1)
                   if _glob_match(Path(os.path.relpath(path, root)).parts, parts)]
        if not matches:
            raise ConfigError(f"input {raw!r}: the pattern matches no files")
        for match in matches:
            if is_input_name(match):
                yield _source(match, root)
        return
    path = Path(text)
    if path.is_dir():
        for file in walk(text):
            if is_input_name(file):
                yield _source(file, text)
    elif path.suffix.lower() in LIST_EXTENSIONS and path.is_file():
        yield from _read_list(path)
    elif path.exists() or path.is_symlink():
        yield _source(str(path), str(path.parent))
    else:
        raise ConfigError(f"input {raw!r}: no such file or folder")


def walk(root: str, depth: int | None = None) -> list[str]:
    """Every non-folder under ``root`` (files, and links, FIFOs, devices: refused later, by name), sorted per folder.

    Links to folders are followed, each real folder entered once, so that loops end; the real tree comes first,
    then what its links lead to, then links to files: a file reachable both ways keeps its real name (see
    :func:`discover`). ``depth``: how many folder levels below ``root`` to go (None: all).
    """
    try:
        top = os.stat(root)
    except OSError:
        return []
    entered = {(top.st_dev, top.st_ino)}
    files: list[str] = []
    linked_files: list[str] = []
    links: list[tuple[str, int]] = []  # links to folders, followed once the real tree is done

    def tree(start: str, level: int) -> None:
        stack = [(start, level)]
        while stack:
            folder, at = stack.pop()
            try:
                with os.scandir(folder) as it:
                    entries = sorted(it, key=lambda e: e.name)
            except OSError as err:  # what it holds cannot be found: said, and the walk goes on (os.walk skips it)
                log.warning("autolabel: warning: %s: cannot read this folder (%s): its files are not labeled; fix its "
                            "permissions and run again (what is labeled is kept)", folder, err.strerror or err)
                continue
            below = []
            for entry in entries:
                if entry.is_symlink():
                    if _is_dir(entry):
                        links.append((entry.path, at + 1))
                    else:
                        linked_files.append(entry.path)
                elif entry.is_dir(follow_symlinks=False):
                    below.append(entry.path)
                else:
                    files.append(entry.path)
            if depth is None or at < depth:
                for sub in reversed(below):
                    try:
                        st = os.stat(sub)
                    except OSError:
                        continue
                    if (st.st_dev, st.st_ino) not in entered:
                        entered.add((st.st_dev, st.st_ino))
                        stack.append((sub, at + 1))

    tree(root, 0)
    while links:
        link, at = links.pop(0)
        if depth is not None and at > depth:
            continue
        try:
            st = os.stat(link)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in entered:
            continue  # a loop (``self -> .``), or a folder already walked under its own name
        entered.add((st.st_dev, st.st_ino))
        tree(link, at)
    return files + linked_files


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows the link
    except OSError:
        return False


def _glob_match(names: tuple[str, ...], pattern: tuple[str, ...]) -> bool:
    """``glob``'s rules over path parts: ``*``/``?``/``[]`` within a name, ``**`` across folders (zero or more);
    a wildcard does not match a name starting with ``.`` unless the pattern's part does."""
    if not pattern:
        return not names
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(_glob_match(names[k:], rest) for k in range(len(names) + 1)
                   if not any(n.startswith(".") for n in names[:k]))
    if not names or (names[0].startswith(".") and not head.startswith(".") and _GLOB_CHARS & set(head)):
        return False
    return fnmatch.fnmatchcase(names[0], head) and _glob_match(names[1:], rest)


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
            f"input {url!r}: no filesystem for {protocol}:// ({one_line(str(err))}); "
            f"install its fsspec package (s3fs for s3://, gcsfs for gs://)"
        ) from None


def _read_list(path: Path) -> Iterator[Source]:
    """A text file with one path per line (relative to the list's folder); blank lines and ``#`` comments skipped.
    Lines are names as bytes: one that is not UTF-8 names its file exactly (see :mod:`autolabel.names`)."""
    with open(path, "rb") as f:
        lines = [os.fsdecode(raw.rstrip(b"\r\n")) for raw in f]
    for line in lines:
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


def read(source: Source, max_bytes: int = MAX_FILE_BYTES) -> tuple[bytes | None, str | None]:
    """The file's bytes, or a one-line reason it cannot be read.

    Opened without blocking (a FIFO cannot hold the open up) and checked on the open handle before any byte is
    read: only a regular file of at most ``max_bytes`` is read, and reading stops past ``max_bytes`` whatever
    the file claimed (a file growing while it is read).
    """
    path = source.path
    if is_url(path):
        return _read_url(path, max_bytes)
    if os.path.islink(path) and not os.path.exists(path):
        return None, f"dangling link (points to {os.readlink(path)})"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None, "file not found"
    except OSError as err:  # a socket cannot be opened at all (ENXIO): say what it is
        try:
            mode = os.stat(path).st_mode
        except OSError:
            mode = stat.S_IFREG
        return None, _not_a_file(mode, path) if not stat.S_ISREG(mode) else f"cannot read: {err.strerror or err}"
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None, _not_a_file(st.st_mode, path)
        if st.st_size > max_bytes:
            return None, _too_large(f"{st.st_size:,} bytes", max_bytes)
        data = read_capped(fd, max_bytes, first=min(st.st_size, max_bytes) + 1)
    except OSError as err:
        return None, f"cannot read: {err.strerror or err}"
    finally:
        os.close(fd)
    if data is None:
        return None, _too_large("more bytes than its size said (it grew while read)", max_bytes)
    if not data:
        return None, "empty file (0 bytes)"
    return data, None


def _read_url(url: str, max_bytes: int) -> tuple[bytes | None, str | None]:
    try:
        fs, inner = _filesystem(url)
        with fs.open(inner, "rb") as f:
            size = getattr(f, "size", None)
            if isinstance(size, int) and size > max_bytes:
                return None, _too_large(f"{size:,} bytes", max_bytes)
            data = f.read(max_bytes + 1)
    except FileNotFoundError:
        return None, "file not found"
    except (OSError, ConfigError) as err:
        return None, f"cannot read: {one_line(str(err))}"
    if len(data) > max_bytes:
        return None, _too_large(f"over {max_bytes:,} bytes", max_bytes)
    return (data, None) if data else (None, "empty file (0 bytes)")


def read_capped(
    fd: int, limit: int, first: int = 1 << 20, charge: Callable[[int], None] = lambda n: None
) -> bytes | None:
    """Read ``fd`` to the end, or None once more than ``limit`` bytes came (never more than ``limit + 1`` held).

    ``first``: the first read's size (what fstat said, when it fits: one read for a file whose size is honest);
    ``charge``: told each kept read's size (a request's budget, which may stop the read by raising).
    """
    chunks, total, want = [], 0, first
    while True:
        chunk = os.read(fd, min(want, limit + 1 - total))
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > limit:
            return None
        charge(len(chunk))
        chunks.append(chunk)
        want = 1 << 20


_KINDS = ((stat.S_ISDIR, "is a folder, not an image"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _not_a_file(mode: int, path: str) -> str:
    kind = next((what for test, what in _KINDS if test(mode)), "not a regular file")
    if kind.startswith("is a folder"):
        return kind
    link = f" (the link points to {os.path.realpath(path)})" if os.path.islink(path) else ""
    return f"{kind}{link}, not an image file: not read"


def _too_large(what: str, limit: int) -> str:
    return (f"too large: {what} exceeds max_file_bytes {limit:,} (raise it in the pipeline file if the file is "
            f"genuine): not read")


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
        msg = one_line(str(err))
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


def load(source: Source, max_pixels: int = 89_478_485, known: Callable[[Source, str], bool] | None = None,
         max_bytes: int = MAX_FILE_BYTES) -> Decoded:
    """Read, hash and decode one source. ``known(source, sha)`` true means skip decoding (already done)."""
    data, reason = read(source, max_bytes)
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
_END = object()


def prefetch(
    fn: Callable[[T], R], items: Iterable[T], workers: int, ahead: int, stop: Callable[[], bool] | None = None
) -> Iterator[R]:
    """``map(fn, items)`` in background threads, in order, with at most ``ahead`` results in flight.

    Bounded so memory stays flat however many images there are; threads because decoding releases the GIL.
    The threads are daemons, never waited for: one stuck in a read that does not return (a hung network mount)
    neither holds up the process's exit nor a stop. ``stop()`` is asked while a result is awaited: once it is
    true, the stream ends there (the caller tells that end from the last item by asking ``stop()`` itself).
    """
    tasks: queue.SimpleQueue = queue.SimpleQueue()

    def work() -> None:
        while (job := tasks.get()) is not None:
            future, item = job
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(item))
                except BaseException as err:  # noqa: BLE001 — handed to the consumer, as an executor does
                    future.set_exception(err)

    for k in range(workers):
        threading.Thread(target=work, name=f"autolabel-decode_{k}", daemon=True).start()
    pending: deque[Future] = deque()

    def submit(item: T) -> None:
        future: Future = Future()
        pending.append(future)
        tasks.put((future, item))

    def take() -> Future | None:
        head = pending.popleft()
        while stop is not None and not wait([head], timeout=0.1).done:
            if stop():
                return None
        return head

    try:
        iterator = iter(items)
        for item in iterator:
            submit(item)
            if len(pending) >= ahead:
                break
        while pending:
            item = next(iterator, _END)  # read before the result is taken, as a pool's map does
            head = take()
            if head is None:
                return
            yield head.result()
            if item is not _END:
                submit(item)  # type: ignore[arg-type]
    finally:
        for future in pending:
            future.cancel()
        for _ in range(workers):
            tasks.put(None)
