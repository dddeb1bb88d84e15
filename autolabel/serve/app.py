"""The ASGI app: Label Studio's ML-backend routes on Starlette, served by uvicorn (a production ASGI server).

Routes: ``GET /health`` (and ``/``), ``POST /setup``, ``POST /predict``, ``POST /webhook`` (acknowledged, no
training), ``GET /metrics`` (the counters). Every request first passes the :class:`~.guard.Guard` (Host header,
basic auth, content type). A POST then needs a place (:class:`~.limits.Admission`: a 429 when the server is full),
its body is read as it arrives with a hard cap (chunked bodies too), and the work runs on the backend's request
threads under the request's :class:`~.limits.Budget` — the HTTP side answers 408 at the deadline even if a thread
is still finishing. JSON is parsed strictly: NaN, Infinity, numbers out of float range and nesting deeper than
the parser's recursion limit are 400s. Errors are one-line JSON (``{"error": ...}``) with a 4xx/5xx status; the
server keeps serving. Request bodies — they carry Label Studio's token — are never logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..errors import one_line
from .backend import Backend
from .guard import Guard
from .limits import Budget, Ticket, exceeded
from .protocol import RequestError

log = logging.getLogger("autolabel.serve")
#: how often a request waiting for its work looks at the stop flag (seconds)
POLL = 0.2
#: a handler: the parsed body, the request's place and budget → the JSON answer
Handler = Callable[[Any, Ticket, Budget], dict[str, Any]]


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:20]} is out of range")
    return value


def parse_json(raw: bytes) -> Any:
    """A request body as JSON (an empty body is ``{}``), or a 400 naming what is wrong with it.

    >>> parse_json(b'{"x": 1.5}'), parse_json(b"  ")
    ({'x': 1.5}, {})
    """
    if not raw.strip():
        return {}
    try:
        return json.loads(raw, parse_constant=_constant, parse_float=_finite)
    except RecursionError:
        raise RequestError(400, "the request body is nested too deeply to be read as JSON") from None
    except (UnicodeDecodeError, ValueError) as err:  # json.JSONDecodeError, int digits, the two hooks above
        raise RequestError(400, f"the request body is not valid JSON ({' '.join(str(err).split())[:200]})") from None


async def read_body(request: Request, limit: int) -> bytes:
    """The body, read as it arrives and refused (413) as soon as it passes ``limit`` bytes — whatever the
    ``Content-Length`` says, or with none at all (chunked): nothing past the limit is held."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise RequestError(400, f"Content-Length {declared[:20]!r} is not a number of bytes")
        if int(declared) > limit:
            raise exceeded("max_body_bytes", f"a body of {int(declared)} bytes", limit)
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise exceeded("max_body_bytes", f"a body of over {limit} bytes", limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def within(work: Awaitable[Any], budget: Budget, stopping: threading.Event, what: str) -> Any:
    """``await work``, or a 408 when the request's time is up, or a 503 once ``stopping`` is set (the server is
    stopping: answered before the ASGI server's graceful-shutdown timeout cancels the request, which would log a
    traceback). ``stopping`` is a thread event, looked at every :data:`POLL` seconds: an asyncio event belongs to
    one event loop, and a test client runs each request in a loop of its own."""
    task = asyncio.ensure_future(work)
    try:
        while not task.done():
            if stopping.is_set():
                raise RequestError(503, "the server is stopping; send the request again in a moment")
            left = budget.deadline - budget.clock()
            if left <= 0:
                raise exceeded("max_request_seconds", what, budget.limits.max_request_seconds)
            await asyncio.wait({task}, timeout=min(left, POLL))
        return task.result()
    finally:
        task.cancel()


async def answer(request: Request, backend: Backend, handler: Handler, stopping: threading.Event,
                 status: int = 200) -> JSONResponse:
    """One POST: a place (or a 429), the body within its limit and time, the handler on a request thread, the
    answer — or a one-line JSON error. The place is given back by the thread's end (or here, if none started)."""
    where = f"{request.method} {request.url.path}"
    try:
        ticket = backend.admission.enter()
    except RequestError as err:
        log.warning("%s: %d %s", where, err.status, err.message)
        return error(err.status, err.message)
    budget = Budget(backend.limits)
    future = None
    try:
        raw = await within(read_body(request, backend.limits.max_body_bytes), budget, stopping,
                           "the request body took too long to arrive")
        future = backend.requests.submit(lambda: handler(parse_json(raw), ticket, budget))
        future.add_done_callback(lambda f: ticket.leave())  # also when it never ran (cancelled)
        # the thread stops itself at the deadline; this side answers then, whatever the thread does
        result = await within(asyncio.wrap_future(future), budget, stopping, "the request took too long")
        return JSONResponse(result, status_code=status)
    except RequestError as err:
        log.warning("%s: %d %s", where, err.status, err.message)
        return error(err.status, err.message)
    except Exception as err:  # noqa: BLE001 — a bug must not take the server down; one line, no traceback
        message = one_line(err)
        log.error("%s: 500 %s: %s", where, type(err).__name__, message)
        return error(500, f"{type(err).__name__}: {message}")
    finally:
        if future is None:
            ticket.leave()


async def not_found(request: Request, exc: Exception) -> JSONResponse:
    """404 and 405 as one-line JSON naming the routes."""
    return error(exc.status_code, f"{request.method} {request.url.path}: no such route (routes: "  # type: ignore[attr-defined]
                                  "/health, /setup, /predict, /webhook, /metrics)")


async def health(request: Request, backend: Backend) -> JSONResponse:
    """200 with the backend's health once it is ready, 503 before (loading) or after a failed load."""
    body = backend.health()
    return JSONResponse(body, status_code=200 if body["ready"] else 503)


async def metrics(request: Request, backend: Backend) -> JSONResponse:
    return JSONResponse(backend.health()["stats"])


def create_app(backend: Backend, load: bool = True, on_failure: Callable[[], None] | None = None,
               public_hosts: tuple[str, ...] = (), auth: tuple[str, str] | None = None) -> Starlette:
    """The app over ``backend``; ``load``: load the models (on the model's thread) at start-up; ``public_hosts``:
    names clients may reach it by besides ``localhost``; ``auth``: the basic-auth user and password, if any.

    ``app.state.stopping`` (a :class:`threading.Event`): set it when the server begins to stop, and the requests
    in flight answer 503 at once (:func:`within`).
    """
    stopping = threading.Event()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if load:
            backend.start(on_failure)
        try:
            yield
        finally:
            backend.close()

    def post(handler: Handler, status: int = 200) -> Callable[[Request], Awaitable[JSONResponse]]:
        return partial(answer, backend=backend, handler=handler, stopping=stopping, status=status)

    routes = [  # partials of module-level coroutines: Starlette awaits them (a lambda it would run in a thread)
        Route("/", partial(health, backend=backend), methods=["GET"]),
        Route("/health", partial(health, backend=backend), methods=["GET"]),
        Route("/metrics", partial(metrics, backend=backend), methods=["GET"]),
        Route("/setup", post(backend.setup), methods=["POST"]),
        Route("/predict", post(backend.predict), methods=["POST"]),
        Route("/webhook", post(backend.webhook, status=201), methods=["POST"]),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(Guard, names=public_hosts, auth=auth)],
                    lifespan=lifespan, exception_handlers={404: not_found, 405: not_found})
    app.state.stopping = stopping
    return app
