"""A Label Studio connection that retries what is safe to retry and never leaks the API key.

The SDK's own retries are switched off (``max_retries=0``): they repeat any request on a 5xx or a dropped
connection, and repeating an import can create the same tasks twice. Here every call says whether it is *safe*
to repeat (reads, deletes, updates) or not (imports):

* nothing was sent (connection refused, connect timeout) — retried, whatever the call;
* the outcome is unknown (read timeout, connection dropped, 5xx / 408 / 429) — a safe call is retried, an unsafe
  one raises :class:`Uncertain`, and the push finds out what landed by listing the project again;
* the server said no (other 4xx) — :class:`Rejected`, never retried; 401/403 end the push with a one-line error.

Retries back off (0.5 s doubling up to 15 s) for at most ``retry_for`` seconds, long enough to ride out a server
restart. Error messages are built from the status code and the body's ``detail`` only — never from the SDK's
exception text, which carries the response headers — and any occurrence of the key is masked.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterator, TypeVar

import httpx

from ..errors import AutolabelError

T = TypeVar("T")

#: Status codes after which a request may or may not have taken effect (behind a proxy, a 502 says nothing).
TRANSIENT = frozenset({408, 429, 500, 502, 503, 504})
KEY_ENV = "LABEL_STUDIO_API_KEY"


class Rejected(AutolabelError):
    """The server refused a request (a 4xx other than 401/403/408/429): repeating it would not help."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class Uncertain(AutolabelError):
    """A request that must not be repeated blindly failed in a way that leaves its effect unknown."""


class Unreachable(AutolabelError):
    """The server did not answer (or kept failing) for the whole retry window."""


def backoff(attempt: int) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): 0.5, 1, 2, 4, 8, 15, 15, ..."""
    return min(0.5 * 2.0**attempt, 15.0)


def api_key_from_env(environ: dict[str, str] | None = None) -> str:
    """The API key from ``LABEL_STUDIO_API_KEY``, or a one-line error saying where to get one."""
    import os

    key = (environ if environ is not None else os.environ).get(KEY_ENV, "").strip()
    if not key:
        raise AutolabelError(
            f"{KEY_ENV} is not set: export your Label Studio access token (Account & Settings → Personal Access "
            "Token, or a legacy token) in that variable; it is never read from the command line or a file"
        )
    return key


def normalize_url(url: str) -> str:
    """``http://host:8080/`` → ``http://host:8080``; a URL without a scheme is an error, not a guess, and so are
    credentials in it (httpx would send them instead of the API key; they would be printed and stored with the
    URL): the message masks them."""
    import re
    from urllib.parse import urlsplit

    url = url.strip().rstrip("/")
    shown = re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://)?[^/@\s]*@", lambda m: (m.group(1) or "") + "***@", url)
    if not url.startswith(("http://", "https://")):
        raise AutolabelError(f"--url: expected http://HOST:PORT or https://HOST (got {shown!r})")
    if "@" in urlsplit(url).netloc:
        raise AutolabelError(f"--url: credentials in the URL ({shown}) are not used: remove them and put the token "
                             "in LABEL_STUDIO_API_KEY")
    return url


class Connection:
    """One Label Studio server: the SDK client plus retry and error policy (see the module docstring)."""

    def __init__(
        self,
        url: str,
        api_key: str,
        timeout: float = 60.0,
        retry_for: float = 120.0,
        sleep: Callable[[float], None] = time.sleep,
    ):
        from label_studio_sdk import LabelStudio

        self.url = normalize_url(url)
        self._key = api_key
        self.retry_for = retry_for
        self.sleep = sleep
        self.retries = 0  # requests repeated so far (for reports and tests)
        try:
            self.sdk = LabelStudio(base_url=self.url, api_key=api_key, timeout=timeout, max_retries=0)
        except Exception as err:  # noqa: BLE001 — an expired personal access token is refused right here
            raise AutolabelError(f"{self.url}: {self.describe(err)}") from None

    # -- calls ---------------------------------------------------------------------------------------------------
    def call(self, what: str, fn: Callable[..., T], *args: Any, safe: bool = True, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` under the retry policy; ``what`` names the request in errors."""
        start = time.monotonic()
        attempt = 0
        while True:
            try:
                return fn(*args, **kwargs)
            except Exception as err:  # classified below; anything unknown goes up unchanged
                status = _status(err)
                if status in (401, 403):
                    raise AutolabelError(
                        f"{self.url}: {what}: Label Studio refused the API key ({status}: {self.describe(err)}); "
                        f"check {KEY_ENV} (a personal access token or a legacy token of a user of this project)"
                    ) from None
                nothing_sent = isinstance(err, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))
                transient = nothing_sent or status in TRANSIENT or isinstance(err, httpx.TransportError)
                if status is not None and not transient:
                    raise Rejected(f"{what}: {self.describe(err)}", status) from None
                if not transient:
                    raise
                if not (safe or nothing_sent or status == 429):
                    raise Uncertain(f"{what}: {self.describe(err)}") from None
                if time.monotonic() - start > self.retry_for:
                    raise Unreachable(
                        f"{self.url}: {what}: no success after {attempt + 1} tries in {self.retry_for:g} s "
                        f"({self.describe(err)}); is Label Studio running? (raise --retry-for to wait longer)"
                    ) from None
                self.sleep(backoff(attempt))
                attempt += 1
                self.retries += 1

    def request(self, what: str, method: str, path: str, safe: bool, **kwargs: Any) -> httpx.Response:
        """A raw HTTP request to ``path`` (relative to the server) with the SDK's auth headers, retried."""

        def send() -> httpx.Response:
            headers = self.sdk._client_wrapper.get_headers()  # refreshes a personal access token when due
            http = self.sdk._client_wrapper.httpx_client.httpx_client
            response = http.request(method, f"{self.url}/{path.lstrip('/')}", headers=headers, **kwargs)
            if response.status_code >= 400:
                from label_studio_sdk.core.api_error import ApiError

                try:
                    body: Any = response.json()
                except ValueError:
                    body = response.text[:300]
                raise ApiError(status_code=response.status_code, headers={}, body=body)
            return response

        return self.call(what, send, safe=safe)

    def get_json(self, what: str, path: str, **params: Any) -> Any:
        return self.request(what, "GET", path, safe=True, params=params).json()

    def pages(self, what: str, path: str, key: str, page_size: int = 1000, **params: Any) -> Iterator[dict]:
        """Items of a paginated list endpoint (``{"total": N, key: [...]}``), page by page, each page retried."""
        page = 1
        seen = 0
        while True:
            body = self.get_json(what, path, page=page, page_size=page_size, **params)
            items = body.get(key, []) if isinstance(body, dict) else body
            yield from items
            seen += len(items)
            total = body.get("total") if isinstance(body, dict) else None
            if not items or len(items) < page_size or (total is not None and seen >= total):
                return
            page += 1

    # -- errors --------------------------------------------------------------------------------------------------
    def describe(self, err: BaseException) -> str:
        """A one-line account of ``err`` with no headers and the key masked."""
        status = _status(err)
        if status is not None:
            text = f"HTTP {status}: {_detail(getattr(err, 'body', None))}"
        elif isinstance(err, httpx.TimeoutException):
            text = f"timed out ({type(err).__name__})"
        elif isinstance(err, httpx.TransportError):
            text = f"connection failed ({type(err).__name__}: {err})"
        else:
            text = f"{type(err).__name__}: {_detail(getattr(err, 'body', None)) if hasattr(err, 'body') else err}"
        return self.scrub(" ".join(text.split()))

    def scrub(self, text: str) -> str:
        """``text`` with the API key (and its access token, if one was issued) masked."""
        for secret in (self._key, getattr(self.sdk._client_wrapper._tokens_client, "_access_token", None)
                       if hasattr(self, "sdk") else None):
            if secret:
                text = text.replace(secret, "***")
        return text


def _status(err: BaseException) -> int | None:
    status = getattr(err, "status_code", None)
    return int(status) if isinstance(status, int) else None


def _detail(body: Any, limit: int = 400) -> str:
    """The useful part of an error body: ``detail`` and ``validation_errors``, flattened to one line."""
    if isinstance(body, dict):
        parts = [str(body.get("detail") or "")]
        errors = body.get("validation_errors")
        if errors:
            parts.append(str(errors))
        text = "; ".join(p for p in parts if p) or str({k: v for k, v in body.items() if k != "exc_info"})
    else:
        text = str(body)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
