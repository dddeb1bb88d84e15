"""The bytes behind a task's image reference, fetched the ways Label Studio references images, within the request's
budget (:class:`~.limits.Budget`: bytes, time) and the per-image cap.

* ``/data/upload/…`` and ``/data/local-files/?d=…``: through Label Studio, with its URL and token
  (:mod:`.access`: the operator's, or a proven setup call's);
* ``http(s)://…``: fetched directly, redirects followed by hand (at most :data:`MAX_REDIRECTS`), every hop
  checked by the host policy on the address actually connected to (:mod:`.network`). The token is sent on a hop
  only while the whole chain has stayed on Label Studio's files; a URL of Label Studio's that is not one of its
  files is refused, with or without the token;
* ``/abs/path`` and ``file:///abs/path``: under the operator's ``--local-root`` folders only (:mod:`.localfiles`).

Every read is bounded: a chunk loop with a hard cap on bytes, and a timeout no longer than what is left of the
request's time (a source trickling a byte at a time ends at the deadline). Proxy variables and ``.netrc`` are
ignored (``trust_env`` off): a fetch never goes anywhere the policy did not check, with credentials it did not
choose. The token never appears in an error message or log line.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Iterable
from functools import cache
from urllib.parse import unquote, urljoin, urlsplit

import httpcore

from .access import KEY_ENV, Access, redact
from .limits import Budget, exceeded
from .localfiles import LocalRoots
from .network import HostPolicy, PinnedBackend
from .protocol import RequestError

MAX_REDIRECTS = 5
#: one network operation (connect, one read) never waits longer than this, whatever time the request has left
IO_TIMEOUT = 30.0
_REDIRECTS = (301, 302, 303, 307, 308)
_NETWORK_ERRORS = (httpcore.NetworkError, httpcore.TimeoutException, httpcore.ProtocolError,
                   httpcore.UnsupportedProtocol, httpcore.ProxyError)


def rel_path(ref: str) -> str:
    """A name for a reference, for the store: the local-files path, the upload path, or the URL's path.

    >>> rel_path("/data/local-files/?d=photos/a%20b.jpg"), rel_path("/data/upload/3/x.png")
    ('photos/a b.jpg', 'upload/3/x.png')
    """
    parsed = urlsplit(ref)
    if parsed.path.rstrip("/").endswith("/data/local-files"):
        for part in parsed.query.split("&"):
            if part.startswith("d="):
                return unquote(part[2:])
    if parsed.path.startswith("/data/"):
        return unquote(parsed.path[len("/data/"):])
    return unquote(parsed.path.lstrip("/")) or ref


class Fetcher:
    """Fetches image bytes; one connection pool shared by the request threads."""

    def __init__(self, roots: LocalRoots | None = None, policy: HostPolicy | None = None,
                 backend: PinnedBackend | None = None, io_timeout: float = IO_TIMEOUT):
        self.roots = roots or LocalRoots()
        self.policy = policy or HostPolicy()
        self.io_timeout = io_timeout
        self.pool = httpcore.ConnectionPool(ssl_context=_ssl_context(), max_connections=64,
                                            keepalive_expiry=30.0,
                                            network_backend=backend or PinnedBackend(self.policy))
        self._bearer: dict[str, tuple[str, float]] = {}  # personal access token → (access token, expiry)
        self._lock = threading.Lock()

    def close(self) -> None:
        self.pool.close()

    def stored_name(self, ref: str, local: str | None) -> str:
        """The name the store gives an image (its ``rel_path``): a local file's path relative to its
        ``--local-root``, as a run names it; else the reference's own name (:func:`rel_path`)."""
        return self.roots.relative(local) if local else rel_path(ref)

    def fetch(self, ref: str, access: Access, budget: Budget) -> tuple[bytes, str | None]:
        """The bytes of ``ref`` and, for a local file, its resolved path; a RequestError otherwise (4xx: the
        reference, the setup or a limit; 502: the source failed)."""
        budget.remaining()
        cap = budget.limits.max_image_bytes
        if ref.startswith("/data/"):
            return self._http(access.file_url(ref), access, budget, on_label_studio=True), None
        if ref.startswith(("http://", "https://")):
            return self._http(ref, access, budget, on_label_studio=access.is_file_url(ref)), None
        if ref.startswith(("s3://", "gs://", "azure-blob://", "gcs://")):
            raise RequestError(400, f"{redact(ref)}: cloud storage references cannot be read here: turn on "
                                    "'Use pre-signed URLs' in the project's storage settings")
        if ref.startswith(("file://", "/")):
            return self.roots.read(ref, cap, budget.charge_bytes)
        raise RequestError(400, f"{redact(ref)}: not an image reference this backend reads (an http(s) URL, a Label "
                                "Studio /data/ file, or an absolute local path under --local-root)")

    def _http(self, url: str, access: Access, budget: Budget, on_label_studio: bool) -> bytes:
        """GET ``url``, following redirects by hand; ``on_label_studio``: the chain starts at one of Label
        Studio's files (the token may be sent while it stays on them)."""
        for _ in range(MAX_REDIRECTS + 1):
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise RequestError(400, f"{redact(url)}: only http(s) URLs are fetched")
            if access.same_origin(url) and not access.is_file_url(url):
                raise RequestError(403, f"{redact(url)}: a Label Studio URL that is not one of its files "
                                        "(/data/upload/, /data/local-files/): not fetched")
            on_label_studio = on_label_studio and access.is_file_url(url)
            headers = [(b"Authorization", self._authorization(access, budget).encode())] \
                if on_label_studio and access.token else []
            try:
                with self.pool.stream("GET", url, headers=headers, extensions=self._timeouts(budget)) as response:
                    if response.status in _REDIRECTS:
                        location = _header(response.headers, b"location")
                        if not location:
                            raise RequestError(502, f"{redact(url)}: a redirect without a Location")
                        url = urljoin(url, location)
                        continue
                    if response.status != 200:
                        hint = "" if response.status not in (401, 403) or not on_label_studio else \
                            " (the token was refused: check LABEL_STUDIO_API_KEY)" if headers else \
                            f" (no token: set {KEY_ENV} where the backend runs)"
                        raise RequestError(502, f"{redact(url)}: answered {response.status}{hint}")
                    return _read(response.iter_stream(), url, budget)
            except _NETWORK_ERRORS as err:
                budget.remaining()  # a timeout at the deadline is the request's time running out: a 408
                raise RequestError(502, f"{redact(url)}: cannot fetch the image ({type(err).__name__})") from None
        raise RequestError(502, f"{redact(url)}: more than {MAX_REDIRECTS} redirects")

    def _timeouts(self, budget: Budget) -> dict[str, dict[str, float]]:
        timeout = min(self.io_timeout, budget.remaining())
        return {"timeout": {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}}

    def _authorization(self, access: Access, budget: Budget) -> str:
        """``Token <key>`` for a legacy token; a personal access token (a JWT) is exchanged for a Bearer token at
        Label Studio's own ``/api/token/refresh/`` (and cached for 4 minutes)."""
        token = access.token or ""
        if token.count(".") != 2:
            return f"Token {token}"
        with self._lock:
            cached = self._bearer.get(token)
            if cached and cached[1] > time.monotonic():
                return f"Bearer {cached[0]}"
            try:
                with self.pool.stream("POST", f"{access.url}/api/token/refresh/", content=json.dumps(
                        {"refresh": token}).encode(), headers=[(b"Content-Type", b"application/json")],
                        extensions=self._timeouts(budget)) as response:
                    if response.status != 200:
                        raise ValueError
                    body = b"".join(_capped(response.iter_stream(), 65536))
                bearer = str(json.loads(body)["access"])
            except (*_NETWORK_ERRORS, KeyError, TypeError, ValueError):
                raise RequestError(502, f"{access.url}: the personal access token was refused; create a new one "
                                        f"(Account & Settings) and set {KEY_ENV}") from None
            self._bearer[token] = (bearer, time.monotonic() + 240.0)
            return f"Bearer {bearer}"


@cache
def _ssl_context() -> ssl.SSLContext:
    """httpx's verified TLS context (certifi's roots, or SSL_CERT_FILE / SSL_CERT_DIR), built once per process."""
    from httpx import create_ssl_context

    return create_ssl_context()


def _header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> str | None:
    return next((v.decode("latin-1") for k, v in headers if k.lower() == name), None)


def _capped(chunks: Iterable[bytes], cap: int) -> Iterable[bytes]:
    total = 0
    for chunk in chunks:
        total += len(chunk)
        if total > cap:
            raise ValueError(f"over {cap} bytes")
        yield chunk


def _read(chunks: Iterable[bytes], url: str, budget: Budget) -> bytes:
    """The body, chunk by chunk: the per-image cap, the request's byte budget and its deadline checked on each."""
    cap = budget.limits.max_image_bytes
    out, total = [], 0
    for chunk in chunks:
        total += len(chunk)
        if total > cap:
            raise exceeded("max_image_bytes", f"{redact(url)}: larger than {cap} bytes", cap)
        budget.charge_bytes(len(chunk))
        budget.remaining()
        out.append(chunk)
    return b"".join(out)
