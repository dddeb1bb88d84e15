"""The ``autolabel serve`` subcommand: argument parsing (light: nothing heavy is imported) and the runner."""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import signal
import socket
import sys
from typing import Any

from ..errors import AutolabelError, ConfigError, ExitCode
from .limits import LIMITS, env_name, flag


def add_serve_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve", help="a Label Studio ML backend: predictions from the store first, the pipeline second; SAM clicks",
        description="Serve a pipeline to Label Studio (Settings → Model → Connect model → http://HOST:PORT). Images "
        "already labeled in --output (same content) are answered from the run store; others run through the "
        "pipeline. Smart keypoints / rectangles get a SAM mask. Basic auth: BASIC_AUTH_USER / BASIC_AUTH_PASS "
        "(required beyond loopback); Label Studio files: LABEL_STUDIO_URL / LABEL_STUDIO_API_KEY (or a setup call "
        "that passed basic auth). Threat model and every limit: docs/reference/serve-security.md.",
    )
    p.add_argument("pipeline", help="pipeline file (YAML)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a value of the pipeline file (repeatable)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=9090, help="port (default 9090)")
    p.add_argument("--output", "-o", help="a run's output folder: answer images labeled there from its store")
    p.add_argument("--write-back", action="store_true", help="store images the backend labels in --output's store")
    p.add_argument("--allowed-hosts", metavar="HOST,...",
                   help="fetch images only from URLs resolving to these hosts (names, IPs, CIDR networks); default: "
                   "public addresses and Label Studio's host only")
    p.add_argument("--local-root", action="append", default=[], metavar="DIR",
                   help="read local image paths (/path, file://) under DIR only (repeatable; default: none)")
    p.add_argument("--label-studio-url", metavar="URL",
                   help="Label Studio's base URL, to read /data/ files (default: LABEL_STUDIO_URL; the token is "
                   "read from LABEL_STUDIO_API_KEY only)")
    p.add_argument("--public-host", action="append", default=[], metavar="NAME",
                   help="a host name Label Studio reaches the backend by (Host header check; repeatable; "
                   "localhost and IP addresses always pass)")
    p.add_argument("--insecure", action="store_true",
                   help="allow a non-loopback --host without basic auth (not recommended)")
    for limit in LIMITS:
        p.add_argument(flag(limit.name), type=int, metavar="N", dest=limit.name,
                       help=f"at most N {limit.counts} (default {limit.default}; or {env_name(limit.name)})")
    p.add_argument("--shutdown-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="on SIGTERM / Ctrl-C, how long requests in flight may still take (default 10)")
    p.add_argument("--model-version", help="predictions' model_version (default: pipeline name or hash)")
    p.add_argument("--interactive-model", metavar="NAME",
                   help="the declared SAM / SAM 2 model smart tools use (default: the first one)")
    p.add_argument("--embedding-cache", type=int, default=16, metavar="N",
                   help="image embeddings kept for smart tools (default 16)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def run_serve(args: argparse.Namespace) -> int:
    """Validate everything that can be checked without models, bind, then serve until SIGINT / SIGTERM."""
    if args.write_back and not args.output:
        raise ConfigError("--write-back: needs --output DIR (the run store to write to)")
    if not 0 < args.port < 65536:
        raise ConfigError(f"--port: expected 1..65535 (got {args.port})")
    if not args.shutdown_timeout > 0:
        raise ConfigError(f"--shutdown-timeout: expected a positive number of seconds (got {args.shutdown_timeout})")
    import os

    from .access import Trust
    from .guard import basic_auth, bind_warning
    from .limits import Limits
    from .localfiles import LocalRoots

    auth = basic_auth(os.environ)
    warning = bind_warning(args.host, auth is not None, args.insecure)
    limits = Limits.resolve({limit.name: getattr(args, limit.name) for limit in LIMITS})
    LocalRoots(args.local_root)  # each must be a folder: said now, not at the first request
    trust = Trust.from_environment(args.label_studio_url, authenticated=auth is not None)
    if warning:
        print(f"autolabel: {warning}", file=sys.stderr, flush=True)
    _check_port(args.host, args.port)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # it would log every image URL it fetches
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Loading weights" bars in a server's log

    try:
        import starlette  # noqa: F401
        import uvicorn
    except ImportError as err:
        raise AutolabelError(f"autolabel serve needs {err.name}: pip install 'autolabel[serve]'") from None

    from ..config import load_file, parse
    from ..pipeline import Pipeline
    from .answers import StoreAnswers
    from .app import create_app
    from .backend import Backend, CountingPool

    spec = parse(load_file(args.pipeline), args.overrides)
    pipeline = Pipeline(spec, source=args.pipeline, models=CountingPool(spec.config.models))
    answers = StoreAnswers(args.output, write_back=args.write_back) if args.output else None
    hosts = [h for h in (args.allowed_hosts or "").split(",") if h.strip()] or None
    backend = Backend(pipeline, answers, allowed_hosts=hosts, model_version=args.model_version,
                      interactive_model=args.interactive_model, cache_size=args.embedding_cache,
                      local_roots=args.local_root, trust=trust, limits=limits)
    server: uvicorn.Server | None = None

    def stop() -> None:
        if server is not None:
            server.should_exit = True

    names = (*args.public_host, args.host)
    app = create_app(backend, on_failure=stop, public_hosts=names, auth=auth)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False,
                            lifespan="on", timeout_graceful_shutdown=args.shutdown_timeout)
    server = _server_class(uvicorn)(config)
    print(f"autolabel: serving {args.pipeline} on http://{args.host}:{args.port} (model_version "
          f"{backend.model_version!r}); loading models…", file=sys.stderr, flush=True)
    log = logging.getLogger("autolabel.serve")
    label_studio = trust.operator.url or ("from a setup call (basic auth proves it)" if auth else "not set")
    log.info("basic auth: %s; local roots: %s; Label Studio: %s (token: %s); image hosts: %s",
             "on" if auth else "OFF", ", ".join(backend.fetcher.roots.roots) or "none (local paths refused)",
             label_studio, "set" if trust.operator.token else "not set",
             ", ".join(hosts) if hosts else "public addresses and Label Studio's")
    log.info("limits: %s", "; ".join(f"{name} {value}" for name, value, _ in limits.table()))
    # uvicorn re-raises the signal it stopped on once it has restored the handlers it found: let it find ones that
    # ignore it (exit 0, not a KeyboardInterrupt), then put the caller's back
    previous = {sig: signal.signal(sig, _ignore) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if backend.state == "failed":
        raise AutolabelError(backend.error or "models failed to load")
    return ExitCode.OK


def _ignore(signum: int, frame: Any) -> None:
    """A signal handler that does nothing (see :func:`run_serve`)."""


def _server_class(uvicorn: Any) -> type:
    """uvicorn's server, with requests still in flight when the graceful stop runs out answered 503 just before
    it (``app.state.stopping``): cancelled, they would each leave a traceback in the log."""

    class Server(uvicorn.Server):
        async def shutdown(self, sockets: Any = None) -> None:
            grace = max(0.0, float(self.config.timeout_graceful_shutdown or 0) - 0.5)
            asyncio.get_running_loop().call_later(grace, self.config.app.state.stopping.set)
            await super().shutdown(sockets)

    return Server


def _check_port(host: str, port: int) -> None:
    """A one-line error now, rather than uvicorn's after the models are loaded."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as err:
            why = "is in use" if err.errno == errno.EADDRINUSE else f"cannot be bound ({err.strerror})"
            raise ConfigError(f"--port: {host}:{port} {why}; pass another --port (or --host)") from None
