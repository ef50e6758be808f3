"""The Postgres a run uses: an embedded one in a temp dir, or `FALRELAY_BENCH_DATABASE_URL`.

Either way each benchmark gets databases of its own, cloned from one migrated template
(`CREATE DATABASE ... TEMPLATE`, milliseconds), and every database is dropped at the end.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from app.db import embedded
from app.db.migrate import upgrade_to_head
from app.db.pool import asyncpg_dsn
from bench.processes import cpu_seconds_of_tree

ENV_URL = "FALRELAY_BENCH_DATABASE_URL"


@dataclass
class BenchPostgres:
    """`admin_url`: a SQLAlchemy-style URL to a database on a server we may create databases on."""

    admin_url: str
    description: str
    pgdata: Path | None = None  # known for the embedded server: its CPU can be measured
    _created: list[str] = field(default_factory=list)
    _template: str | None = None
    # Benchmarks may ask for their first database at the same time (smoke runs them at once).
    _template_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def url(self, database: str) -> str:
        url = make_url(self.admin_url).set(drivername="postgresql+asyncpg", database=database)
        return url.render_as_string(hide_password=False)

    def dsn(self, database: str) -> str:
        """The libpq spelling (asyncpg, psycopg, procrastinate)."""
        return asyncpg_dsn(self.url(database))

    def cpu_seconds(self) -> float | None:
        """CPU used so far by the whole embedded server (None for an external one)."""
        if self.pgdata is None:
            return None
        try:
            postmaster = int((self.pgdata / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return cpu_seconds_of_tree(postmaster)

    async def execute(self, sql: str) -> None:
        conn = await asyncpg.connect(asyncpg_dsn(self.admin_url))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def version(self) -> str:
        conn = await asyncpg.connect(asyncpg_dsn(self.admin_url))
        try:
            return str(await conn.fetchval("SHOW server_version"))
        finally:
            await conn.close()

    async def create_database(self, label: str, *, migrated: bool = True) -> str:
        """A new database (migrated to head unless told otherwise); returns its URL."""
        name = f"falrelay_bench_{label}_{secrets.token_hex(3)}"
        template = ""
        if migrated:
            template = f' TEMPLATE "{await self._migrated_template()}"'
        await self.execute(f'CREATE DATABASE "{name}"{template}')
        self._created.append(name)
        return self.url(name)

    async def _migrated_template(self) -> str:
        async with self._template_lock:
            return await self._make_template()

    async def _make_template(self) -> str:
        if self._template is None:
            name = f"falrelay_bench_tmpl_{os.getpid()}_{secrets.token_hex(3)}"
            await self.execute(f'CREATE DATABASE "{name}"')
            self._created.append(name)
            await asyncio.to_thread(upgrade_to_head, self.url(name))
            self._template = name
        return self._template

    async def drop_all(self) -> None:
        # Clones first: the template cannot be dropped while they exist... and vice versa, a
        # template in use by a CREATE cannot be dropped. Reverse creation order handles both.
        for name in reversed(self._created):
            await self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self._created.clear()
        self._template = None


# Benchmarks with --experiments run several falrelay processes side by side, each with a pool of
# up to 20 connections: more than Postgres's default 100. The server's other settings stay at
# their (durable) defaults.
MAX_CONNECTIONS = 400


async def _start_embedded(pgdata: Path) -> embedded.EmbeddedPostgres:
    """Start, raise max_connections (it needs a restart), start again."""
    server = await asyncio.to_thread(embedded.start, pgdata, cleanup_mode="stop")
    conn = await asyncpg.connect(asyncpg_dsn(server.url("postgres")))
    try:
        await conn.execute(f"ALTER SYSTEM SET max_connections = {MAX_CONNECTIONS}")
    finally:
        await conn.close()
    await asyncio.to_thread(server.stop)
    return await asyncio.to_thread(embedded.start, pgdata, cleanup_mode="delete")


@asynccontextmanager
async def bench_postgres(scratch: Path | None = None) -> AsyncIterator[BenchPostgres]:
    """`FALRELAY_BENCH_DATABASE_URL` if set, else an embedded Postgres (durable defaults, data
    on disk in a temp dir unless `scratch` says where), stopped and deleted afterwards."""
    external = os.environ.get(ENV_URL)
    if external:
        postgres = BenchPostgres(admin_url=external, description=f"{ENV_URL}")
        try:
            yield postgres
        finally:
            await postgres.drop_all()
        return
    with tempfile.TemporaryDirectory(prefix="falrelay-bench-", dir=scratch) as tmp:
        server = await _start_embedded(Path(tmp) / "pgdata")
        postgres = BenchPostgres(
            admin_url=server.url("postgres"),
            description=f"embedded (pgserver) in {tmp}",
            pgdata=Path(tmp) / "pgdata",
        )
        try:
            yield postgres
        finally:
            try:
                await postgres.drop_all()
            finally:
                await asyncio.to_thread(server.stop)
