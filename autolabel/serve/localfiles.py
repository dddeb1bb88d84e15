"""Images on the backend's own disk: read only under the folders the operator names (``--local-root``), none by
default, and only regular files.

A task's path is resolved (symlinks and ``..`` included) and must lie under a root; it is then opened without
following a final symlink and without blocking (a FIFO would otherwise hang the open), and the *opened* file is
checked — a regular file (no device, FIFO, socket or folder), and on Linux, at the path the kernel reports for the
descriptor, still under a root: a path swapped between the check and the open cannot escape. The size is checked
on what is read, in chunks, with a hard cap (``st_size`` is 0 for ``/proc`` files and devices).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterable
from urllib.parse import unquote, urlsplit

from ..errors import ConfigError
from ..intake import read_capped
from .limits import exceeded
from .protocol import RequestError

CHUNK = 1024 * 1024
_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | \
    getattr(os, "O_NOCTTY", 0)
_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a device"),
          (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket"))


def local_path(ref: str) -> str:
    """The absolute path a local reference names (``/abs/path`` or ``file:///abs/path``), or a 400.

    >>> local_path("file:///srv/img/a%20b.png"), local_path("/srv/img/c.png")
    ('/srv/img/a b.png', '/srv/img/c.png')
    """
    path = ref
    if ref.startswith("file://"):
        parts = urlsplit(ref)
        if parts.netloc not in ("", "localhost"):
            raise RequestError(400, f"{ref}: a file:// URL on another host ({parts.netloc}) cannot be read here")
        path = unquote(parts.path)
    if "\x00" in path or not os.path.isabs(path):
        raise RequestError(400, f"{ref}: a local image must be an absolute path (/path/to/image.jpg or "
                                "file:///path/to/image.jpg)")
    return path


class LocalRoots:
    """The folders local images may be read from (resolved once, at start-up: each must be an existing folder)."""

    def __init__(self, roots: Iterable[str] = ()):
        self.roots: list[str] = []
        for root in roots:
            real = os.path.realpath(os.path.expanduser(root))
            if not os.path.isdir(real):
                raise ConfigError(f"--local-root: {root} is not a folder; name the folder that holds the images")
            self.roots.append(real)

    def contains(self, path: str) -> bool:
        """Whether the resolved ``path`` is a root or lies below one."""
        return any(self.contains_in(path, root) for root in self.roots)

    @staticmethod
    def contains_in(path: str, root: str) -> bool:
        return path == root or path.startswith(root.rstrip(os.sep) + os.sep)

    def relative(self, path: str) -> str:
        """A resolved path under a root, relative to that root (the store's ``rel_path``, as a run records it).

        >>> LocalRoots(["/"]).relative("/srv/img/cams/1.jpg")
        'srv/img/cams/1.jpg'
        """
        root = next(r for r in self.roots if self.contains_in(path, r))
        return os.path.relpath(path, root)

    def read(self, ref: str, cap: int, charge: Callable[[int], None] = lambda n: None) -> tuple[bytes, str]:
        """The bytes of the local image ``ref`` and its resolved path; a 4xx when it may not or cannot be read.

        ``cap``: the most bytes one image may have (a 413 past it); ``charge``: called with each chunk's size, so
        a request's own budget can stop the read.
        """
        path = local_path(ref)
        if not self.roots:
            raise RequestError(403, f"{ref}: local paths are not read by this backend: start it with --local-root "
                                    "DIR to serve the images under DIR")
        real = os.path.realpath(path)
        if not self.contains(real):
            raise RequestError(403, f"{ref}: outside the folders this backend reads (--local-root)")
        try:
            fd = os.open(real, _FLAGS)
        except OSError as err:
            if err.errno in (errno.ELOOP, errno.ENXIO, errno.EOPNOTSUPP):  # swapped to a link; a socket
                raise RequestError(403, f"{ref}: not a regular file") from None
            status = 404 if err.errno in (errno.ENOENT, errno.ENOTDIR) else 403
            raise RequestError(status, f"{ref}: cannot read the image ({err.strerror or err})") from None
        try:
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode):
                kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
                raise RequestError(403, f"{ref}: {kind}, not an image file")
            opened = _opened_path(fd)
            if opened is not None and not self.contains(opened):
                raise RequestError(403, f"{ref}: outside the folders this backend reads (--local-root)")
            data = read_capped(fd, cap, CHUNK, charge)
            if data is None:
                raise exceeded("max_image_bytes", f"{ref}: larger than {cap} bytes", cap)
            return data, real
        finally:
            os.close(fd)


def _opened_path(fd: int) -> str | None:
    """The path the kernel has for an open descriptor (Linux ``/proc``), or None where it cannot tell."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None
