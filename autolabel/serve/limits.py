"""Every limit ``autolabel serve`` puts on what a caller can make it do, and the per-request budget that enforces
the ones a request spends as it goes (bytes fetched, pixels decoded, wall time).

Each limit has a default, a flag and an environment variable (the flag wins over the variable); a request that
crosses one is refused with its 4xx and a one-line message naming the flag that raises it. The table is the
single source: the CLI's flags, the docs page (docs/reference/serve-security.md) and the messages are all read from it.

Worst-case memory of the server is about ``(max_concurrent + max_queued) × max_request_bytes`` of fetched image
bytes, plus one pipeline batch of decoded pixels, plus ``max_concurrent`` request bodies being parsed.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields

from ..errors import ConfigError
from .protocol import RequestError

MiB = 1024 * 1024


@dataclass(frozen=True)
class Limit:
    """One limit: its default, what it counts, the status of a refusal, and whether 0 is a meaningful value."""

    name: str
    default: int
    counts: str
    status: int


LIMITS: tuple[Limit, ...] = (
    Limit("max_body_bytes", 16 * MiB, "bytes of one request body", 413),
    Limit("max_tasks", 1000, "tasks in one predict request", 413),
    Limit("max_prompt_regions", 64, "smart-tool regions in one predict request", 413),
    Limit("max_image_bytes", 64 * MiB, "bytes of one image", 413),
    Limit("max_request_bytes", 512 * MiB, "image bytes fetched for one request", 413),
    Limit("max_request_pixels", 1_000_000_000, "image pixels decoded for one request", 413),
    Limit("max_request_seconds", 100, "seconds one request may take", 408),
    Limit("max_concurrent", 8, "requests being read, fetched or answered from the store at once", 429),
    Limit("max_queued", 8, "requests waiting for or using the model at once", 429),
)
BY_NAME = {limit.name: limit for limit in LIMITS}


def flag(name: str) -> str:
    """``max_body_bytes`` → ``--max-body-bytes``."""
    return "--" + name.replace("_", "-")


def env_name(name: str) -> str:
    """``max_body_bytes`` → ``AUTOLABEL_SERVE_MAX_BODY_BYTES``."""
    return "AUTOLABEL_SERVE_" + name.upper()


@dataclass(frozen=True)
class Limits:
    """The values in force (see :data:`LIMITS` for what each counts)."""

    max_body_bytes: int = BY_NAME["max_body_bytes"].default
    max_tasks: int = BY_NAME["max_tasks"].default
    max_prompt_regions: int = BY_NAME["max_prompt_regions"].default
    max_image_bytes: int = BY_NAME["max_image_bytes"].default
    max_request_bytes: int = BY_NAME["max_request_bytes"].default
    max_request_pixels: int = BY_NAME["max_request_pixels"].default
    max_request_seconds: int = BY_NAME["max_request_seconds"].default
    max_concurrent: int = BY_NAME["max_concurrent"].default
    max_queued: int = BY_NAME["max_queued"].default

    @classmethod
    def resolve(cls, given: Mapping[str, int | None], environ: Mapping[str, str] | None = None) -> Limits:
        """Each limit from its flag (``given``, None when not passed), else its environment variable, else its
        default; anything but a positive integer is a ConfigError naming where it came from."""
        env = os.environ if environ is None else environ
        values: dict[str, int] = {}
        problems = []
        for limit in LIMITS:
            raw: object = given.get(limit.name)
            source = flag(limit.name)
            if raw is None and env.get(env_name(limit.name), "").strip():
                raw, source = env[env_name(limit.name)].strip(), env_name(limit.name)
            if raw is None:
                continue
            try:
                value = int(raw)  # type: ignore[call-overload]
            except (TypeError, ValueError):
                value = 0
            if value < 1:
                problems.append(f"{source}: expected a positive whole number ({limit.counts}; got {raw!r})")
                continue
            values[limit.name] = value
        if problems:
            raise ConfigError(problems)
        return cls(**values)

    def table(self) -> list[tuple[str, int, str]]:
        """(flag, value, what it counts) of every limit, for the start-up log."""
        return [(flag(f.name), getattr(self, f.name), BY_NAME[f.name].counts) for f in fields(self)]


def exceeded(name: str, amount: str, value: int) -> RequestError:
    """The refusal of a request that crossed limit ``name`` (whose value is ``value``): its status and a line
    naming the flag and variable that raise it.

    >>> err = exceeded("max_tasks", "1200 tasks", 1000)
    >>> err.status, err.message
    (413, '1200 tasks: more than the limit of 1000 tasks in one predict request (raise it with --max-tasks N or ...)')
    """
    limit = BY_NAME[name]
    return RequestError(limit.status, f"{amount}: more than the limit of {value} {limit.counts} "
                                      f"(raise it with {flag(name)} N or {env_name(name)})")


class Budget:
    """What one request may still spend: fetched bytes, decoded pixels and time, shared by its fetch threads.

    Every charge is checked as it is made, so a limit stops the work that would cross it, not the one after.
    """

    def __init__(self, limits: Limits, clock: Callable[[], float] = time.monotonic):
        self.limits, self.clock = limits, clock
        self.deadline = clock() + limits.max_request_seconds
        self.bytes = self.pixels = 0
        self._lock = threading.Lock()

    def remaining(self) -> float:
        """Seconds left before the deadline; a 408 when none are."""
        left = self.deadline - self.clock()
        if left <= 0:
            raise exceeded("max_request_seconds", "the request took too long", self.limits.max_request_seconds)
        return left

    def charge_bytes(self, n: int) -> None:
        with self._lock:
            self.bytes += n
            total = self.bytes
        if total > self.limits.max_request_bytes:
            raise exceeded("max_request_bytes", f"over {total} image bytes fetched", self.limits.max_request_bytes)

    def charge_pixels(self, n: int) -> None:
        with self._lock:
            self.pixels += n
            total = self.pixels
        if total > self.limits.max_request_pixels:
            raise exceeded("max_request_pixels", f"{total} pixels to decode", self.limits.max_request_pixels)


class Admission:
    """How many requests may be in each phase at once: being answered (read, fetched, looked up: the store's path)
    and waiting for or using the model. A request over either count is refused at once (429), never queued
    unbounded; a request moving to the model frees its first place, so store answers never wait on the model."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self._active = threading.BoundedSemaphore(limits.max_concurrent)
        self._queued = threading.BoundedSemaphore(limits.max_queued)
        self._lock = threading.Lock()
        self.counts = {"active": 0, "queued": 0}

    def enter(self) -> Ticket:
        """A ticket for a new request (a 429 when ``max_concurrent`` requests are being answered)."""
        if not self._active.acquire(blocking=False):
            raise exceeded("max_concurrent", "too many requests at once", self.limits.max_concurrent)
        self._count("active", 1)
        return Ticket(self)

    def _count(self, phase: str, delta: int) -> None:
        with self._lock:
            self.counts[phase] += delta


class Ticket:
    """One request's place: :meth:`to_model` before it waits on the model, :meth:`leave` once it is done (both
    idempotent; called from the thread doing the work, so the count is exact even after an HTTP-side timeout)."""

    def __init__(self, admission: Admission):
        self.admission = admission
        self.phase: str | None = "active"
        self._lock = threading.Lock()

    def to_model(self) -> None:
        """Move from the store's path to the model's queue (a 429 when ``max_queued`` requests are there)."""
        with self._lock:
            if self.phase != "active":
                return
            if not self.admission._queued.acquire(blocking=False):
                raise exceeded("max_queued", "the model is busy with too many requests",
                               self.admission.limits.max_queued)
            self._release()
            self.phase = "queued"
            self.admission._count("queued", 1)

    def leave(self) -> None:
        with self._lock:
            self._release()
            self.phase = None

    def _release(self) -> None:
        if self.phase is not None:
            (self.admission._active if self.phase == "active" else self.admission._queued).release()
            self.admission._count(self.phase, -1)
