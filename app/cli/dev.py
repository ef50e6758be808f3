"""`falrelay dev`: everything on one machine, configured for a newcomer: the embedded
Postgres, the API and workers, and the fake fal beside them on one port."""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import os
import shutil
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from app.cli import command
from app.cli.serve import add_listen, run, serve
from app.settings import Settings

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

    from app.db.embedded import EmbeddedPostgres
    from falrelay.cli import Commands


def add_dev(commands: Commands) -> None:
    dev = commands.add_parser(
        "dev", help="everything on one machine: embedded Postgres, API, a printed API key"
    )
    add_listen(dev, "127.0.0.1")
    dev.add_argument(
        "--data-dir", default=".falrelay", help="where the embedded Postgres keeps its data"
    )
    dev.set_defaults(func=cmd_dev)


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


@command
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
        run(_serve_dev(args, database_url, key, files=data_dir / "files"))
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
        await serve(
            app,
            settings,
            args.host,
            args.port,
            on_started=banner,
            asgi=_BesideFake(app, fake.app),
        )
    finally:
        await fake.aclose()


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
