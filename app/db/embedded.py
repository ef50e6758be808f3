"""The embedded Postgres (the `pgserver` package) behind `falrelay dev` and the test suite.

pgserver bundles PostgreSQL binaries in a wheel and listens on a unix socket only, so nothing
needs installing and no port can clash.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg


@dataclass(frozen=True, slots=True)
class EmbeddedPostgres:
    server: Any  # pgserver.PostgresServer
    socket_dir: str

    def url(self, database: str) -> str:
        """A SQLAlchemy-style URL; the `postgres@` user is required (else: role "root")."""
        return f"postgresql+asyncpg://postgres@/{database}?host={self.socket_dir}"

    def stop(self) -> None:
        self.server.cleanup()


def start(pgdata: Path, *, cleanup_mode: str | None = "stop") -> EmbeddedPostgres:
    """initdb on first use (about a second), then start; a running server is shared."""
    # pgserver logs every command it runs with all of its output (initdb's forty lines, pg_ctl's,
    # each exit) at INFO; its warnings and errors still show. Callers say what is happening.
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset; harmless here.
        warnings.simplefilter("ignore")
        from pgserver.postgres_server import get_server

        pgdata.mkdir(parents=True, exist_ok=True)
        server = get_server(pgdata, cleanup_mode=cleanup_mode)
    socket_dir = server.get_postmaster_info().socket_dir
    if socket_dir is None:
        raise RuntimeError(f"the embedded Postgres in {pgdata} has no unix socket")
    return EmbeddedPostgres(server=server, socket_dir=str(socket_dir))


async def ensure_database(admin_dsn: str, name: str) -> None:
    """CREATE DATABASE `name` unless it exists. `admin_dsn` is a libpq URL to any database."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
