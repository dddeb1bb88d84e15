"""Who may talk to the backend at all, checked before any route runs (an ASGI middleware), and the start-up rules
that keep it from being exposed by accident.

* **Host header**: a name must be one this backend is reached by (``localhost``, the bound name, ``--public-host``);
  IP literals pass. A web page cannot use DNS rebinding (its own name pointing at 127.0.0.1) to reach the backend
  from the operator's browser: its requests carry its own name.
* **Basic auth** (``BASIC_AUTH_USER`` / ``BASIC_AUTH_PASS``, Label Studio's model setting "Basic Authentication")
  on every route, compared in constant time. It fails closed: one of the two set without the other, or set empty,
  is an error at start-up, never "auth off".
* **Content type**: a POST must say ``application/json``. Browsers send ``text/plain`` forms to any origin without
  asking; ``application/json`` needs a CORS preflight, which this server never grants.
* **Binding**: beyond loopback without auth is refused, unless ``--insecure`` (then a warning on every start).

Plain ASGI (no Starlette import): the module imports without the ``serve`` extra.
"""

from __future__ import annotations

import base64
import hmac
import ipaddress
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from ..errors import ConfigError
from .network import resolve

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
USER_ENV, PASS_ENV = "BASIC_AUTH_USER", "BASIC_AUTH_PASS"
LOOPBACK_NAMES = ("localhost",)


def basic_auth(environ: Mapping[str, str]) -> tuple[str, str] | None:
    """The configured (user, password), None when neither is set; a ConfigError when only one is, or is empty."""
    user, password = environ.get(USER_ENV), environ.get(PASS_ENV)
    if user is None and password is None:
        return None
    for name, value in ((USER_ENV, user), (PASS_ENV, password)):
        if value is None or not value.strip():
            state = "is empty" if value is not None else "is not set"
            raise ConfigError(f"{name} {state} while {USER_ENV if name == PASS_ENV else PASS_ENV} is set: basic auth "
                              f"is never turned off by an empty value; set both, or unset both")
    return user, password  # type: ignore[return-value]


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` serves this machine only (every address it stands for is a loopback one)."""
    name = host.strip("[]")
    if name.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        addresses = resolve(name)
        return bool(addresses) and all(a.is_loopback for a in addresses)


def bind_warning(host: str, auth: bool, insecure: bool) -> str | None:
    """The warning to print for this bind, if any; a ConfigError when it is refused (see the module docstring)."""
    if auth or is_loopback(host):
        return None
    if not insecure:
        raise ConfigError(f"--host {host}: serving beyond this machine without authentication: set "
                          f"{USER_ENV} and {PASS_ENV} (and the same in the model's settings in Label Studio), or pass "
                          "--insecure to accept that anyone who reaches the port can use the backend")
    return (f"WARNING: --insecure: serving on {host} WITHOUT AUTHENTICATION: anyone who can reach this port can run "
            "the models and read what the backend can read; set BASIC_AUTH_USER and BASIC_AUTH_PASS")


def host_of(header: str) -> str:
    """The host name of a ``Host`` header, without port or brackets, lower case.

    >>> host_of("LocalHost:9090"), host_of("[::1]:9090"), host_of("ml.example.org.")
    ('localhost', '::1', 'ml.example.org')
    """
    header = header.strip()
    if header.startswith("["):
        return header[1:].partition("]")[0].lower()
    return header.rpartition(":")[0].lower().rstrip(".") if header.count(":") == 1 else header.lower().rstrip(".")


class Guard:
    """The checks of the module docstring, in that order, each refused with a one-line JSON error."""

    def __init__(self, app: ASGIApp, names: Iterable[str], auth: tuple[str, str] | None):
        self.app = app
        self.names = {host_of(n) for n in (*LOOPBACK_NAMES, *names) if n}
        self.expected = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()) if auth else None

    def allows_host(self, header: str) -> bool:
        host = host_of(header)
        try:
            ipaddress.ip_address(host)
            return True
        except ValueError:
            return host in self.names

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get(b"host", "")
        problem: tuple[int, str, dict[str, str]] | None = None
        if not self.allows_host(host):
            problem = (421, f"Host {host_of(host)!r} is not a name this backend answers to (a guard against DNS "
                            f"rebinding): start it with --public-host {host_of(host) or 'NAME'} if Label Studio "
                            "reaches it by that name", {})
        elif self.expected is not None and not _authorized(headers.get(b"authorization", ""), self.expected):
            problem = (401, "authentication required: set the model's Basic Authentication user and password in "
                            "Label Studio", {"WWW-Authenticate": 'Basic realm="autolabel"'})
        elif scope["method"] == "POST" and \
                headers.get(b"content-type", "").partition(";")[0].strip().lower() != "application/json":
            problem = (415, "a POST body must be sent as Content-Type: application/json", {})
        if problem is None:
            await self.app(scope, receive, send)
            return
        status, message, extra = problem
        body = json.dumps({"error": message}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   *((k.lower().encode(), v.encode()) for k, v in extra.items())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})



def _authorized(header: str, expected: bytes) -> bool:
    """Whether an ``Authorization`` header is basic auth with the expected credentials (constant-time compare)."""
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "basic" and hmac.compare_digest(given.strip().encode(), expected)
