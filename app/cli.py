"""The `falrelay` command."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import logging
import os
import shutil
import signal
import socket
import sys
from collections.abc import Coroutine, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import uvicorn
from fastapi import FastAPI

from app import http_server
from app.main import begin_draining
from app.settings import MissingSetting, Settings

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

    from app.db.embedded import EmbeddedPostgres


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


class _BesideFake:
    """`falrelay dev`'s one port: the fake fal under `/fakefal`, the service everywhere else.

    The fake is dispatched to before falrelay's middleware, not mounted inside it: it stands for
    fal, so falrelay's body bound, rate limits and access log are not its own (an upload to its
    storage is larger than any API body)."""

    def __init__(self, app: ASGIApp, fake: ASGIApp, prefix: str = "/fakefal") -> None:
        self.app, self.fake, self.prefix = app, fake, prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "lifespan" and (
            path == self.prefix or path.startswith(self.prefix + "/")
        ):
            # As a mount does: the prefix moves to root_path, which the fake's URLs include.
            scope = dict(scope, root_path=scope.get("root_path", "") + self.prefix)
            await self.fake(scope, receive, send)
        else:
            await self.app(scope, receive, send)


async def _serve(
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
        access_log=False,  # and so is the access log (app.api.observe)
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


def _run(main: Coroutine[Any, Any, None]) -> None:
    """asyncio.run on uvloop when it is installed (uvicorn[standard] brings it). uvicorn picks
    uvloop only in uvicorn.run(); serving from our own loop, we pick it here."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


def _serve_api(args: argparse.Namespace, *, run_worker: bool) -> None:
    from app.main import create_app

    settings = _configured(Settings())
    settings.require_database_url()
    if run_worker:
        settings.require_fal_key()
    app = create_app(settings, run_worker=run_worker)
    _run(_serve(app, settings, args.host, args.port))


def cmd_serve(args: argparse.Namespace) -> None:
    _serve_api(args, run_worker=True)


def cmd_api(args: argparse.Namespace) -> None:
    _serve_api(args, run_worker=False)


def cmd_worker(args: argparse.Namespace) -> None:
    from app.worker.runner import run_until_signalled

    settings = _configured(Settings())
    settings.require_database_url()
    settings.require_fal_key()
    _run(run_until_signalled(settings))


def cmd_fakefal(args: argparse.Namespace) -> None:
    from app.fakefal import command

    command.run(args)


def cmd_migrate(args: argparse.Namespace) -> None:
    from app.db.migrate import head_revision, upgrade_to_head

    upgrade_to_head(_configured(Settings()).require_database_url())
    print(f"database schema is at {head_revision()}", file=sys.stderr)


async def _create_key(database_url: str, name: str) -> str:
    from app.auth import service
    from app.db.pool import create_pool

    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        client_id, key = await service.create_client(pool, name)
    finally:
        await pool.close()
    print(f"created client {name!r} ({client_id}); the key is shown once", file=sys.stderr)
    return key


def cmd_keys_create(args: argparse.Namespace) -> None:
    key = asyncio.run(_create_key(Settings().require_database_url(), args.name))
    print(key)


async def _revoke_key(database_url: str, key: str) -> bool:
    from app.auth import service
    from app.db.pool import create_pool

    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        return await service.revoke_key(pool, key)
    finally:
        await pool.close()


def cmd_keys_revoke(args: argparse.Namespace) -> None:
    key = args.key if args.key != "-" else sys.stdin.readline().strip()
    if not asyncio.run(_revoke_key(Settings().require_database_url(), key)):
        print("falrelay: no active key matches (already revoked, or never made)", file=sys.stderr)
        raise SystemExit(1)
    print(
        "revoked; processes that checked it in the last "
        f"{Settings().api_key_cache_seconds:g} s may accept it until then",
        file=sys.stderr,
    )


def cmd_submit(args: argparse.Namespace) -> None:
    from app import submit

    submit.run(args)


def cmd_openapi(args: argparse.Namespace) -> None:
    from app.main import create_app

    document = create_app(Settings()).openapi()
    sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")


async def _prepare_dev(postgres: EmbeddedPostgres, saved_key: str | None) -> tuple[str, str]:
    """Create and migrate the dev database; the dev client's key: the saved one if it still
    works, else a new one. Returns (database URL, key)."""
    from app.auth.service import KeyResolver, create_client
    from app.db import embedded
    from app.db.migrate import upgrade_to_head
    from app.db.pool import asyncpg_dsn, create_pool

    await embedded.ensure_database(asyncpg_dsn(postgres.url("postgres")), "falrelay")
    database_url = postgres.url("falrelay")
    await asyncio.to_thread(upgrade_to_head, database_url)
    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        if saved_key and await KeyResolver(pool, ttl=0).resolve(saved_key) is not None:
            return database_url, saved_key
        _, key = await create_client(pool, "dev")
        return database_url, key
    finally:
        await pool.close()


def _invoked_as() -> str:
    """This program as the user can type it again: `falrelay` when that is what PATH finds, else
    its path (`.venv/bin/falrelay` from a checkout whose venv is not activated)."""
    program = sys.argv[0]
    if Path(program).name != "falrelay" or shutil.which("falrelay") == program:
        return "falrelay"
    if Path(program).resolve().is_relative_to(Path.cwd()):
        return os.path.relpath(program)
    return program


def _dev_banner(base: str, key: str, database_url: str) -> str:
    return "\n".join(
        [
            "",
            "falrelay dev is running",
            f"  API       {base}",
            f"  docs      {base}/docs",
            f"  console   {base}/console  (sign in with the API key)",
            f"  API key   {key}",
            f"  fake fal  {base}/fakefal  (knobs: {base}/fakefal/_fake/config)",
            f"  database  {database_url}",
            "",
            "Create a job:",
            f"  curl -s {base}/v1/jobs -H 'Authorization: Bearer {key}' \\",
            "    -H 'Content-Type: application/json' \\",
            """    -d '{"input": {"prompt": "a red fox in snow", "aspect_ratio": "16:9"}}'""",
            "Then GET /v1/jobs/<id>: once it has succeeded, open output.images[0].url.",
            f"Or: {_invoked_as()} submit 'a red fox in snow' --aspect-ratio 16:9 --out fox.png",
            "",
        ]
    )


def _configured(settings: Settings) -> Settings:
    from app import logs

    logs.configure(level=settings.log_level, fmt=settings.log_format, secrets=settings.secrets())
    return settings


def _port_taken(host: str, port: int) -> bool:
    """Whether something listens on host:port already: checked before the embedded Postgres
    starts, so that a second `falrelay dev` says so in one line."""
    try:
        addresses = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return False  # uvicorn explains a bad host
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return True
    return False


def cmd_dev(args: argparse.Namespace) -> None:
    from app import logs
    from app.db import embedded

    logs.configure(fmt="json" if os.environ.get("FALRELAY_LOG_FORMAT") == "json" else "text")
    if _port_taken(args.host, args.port):
        print(
            f"falrelay dev: port {args.port} on {args.host} is already in use (another falrelay "
            "dev?); stop it, or choose another with --port",
            file=sys.stderr,
        )
        raise SystemExit(1)
    data_dir = Path(args.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    key_file = data_dir / "dev-api-key"
    saved_key = key_file.read_text().strip() if key_file.exists() else None
    pgdata = data_dir / "pgdata"
    shown = f"./{pgdata.relative_to(Path.cwd())}" if pgdata.is_relative_to(Path.cwd()) else pgdata
    print(f"starting the embedded Postgres in {shown} ...", file=sys.stderr)
    # The migrations' own lines (one per revision on a first start) are noise here too.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    postgres = embedded.start(pgdata)
    try:
        database_url, key = asyncio.run(_prepare_dev(postgres, saved_key))
        if key != saved_key:
            key_file.write_text(key + "\n")
            key_file.chmod(0o600)
        _run(_serve_dev(args, database_url, key, files=data_dir / "files"))
    finally:
        postgres.stop()


async def _serve_dev(args: argparse.Namespace, database_url: str, key: str, *, files: Path) -> None:
    """API, workers and the fake fal (mounted at /fakefal) in one process, wired to each other
    over real HTTP on this machine."""
    from app.catalog import CATALOG
    from app.fakefal import FakeFal
    from app.main import create_app

    local_host = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host
    base = f"http://{local_host}:{args.port}"
    # The fake hosts what this process's catalog holds, so a model imported while dev runs
    # (`falrelay models import`) runs at its fake as it would at fal.
    fake = FakeFal(also_serves=lambda model_id: CATALOG.get(model_id) is not None)
    settings = Settings(
        database_url=database_url,
        allow_private_webhook_urls=True,
        public_base_url=base,
        fal_queue_url=f"{base}/fakefal",
        fal_jwks_url=f"{base}/fakefal/.well-known/jwks.json",
        # The fake serves fal's REST and CDN hosts on the same port, as it does the queue.
        fal_rest_url=f"{base}/fakefal",
        fal_cdn_url=f"{base}/fakefal",
        fal_key="dev-key-for-the-fake-fal",
        fal_user_id=fake.config.user_id,
        storage_url=files.as_uri(),
        log_format=os.environ.get("FALRELAY_LOG_FORMAT", "text"),
    )
    app = create_app(settings, run_worker=True)
    try:
        banner = _dev_banner(base, key, database_url)
        await _serve(
            app,
            settings,
            args.host,
            args.port,
            on_started=banner,
            asgi=_BesideFake(app, fake.app),
        )
    finally:
        await fake.aclose()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="falrelay", description="A durable jobs API in front of fal.ai's queue."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add_listen(sub: argparse.ArgumentParser, host: str) -> None:
        sub.add_argument("--host", default=host, help=f"address to listen on (default {host})")
        sub.add_argument(
            "--port", type=int, default=int(os.environ.get("PORT", 8000)), help="default 8000"
        )

    dev = commands.add_parser(
        "dev", help="everything on one machine: embedded Postgres, API, a printed API key"
    )
    add_listen(dev, "127.0.0.1")
    dev.add_argument(
        "--data-dir", default=".falrelay", help="where the embedded Postgres keeps its data"
    )
    dev.set_defaults(func=cmd_dev)

    serve = commands.add_parser(
        "serve", help="API and workers in one process (needs FALRELAY_DATABASE_URL, FAL_KEY)"
    )
    add_listen(serve, "0.0.0.0")
    serve.set_defaults(func=cmd_serve)

    api = commands.add_parser("api", help="the API alone (scale it apart from the workers)")
    add_listen(api, "0.0.0.0")
    api.set_defaults(func=cmd_api)

    worker = commands.add_parser(
        "worker", help="the workers alone: submission to fal and reconciliation"
    )
    worker.set_defaults(func=cmd_worker)

    fakefal = commands.add_parser(
        "fakefal", help="the built-in fake fal on its own, for tests, demos and load runs"
    )
    from app.fakefal import command as fakefal_command

    fakefal_command.add_arguments(fakefal)
    fakefal.set_defaults(func=cmd_fakefal)

    migrate = commands.add_parser("migrate", help="upgrade the database schema to this release")
    migrate.set_defaults(func=cmd_migrate)

    keys = commands.add_parser("keys", help="API keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")
    create = key_commands.add_parser(
        "create", help="create a client and its API key; prints only the key on stdout"
    )
    create.add_argument("name", help="a name for the client, e.g. the calling service")
    create.set_defaults(func=cmd_keys_create)
    revoke = key_commands.add_parser("revoke", help="revoke an API key")
    revoke.add_argument("key", help="the key, or - to read it from stdin (keeps it out of ps)")
    revoke.set_defaults(func=cmd_keys_revoke)

    clients = commands.add_parser(
        "clients", help="clients (tenants): their limits and usage (`limits`, `show`, `list`)"
    )
    from app.clients import command as clients_command

    clients_command.add_arguments(clients)

    models = commands.add_parser(
        "models", help="the model catalog: `list`, `import` a fal model, `remove`"
    )
    from app.catalog import command as models_command

    models_command.add_arguments(models)

    purge = commands.add_parser(
        "purge",
        help="delete jobs finished before --older-than, with their events, deliveries and files",
    )
    from app.lifecycle import command as purge_command

    purge_command.add_arguments(purge)

    jobs = commands.add_parser("jobs", help="jobs through the API: `delete`")
    from app.jobs import command as jobs_command

    jobs_command.add_arguments(jobs)

    openapi = commands.add_parser("openapi", help="print the OpenAPI document")
    openapi.set_defaults(func=cmd_openapi)

    submit = commands.add_parser(
        "submit", help="create a job through the API; --wait follows it, --out saves the image"
    )
    from app import submit as submit_command

    submit_command.add_arguments(submit)
    submit.set_defaults(func=cmd_submit)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except MissingSetting as exc:
        print(f"falrelay: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
