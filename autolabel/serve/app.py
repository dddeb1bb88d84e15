"""The ASGI app: Label Studio's ML-backend routes on Starlette, served by uvicorn (a production ASGI server).

Routes: ``GET /health`` (and ``/``), ``POST /setup``, ``POST /predict``, ``POST /webhook`` (acknowledged, no
training), ``GET /metrics`` (the counters). Errors are one-line JSON (``{"error": ...}``) with a 4xx/5xx status;
the server keeps serving. Optional HTTP basic auth (``BASIC_AUTH_USER`` / ``BASIC_AUTH_PASS``, the scheme Label
Studio's "Basic Authentication" model setting speaks) guards every route. Request bodies — they carry Label
Studio's token — are never logged.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import one_line
from .backend import Backend
from .protocol import RequestError

log = logging.getLogger("autolabel.serve")
USER_ENV, PASS_ENV = "BASIC_AUTH_USER", "BASIC_AUTH_PASS"
#: request bodies larger than this are refused (a batch of 1000 tasks is well under it)
MAX_BODY = 64 * 1024 * 1024


class BasicAuth:
    """HTTP basic auth on every route when a user and password are configured (constant-time comparison)."""

    def __init__(self, app: ASGIApp, user: str, password: str):
        self.app = app
        self.expected = base64.b64encode(f"{user}:{password}".encode()).decode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
            scheme, _, given = header.partition(" ")
            ok = scheme.lower() == "basic" and hmac.compare_digest(given.strip().encode(), self.expected.encode())
            if not ok:
                response = JSONResponse({"error": "authentication required: set the model's Basic Authentication "
                                                  "user and password in Label Studio"}, status_code=401,
                                        headers={"WWW-Authenticate": 'Basic realm="autolabel"'})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _body(request: Request) -> Any:
    size = int(request.headers.get("content-length") or 0)
    if size > MAX_BODY:
        raise RequestError(413, f"request body of {size} bytes is larger than {MAX_BODY}")
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RequestError(400, f"the request body is not JSON ({err})") from None


def _handler(
    backend: Backend, method: Callable[[Any], dict[str, Any]], status: int = 200
) -> Callable[[Request], Awaitable[JSONResponse]]:
    async def endpoint(request: Request) -> JSONResponse:
        try:
            body = await _body(request)
            return JSONResponse(await run_in_threadpool(method, body), status_code=status)
        except RequestError as err:
            log.warning("%s %s: %d %s", request.method, request.url.path, err.status, err.message)
            return error(err.status, err.message)
        except Exception as err:  # noqa: BLE001 — a bug must not take the server down; one line, no traceback
            message = one_line(err)
            log.error("%s %s: 500 %s: %s", request.method, request.url.path, type(err).__name__, message)
            return error(500, f"{type(err).__name__}: {message}")

    return endpoint


def create_app(backend: Backend, load: bool = True, on_failure: Callable[[], None] | None = None) -> Starlette:
    """The app over ``backend``; ``load``: load the models in a background thread at start-up."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if load:
            def _load() -> None:
                backend.load()
                if backend.state == "failed" and on_failure is not None:
                    on_failure()

            threading.Thread(target=_load, name="autolabel-load", daemon=True).start()
        try:
            yield
        finally:
            backend.close()

    async def health(request: Request) -> JSONResponse:
        body = backend.health()
        return JSONResponse(body, status_code=200 if body["ready"] else 503)

    async def metrics(request: Request) -> JSONResponse:
        return JSONResponse(backend.health()["stats"])

    def webhook(body: Any) -> dict[str, Any]:
        action = body.get("action") if isinstance(body, dict) else None
        backend.count(webhooks=1)
        return {"status": "ok", "action": action, "trained": False}

    routes = [
        Route("/", health, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/setup", _handler(backend, backend.setup), methods=["POST"]),
        Route("/predict", _handler(backend, backend.predict), methods=["POST"]),
        Route("/webhook", _handler(backend, webhook, status=201), methods=["POST"]),
    ]
    user, password = os.environ.get(USER_ENV, ""), os.environ.get(PASS_ENV, "")
    middleware = [Middleware(BasicAuth, user=user, password=password)] if user and password else []

    async def not_found(request: Request, exc: Exception) -> JSONResponse:
        status = getattr(exc, "status_code", 404)
        return error(status, f"{request.method} {request.url.path}: no such route (routes: /health, /setup, "
                             "/predict, /webhook, /metrics)")

    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan,
                     exception_handlers={404: not_found, 405: not_found})
