"""Making the images reachable from Label Studio, and the reference each task carries (``data.image``).

Three ways (``--images``):

* ``local-files`` (default) — Label Studio serves files from its own disk under
  ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT`` (with ``LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true``), and only
  from folders a project has a *Local Files import storage* for. We create that storage for each input root of the
  run (as the server sees it: the server must see the images at the same paths as the run did), and reference
  each image as ``/data/local-files/?d=<path relative to the document root>``. The document root is read from the
  server's own answer to a probe unless ``--document-root`` says it. Label Studio refuses a storage *at* the
  document root: the input folder must lie strictly below it.
* ``upload`` — each image is uploaded into the project once (remembered in the run store).
* ``url`` — the images are already served somewhere: ``--image-root PREFIX`` + the path relative to the input
  root (``https://host/data/``, ``s3://bucket/prefix/`` with a cloud storage set up in Label Studio, ...).

Before tasks are imported, one image per input root is fetched through Label Studio (``local-files``, ``upload``)
so that a server that cannot serve them fails the push with the fix, not the annotators later.
"""

from __future__ import annotations

import os
import re
from pathlib import PurePosixPath
from typing import Callable
from urllib.parse import quote

from ..errors import AutolabelError
from ..exports.labelstudio import LOCAL_FILES, image_reference
from ..intake import Source
from .client import Connection, Rejected, Uncertain, backoff
from .state import PushState


MODES = ("local-files", "upload", "url")
_ROOT_IN_ERROR = re.compile(r'LOCAL_FILES_DOCUMENT_ROOT="([^"]*)"')
_SERVER_HINT = ("start Label Studio with LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true and "
                "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT set to a folder above the images")


def input_root(row: Source) -> str:
    """The input folder an image was found under: its absolute path minus its path relative to that folder."""
    path, rel = row.path.replace("\\", "/"), row.rel_path.replace("\\", "/")
    if rel and path.endswith("/" + rel):
        return path[: -len(rel) - 1] or "/"
    return str(PurePosixPath(path).parent)


def local_files_prefix(root: str, document_root: str) -> str:
    """The ``image_root`` giving ``/data/local-files/?d=<root relative to the document root>/<rel_path>``.

    >>> local_files_prefix("/srv/data/cams", "/srv/data")
    '/data/local-files/?d=cams/'
    """
    rel = os.path.relpath(root, document_root).replace(os.sep, "/")
    return LOCAL_FILES + quote(rel, safe="/") + "/"


class ImageAccess:
    """Gives each row its ``data.image`` reference, after making it reachable (see the module docstring)."""

    def __init__(self, conn: Connection, project_id: int, mode: str, state: PushState,
                 image_root: str | None = None, document_root: str | None = None):
        if mode not in MODES:
            raise AutolabelError(f"--images: unknown mode {mode!r} (known: {', '.join(MODES)})")
        if mode == "url" and not image_root:
            raise AutolabelError("--images url needs --image-root PREFIX (e.g. https://host/images/)")
        self.conn, self.project_id, self.mode, self.state = conn, project_id, mode, state
        self.image_root, self.document_root = image_root, document_root
        self._prefixes: dict[str, str] = {}  # input root -> image_root prefix (local-files)
        self._uploads = state.uploads() if mode == "upload" else {}

    def reference(self, row: Source, key: str) -> str | None:
        """The row's reference, or None when it could not be made reachable (upload failed)."""
        if self.mode == "url":
            return image_reference(row.rel_path, self.image_root or "")
        if self.mode == "upload":
            return self._uploads.get(key)
        return image_reference(row.rel_path, self._prefixes[input_root(row)])

    def prepare(self, rows: list[tuple[str, Source]], progress: Callable[[int], None] | None = None) -> dict[str, str]:
        """Make ``rows`` ((key, row) pairs) reachable; return {key: one-line reason} for those that are not."""
        if self.mode == "local-files":
            roots: dict[str, tuple[str, Source]] = {}
            for key, row in rows:
                roots.setdefault(input_root(row), (key, row))  # its first image stands for the folder
            self._local_files(roots)
            return {}
        if self.mode == "upload":
            return self._upload([(k, r) for k, r in rows if k not in self._uploads], progress)
        return {}

    # -- local files ---------------------------------------------------------------------------------------------
    def _local_files(self, roots: dict[str, tuple[str, Source]]) -> None:
        document_root = self.document_root or self._probe_document_root()
        have = self._storage_paths()
        for root, (_key, row) in sorted(roots.items()):
            if not _strictly_under(root, document_root):
                raise AutolabelError(
                    f"{row.rel_path}: its input folder {root} is not below Label Studio's local-files document root "
                    f"{document_root}: {_SERVER_HINT} (a parent of {root}), or push with --images upload"
                )
            self._ensure_storage(root, have)
            self._prefixes[root] = local_files_prefix(root, document_root)
            self._check_served(image_reference(row.rel_path, self._prefixes[root]), row)

    def _ensure_storage(self, root: str, have: list[str]) -> None:
        """A local-files storage covering ``root`` (created once: after a lost answer, listed again first)."""
        for attempt in range(5):
            if any(root == p or root.startswith(p + "/") for p in have):
                return
            try:
                self.conn.call("create local-files storage", self.conn.sdk.import_storage.local.create,
                               project=self.project_id, path=root, title=f"autolabel: {root}"[:256],
                               use_blob_urls=False, safe=False)
                have.append(root)
                return
            except Rejected as err:
                raise AutolabelError(f"{self.conn.url}: Label Studio refused a local-files storage for {root} "
                                     f"({err}); {_SERVER_HINT}, or push with --images upload") from None
            except Uncertain:
                self.conn.sleep(backoff(attempt))
                have[:] = self._storage_paths()
        raise AutolabelError(f"{self.conn.url}: could not create a local-files storage for {root} (5 tries)")

    def _storage_paths(self) -> list[str]:
        """The folders the project's local-files storages are for (without the trailing slash one made by hand
        in the UI may have)."""
        storages = self.conn.call("list storages", self.conn.sdk.import_storage.local.list, project=self.project_id)
        return [s.path.rstrip("/") for s in storages if s.path]

    def _probe_document_root(self) -> str:
        """The server's document root, read from its refusal of a storage at ``/`` (nothing is created)."""
        try:
            self.conn.call("probe local-files document root", self.conn.sdk.import_storage.local.validate,
                           project=self.project_id, path="/")
        except Rejected as err:
            found = _ROOT_IN_ERROR.search(str(err))
            if found:
                return found.group(1).rstrip("/") or "/"
        raise AutolabelError(f"{self.conn.url}: cannot tell Label Studio's local-files document root; pass "
                             "--document-root DIR (the server's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT)")

    def _check_served(self, reference: str, row: Source) -> None:
        try:
            self.conn.request(f"fetch {row.rel_path} through Label Studio", "GET", reference, safe=True)
        except Rejected as err:
            raise AutolabelError(
                f"{row.rel_path}: Label Studio cannot serve {reference} ({err.status}); {_SERVER_HINT} (and the "
                f"server must see the images at {row.path}), or push with --images upload"
            ) from None

    # -- upload --------------------------------------------------------------------------------------------------
    def _upload(self, rows: list[tuple[str, Source]], progress: Callable[[int], None] | None) -> dict[str, str]:
        failed: dict[str, str] = {}
        checked = False
        for key, row in rows:
            try:
                with open(row.path, "rb") as f:
                    data = f.read()
            except OSError as err:
                failed[key] = f"cannot read {row.path} ({err.strerror or err})"
                continue
            name = os.path.basename(row.rel_path)
            try:
                body = self.conn.request(
                    f"upload {row.rel_path}", "POST", f"api/projects/{self.project_id}/import", safe=False,
                    params={"commit_to_project": "false"}, files={"file": (name, data)},
                ).json()
                upload = self.conn.call("get uploaded file", self.conn.sdk.files.get, body["file_upload_ids"][0])
            except (Rejected, Uncertain) as err:  # Uncertain: uploaded again next push (a spare file at worst)
                failed[key] = str(err)
                continue
            url = "/data/" + str(upload.file).lstrip("/")
            if not checked:
                self._check_served(url, row)
                checked = True
            self.state.record_upload(key, url)
            self._uploads[key] = url
            if progress:
                progress(1)
        return failed


def _strictly_under(path: str, root: str) -> bool:
    path, root = path.rstrip("/"), root.rstrip("/")
    return path != root and (path + "/").startswith(root + "/") if root else path != ""
