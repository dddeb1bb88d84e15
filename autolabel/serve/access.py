"""Label Studio's URL and token, where they may come from, and which of its URLs the token may be sent to.

* **From the operator**: ``--label-studio-url`` / ``LABEL_STUDIO_URL`` and ``LABEL_STUDIO_API_KEY`` (the token is
  never a flag: command lines are visible to every user of the machine). These always win.
* **From a setup call** (Label Studio sends its URL and its project owner's token when a model is connected) only
  when the call proves it comes from Label Studio: the server checks basic auth (Label Studio's model setting sends
  it), or the token in the call is the operator's own. An anonymous caller can never point the backend, and the
  token, at a server of its choosing.
* **Only Label Studio's files**: a reference is read through Label Studio only under ``/data/upload/`` and
  ``/data/local-files/?d=`` (normalized: no ``..``, no encoded dots, no backslashes), and the token goes only to
  such URLs of Label Studio's own origin (scheme, host, port) — so neither a task nor a redirect can turn the token
  into an authenticated call to Label Studio's API.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

from .protocol import RequestError

URL_ENV, KEY_ENV = "LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY"
#: the paths under which Label Studio serves task files (relative to its base URL)
FILE_PREFIXES = ("/data/upload/", "/data/local-files/")


def redact(url: str) -> str:
    """A URL for messages: without credentials, query string or fragment (tokens and signatures live there).

    >>> redact("https://user:secret@ls.example.org:8080/data/upload/1/a.png?token=x#y")
    'https://***@ls.example.org:8080/data/upload/1/a.png'
    """
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    return parts._replace(netloc=netloc, query="", fragment="").geturl()


def clean_url(raw: str, source: str) -> str:
    """A Label Studio base URL (``http(s)://host[:port][/prefix]``, no trailing ``/``), or ValueError naming
    ``source`` and the problem. Credentials in the URL are refused: they would be sent instead of the token, and
    logged and stored with the URL."""
    url = raw.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{source}: expected http://HOST:PORT or https://HOST (got {redact(url)!r})")
    if "@" in parts.netloc:
        raise ValueError(f"{source}: credentials in the URL ({redact(url)}) are not used: remove them and put "
                         f"the token in {KEY_ENV}")
    if parts.query or parts.fragment:
        raise ValueError(f"{source}: a base URL has no query string or fragment (got {redact(url)})")
    return url


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or (443 if scheme == "https" else 80)


def _clean_path(path: str) -> str | None:
    """The decoded path if it has no dot segments, empty segments, backslashes or NULs, else None."""
    decoded = unquote(path)
    if "\\" in decoded or "\x00" in decoded or "//" in decoded:
        return None
    return None if any(segment in (".", "..") for segment in decoded.split("/")) else decoded


def file_path(ref: str) -> str:
    """The path and query of a Label Studio file reference (``/data/upload/…``, ``/data/local-files/?d=…``), as
    given, once checked; a 400 naming the problem otherwise.

    >>> file_path("/data/local-files/?d=photos/a%20b.jpg")
    '/data/local-files/?d=photos/a%20b.jpg'
    """
    parts = urlsplit(ref)
    decoded = _clean_path(parts.path) if not (parts.scheme or parts.netloc) else None
    if decoded is None or not (decoded.startswith(FILE_PREFIXES) or decoded == "/data/local-files"):
        raise RequestError(400, f"{redact(ref)}: not a Label Studio file reference: only /data/upload/... and "
                                "/data/local-files/?d=... are read through Label Studio (no '..' or '//')")
    if decoded.startswith("/data/local-files"):
        values = parse_qs(parts.query).get("d", [])
        if decoded.rstrip("/") != "/data/local-files" or len(values) != 1 or _clean_path("/" + values[0]) is None:
            raise RequestError(400, f"{redact(ref)}: a local-files reference is /data/local-files/?d=<path below "
                                    "Label Studio's document root> (one d=, no '..' or '//')")
    return parts.path + ("?" + parts.query if parts.query else "")


@dataclass(frozen=True)
class Access:
    """Where Label Studio is and the token to read its files with (either may be unknown)."""

    url: str | None = None
    token: str | None = None

    def same_origin(self, url: str) -> bool:
        return self.url is not None and _origin(url) == _origin(self.url)

    def file_url(self, ref: str) -> str:
        """The absolute URL of the file reference ``ref`` on this Label Studio (a 400 when it is not one)."""
        path = file_path(ref)
        if self.url is None:
            raise RequestError(400, f"{redact(ref)}: a Label Studio file, but the backend does not know Label "
                                    f"Studio's URL: set {URL_ENV} (or --label-studio-url) where it runs")
        return self.url + path

    def is_file_url(self, url: str) -> bool:
        """Whether ``url`` is one of this Label Studio's files (its origin, its base path, a file prefix)."""
        if not self.same_origin(url):
            return False
        base = urlsplit(self.url or "").path  # clean_url: no trailing "/"
        parts = urlsplit(url)
        if base and not parts.path.startswith(base + "/"):
            return False
        try:
            file_path(parts.path[len(base):] + ("?" + parts.query if parts.query else ""))
        except RequestError:
            return False
        return True

    @property
    def origin(self) -> tuple[str, int] | None:
        """(host, port) of Label Studio, the port filled in from the scheme."""
        return _origin(self.url)[1:] if self.url else None


class Trust:
    """The operator's Label Studio settings, and which setup calls may add to them (see the module docstring).

    ``authenticated``: every request the handlers see has passed basic auth (the server runs with it), so a setup
    call comes from Label Studio or from someone given its password.
    """

    def __init__(self, operator: Access, authenticated: bool):
        self.operator, self.authenticated = operator, authenticated

    @classmethod
    def from_environment(cls, url_flag: str | None, authenticated: bool,
                         environ: Mapping[str, str] | None = None) -> Trust:
        """The flag's URL (else ``LABEL_STUDIO_URL``) and ``LABEL_STUDIO_API_KEY``; a ConfigError for a bad URL."""
        from ..errors import ConfigError

        env = os.environ if environ is None else environ
        raw = url_flag or env.get(URL_ENV, "").strip() or None
        try:
            url = clean_url(raw, "--label-studio-url" if url_flag else URL_ENV) if raw else None
        except ValueError as err:
            raise ConfigError(str(err)) from None
        return cls(Access(url, env.get(KEY_ENV, "").strip() or None), authenticated)

    def from_setup(self, hostname: object, token: object) -> Access:
        """What a setup call's ``hostname`` and ``access_token`` add to the operator's settings: its URL and token
        only when the call is proven (see the class docstring); the operator's values win whatever it says."""
        token = token.strip() if isinstance(token, str) and token.strip() else None
        proven = self.authenticated or (self.operator.token is not None and token == self.operator.token)
        url = self.operator.url
        if url is None and proven and isinstance(hostname, str) and hostname.strip():
            try:
                url = clean_url(hostname, "setup: hostname")
            except ValueError as err:
                raise RequestError(400, str(err)) from None
        return Access(url, self.operator.token or (token if proven else None))
