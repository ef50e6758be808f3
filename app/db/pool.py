"""The process's Postgres pool.

Request handlers and workers talk to asyncpg directly: a job intake is one `INSERT ...
RETURNING` in autocommit, one round trip, with no unit-of-work in between. (The ORM version of
the same endpoint measured at a quarter of the throughput here.) Multi-statement changes use
`async with conn.transaction()`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias, TypeVar

import asyncpg
import orjson

Pool: TypeAlias = "asyncpg.Pool[asyncpg.Record]"
Connection: TypeAlias = "asyncpg.pool.PoolConnectionProxy[asyncpg.Record]"
T = TypeVar("T")


def asyncpg_dsn(database_url: str) -> str:
    """`postgresql+asyncpg://...` (SQLAlchemy's spelling) → `postgresql://...` (libpq's)."""
    scheme, sep, rest = database_url.partition("://")
    if not sep or scheme.split("+")[0] not in ("postgresql", "postgres"):
        raise ValueError(f"not a Postgres URL: {scheme}://...")
    return f"postgresql://{rest}"


def json_timestamp_sql(value: str) -> str:
    """A timestamptz as SQL text in the JSON codec's format for a datetime (orjson, UTC as
    `Z`, microseconds when there are any), for statements that build their own JSON."""
    return (
        f"to_char({value} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS') || CASE WHEN "
        f"extract(microseconds FROM {value})::bigint % 1000000 = 0 THEN '' "
        f"ELSE to_char({value} AT TIME ZONE 'UTC', '.US') END || 'Z'"
    )


async def _init_connection(conn: asyncpg.Connection[Any]) -> None:
    for type_name in ("jsonb", "json"):
        await conn.set_type_codec(
            type_name,
            schema="pg_catalog",
            encoder=lambda v: orjson.dumps(v, option=orjson.OPT_UTC_Z).decode(),
            decoder=orjson.loads,
        )


async def _keep_session(conn: asyncpg.Connection[Any]) -> None:
    # asyncpg's default reset-on-release (`RESET ALL; UNLISTEN *; ...`) is a second round trip
    # per request. Pooled connections never change session state: LISTEN runs on a dedicated
    # connection and no code takes session-level advisory locks. asyncpg still rolls back an
    # open transaction on release before calling this.
    return None


# This release writes the delivery queue itself (app.webhooks.fanout): the triggers that do it
# for the previous release's processes during a rolling upgrade skip connections that say so
# (migration 0030).
QUEUES_DELIVERIES = {"falrelay.queues_deliveries": "on"}


async def create_pool(
    database_url: str,
    *,
    min_size: int = 2,
    max_size: int = 20,
    statement_cache_size: int = 100,
) -> Pool:
    pool = await asyncpg.create_pool(
        asyncpg_dsn(database_url),
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        reset=_keep_session,
        statement_cache_size=statement_cache_size,
        # No JIT: the claims are planned at costs past jit_above_cost once a table's estimates
        # grow (400 clients assumed for a never-analyzed table, 20,000 pending deliveries), and
        # a server built with LLVM (Debian's, most managed ones) then compiles the plan on every
        # call: measured at 60 ms of a 94 ms delivery claim, 1.04 ms of Postgres CPU per
        # delivery against 0.15 without it (bench/README.md, "thirteenth pass"). Statements this
        # short never win back a compilation.
        server_settings={"application_name": "falrelay", "jit": "off", **QUEUES_DELIVERIES},
    )
    return pool


def run_with_pool(database_url: str, work: Callable[[Pool], Awaitable[T]]) -> T:
    """`work` on a one-connection pool, in a fresh event loop: for the operator commands."""

    async def main() -> T:
        pool = await create_pool(database_url, min_size=1, max_size=1)
        try:
            return await work(pool)
        finally:
            await pool.close()

    return asyncio.run(main())
