"""`falrelay serve`, `api` and `worker`: the production processes, and the HTTP serving they
share with `falrelay dev`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
from collections.abc import Coroutine, Iterator
from typing import TYPE_CHECKING, Any

import uvicorn
from fastapi import FastAPI

from app import http_server
from app.cli import command, configured, freeze_startup_heap
from app.main import begin_draining
from app.settings import Settings

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from falrelay.cli import Commands


def add_listen(sub: argparse.ArgumentParser, host: str) -> None:
    sub.add_argument("--host", default=host, help=f"address to listen on (default {host})")
    sub.add_argument(
        "--port", type=int, default=int(os.environ.get("PORT", 8000)), help="default 8000"
    )


def add_serve(commands: Commands) -> None:
    serve = commands.add_parser(
        "serve", help="API and workers in one process (needs FALRELAY_DATABASE_URL, FAL_KEY)"
    )
    add_listen(serve, "0.0.0.0")
    serve.set_defaults(func=cmd_serve)


def add_api(commands: Commands) -> None:
    api = commands.add_parser("api", help="the API alone (scale it apart from the workers)")
    add_listen(api, "0.0.0.0")
    api.set_defaults(func=cmd_api)


def add_worker(commands: Commands) -> None:
    worker = commands.add_parser(
        "worker", help="the workers alone: submission to fal and reconciliation"
    )
    worker.set_defaults(func=cmd_worker)


class _Server(uvicorn.Server):
    """uvicorn, minus its re-raise of SIGINT/SIGTERM after shutdown: a drained process exits 0
    and `finally` blocks (stopping the embedded Postgres) still run."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self._app = app

    def _on_signal(self, sig: int) -> None:
        begin_draining(self._app)
        self.handle_exit(sig, None)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        stop_signals = (signal.SIGINT, signal.SIGTERM)
        for sig in stop_signals:
            loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            yield
        finally:
            for sig in stop_signals:
                loop.remove_signal_handler(sig)


async def serve(
    app: FastAPI,
    settings: Settings,
    host: str,
    port: int,
    *,
    on_started: str | None = None,
    asgi: ASGIApp | None = None,
) -> None:
    config = uvicorn.Config(
        asgi or app,
        host=host,
        port=port,
        lifespan="on",
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        server_header=False,
        log_config=None,  # logging is ours: app.logs
        access_log=False,  # and so is the access log (app.api.edge)
        timeout_graceful_shutdown=max(1, round(settings.shutdown_timeout_seconds)),
        http=http_server.bounded_protocol(
            settings.http_header_timeout_seconds, settings.http_body_timeout_seconds
        ),
        timeout_keep_alive=settings.http_keepalive_timeout_seconds,
        limit_concurrency=http_server.limit_concurrency(settings.http_max_connections),
    )
    http_server.ensure_open_files(settings)
    server = _Server(config, app)
    serving = asyncio.create_task(server.serve())
    # uvicorn offers `started` only as a flag, so poll it.
    while not server.started and not serving.done():  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    if on_started and server.started:
        print(on_started, flush=True)
    await serving
    if not server.started:
        raise SystemExit(1)


def run(main: Coroutine[Any, Any, None]) -> None:
    """asyncio.run on uvloop when it is installed (uvicorn[standard] brings it). uvicorn picks
    uvloop only in uvicorn.run(); serving from our own loop, we pick it here."""
    freeze_startup_heap()
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


def _serve_api(args: argparse.Namespace, *, run_worker: bool) -> None:
    from app.main import create_app

    settings = configured(Settings())
    settings.require_database_url()
    if run_worker:
        settings.require_fal_key()
    app = create_app(settings, run_worker=run_worker)
    run(serve(app, settings, args.host, args.port))


@command
def cmd_serve(args: argparse.Namespace) -> None:
    _serve_api(args, run_worker=True)


@command
def cmd_api(args: argparse.Namespace) -> None:
    _serve_api(args, run_worker=False)


@command
def cmd_worker(args: argparse.Namespace) -> None:
    from app.worker.runner import run_until_signalled

    settings = configured(Settings())
    settings.require_database_url()
    settings.require_fal_key()
    run(run_until_signalled(settings))
