"""The bytes behind a task's image reference, fetched the ways Label Studio references images.

* ``/data/local-files/?d=…`` and ``/data/upload/…``: through the Label Studio server, with its URL and token (from
  the setup call, or ``LABEL_STUDIO_URL`` / ``LABEL_STUDIO_API_KEY``, which win when set);
* ``http(s)://…``: fetched directly; the token is sent only to the Label Studio server itself, never elsewhere;
* anything else: a local path (or ``file://``) on the backend's machine.

With ``allowed_hosts`` set, every URL — the Label Studio server's included, and every redirect hop — must resolve
only to addresses of those hosts (names, IPs or CIDR networks), so a task cannot make the backend fetch from
inside a network it should not reach. The token never appears in an error message.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse

import httpx

from .protocol import RequestError

#: an image larger than this is refused before it is read whole
MAX_BYTES = 256 * 1024 * 1024
MAX_REDIRECTS = 5
URL_ENV, KEY_ENV = "LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY"


@dataclass(frozen=True)
class Access:
    """Where Label Studio is and the token to read its files with (either may be unknown)."""

    url: str | None = None
    token: str | None = None

    @classmethod
    def of(cls, url: str | None, token: str | None, environ: dict[str, str] | None = None) -> Access:
        """``url`` / ``token`` (from a setup call), with the environment's values taking precedence."""
        env = os.environ if environ is None else environ
        url = (env.get(URL_ENV) or url or "").strip().rstrip("/") or None
        token = (env.get(KEY_ENV) or token or "").strip() or None
        return cls(url, token)


def rel_path(ref: str) -> str:
    """A name for a reference, for the store: the local-files path, the upload path, or the URL's path.

    >>> rel_path("/data/local-files/?d=photos/a%20b.jpg"), rel_path("/data/upload/3/x.png")
    ('photos/a b.jpg', 'upload/3/x.png')
    """
    parsed = urlparse(ref)
    if parsed.path.rstrip("/").endswith("/data/local-files"):
        for part in parsed.query.split("&"):
            if part.startswith("d="):
                return unquote(part[2:])
    if parsed.path.startswith("/data/"):
        return unquote(parsed.path[len("/data/"):])
    return unquote(parsed.path.lstrip("/")) or ref


class HostPolicy:
    """Which hosts URLs may resolve to: ``None`` allows all; else names, IP addresses or networks."""

    def __init__(self, allowed: list[str] | None):
        self.allowed = [a.strip() for a in allowed or [] if a.strip()] or None

    def check(self, url: str) -> None:
        if self.allowed is None:
            return
        host = urlparse(url).hostname
        if not host:
            raise RequestError(400, f"{_safe(url)}: no host in the URL")
        mine = _addresses(host)
        if not mine:
            raise RequestError(502, f"{host}: cannot resolve the host name")
        networks = []
        for entry in self.allowed:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                networks.extend(ipaddress.ip_network(a) for a in _addresses(entry))
        outside = [a for a in mine if not any(a in n for n in networks)]
        if outside:
            raise RequestError(403, f"{host} resolves to {outside[0]}, outside --allowed-hosts "
                                    f"({', '.join(self.allowed)}); add the host there if it is trusted")


def _addresses(host: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        infos = socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError):
        return []
    return sorted({ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos}, key=str)


def _safe(url: str) -> str:
    """A URL for messages: without query string (tokens and signatures live there)."""
    parsed = urlparse(url)
    return parsed._replace(query="", fragment="").geturl() if parsed.query else url


class Fetcher:
    """Fetches image bytes; one pooled HTTP client shared by the request threads."""

    def __init__(self, allowed_hosts: list[str] | None = None, timeout: float = 30.0):
        self.policy = HostPolicy(allowed_hosts)
        self.client = httpx.Client(timeout=timeout, follow_redirects=False)
        self._bearer: dict[str, tuple[str, float]] = {}  # personal access token → (access token, expiry)
        self._lock = threading.Lock()

    def close(self) -> None:
        self.client.close()

    def fetch(self, ref: str, access: Access) -> bytes:
        """The bytes of ``ref`` or a RequestError (4xx: the reference or setup is wrong; 502: the source failed)."""
        if ref.startswith("/data/"):
            if not access.url:
                raise RequestError(400, f"{_safe(ref)}: a Label Studio file, but the backend does not know Label "
                                        f"Studio's URL: connect it from the project (setup sends it) or set {URL_ENV}")
            return self._http(access.url + ref, access)
        if ref.startswith(("http://", "https://")):
            return self._http(ref, access)
        if ref.startswith(("s3://", "gs://", "azure-blob://", "gcs://")):
            raise RequestError(400, f"{_safe(ref)}: cloud storage references cannot be read here: turn on "
                                    "'Use pre-signed URLs' in the project's storage settings")
        path = Path(unquote(ref[len("file://"):]) if ref.startswith("file://") else ref)
        try:
            size = path.stat().st_size
            if size > MAX_BYTES:
                raise RequestError(413, f"{ref}: {size} bytes is larger than {MAX_BYTES} bytes")
            return path.read_bytes()
        except OSError as err:
            raise RequestError(404, f"{ref}: cannot read the image ({err.strerror or err})") from None

    def _http(self, url: str, access: Access) -> bytes:
        for _ in range(MAX_REDIRECTS + 1):
            self.policy.check(url)
            ours = bool(access.url and access.token and _same_origin(url, access.url))
            headers = {"Authorization": self._authorization(access)} if ours else {}
            try:
                with self.client.stream("GET", url, headers=headers) as response:
                    if response.is_redirect:
                        url = urljoin(url, response.headers.get("location", ""))
                        continue
                    if response.status_code != 200:
                        hint = " (the token was refused: reconnect the model or check LABEL_STUDIO_API_KEY)" \
                            if response.status_code in (401, 403) and ours else ""
                        raise RequestError(502, f"{_safe(url)}: answered {response.status_code}{hint}")
                    chunks, total = [], 0
                    for chunk in response.iter_bytes():
                        total += len(chunk)
                        if total > MAX_BYTES:
                            raise RequestError(413, f"{_safe(url)}: larger than {MAX_BYTES} bytes")
                        chunks.append(chunk)
                    return b"".join(chunks)
            except httpx.HTTPError as err:
                raise RequestError(502, f"{_safe(url)}: cannot fetch the image ({type(err).__name__})") from None
        raise RequestError(502, f"{_safe(url)}: more than {MAX_REDIRECTS} redirects")

    def _authorization(self, access: Access) -> str:
        """``Token <key>`` for a legacy token; a personal access token (a JWT) is exchanged for a Bearer token."""
        token = access.token or ""
        if token.count(".") != 2:
            return f"Token {token}"
        with self._lock:
            cached = self._bearer.get(token)
            if cached and cached[1] > time.monotonic():
                return f"Bearer {cached[0]}"
            refresh = access.url + "/api/token/refresh/"
            self.policy.check(refresh)
            try:
                response = self.client.post(refresh, json={"refresh": token})
                response.raise_for_status()
                bearer = response.json()["access"]
            except (httpx.HTTPError, KeyError, ValueError):
                raise RequestError(502, f"{access.url}: the personal access token was refused; create a new one "
                                        f"(Account & Settings) and set {KEY_ENV}") from None
            self._bearer[token] = (bearer, time.monotonic() + 240.0)
            return f"Bearer {bearer}"


def _same_origin(url: str, base: str) -> bool:
    a, b = urlparse(url), urlparse(base)
    return (a.scheme, a.hostname, a.port) == (b.scheme, b.hostname, b.port)
