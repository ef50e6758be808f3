"""Helpers the tests share (fixtures live in conftest.py)."""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import FastAPI

from app import ids
from app.auth.service import KeyResolver
from app.db.pool import Pool
from app.db.wakeup import Wakeup
from app.fal.callback_urls import CallbackUrlSource
from app.fal.client import FalClient
from app.fal.signatures import JwksCache, SignatureVerifier
from app.fal.storage import FalStorage
from app.jobs.intake import Intake
from app.jobs.transitions import Transitions
from app.jobs.watch import JobWatcher
from app.runtime import Runtime
from app.settings import Settings
from app.storage import ObjectStore

PROBLEM_JSON = "application/problem+json"


async def until(condition: Callable[[], Any], within: float = 30.0) -> Any:
    """Wait for `condition()` (a value, or an awaitable of one) to be truthy, and answer it.
    Checked every 20 ms; fails after `within` seconds, a bound for a busy machine."""
    deadline = time.monotonic() + within
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


@dataclass
class Tenant:
    client_id: uuid.UUID
    key: str
    http: httpx.AsyncClient


def http_client(app: FastAPI, key: str | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://falrelay.test", headers=headers
    )


def job_uuid(public_id: str) -> uuid.UUID:
    value = ids.decode("job", public_id)
    assert value is not None, public_id
    return value


async def fail_deliveries(pool: Pool, where: str, *args: Any) -> None:
    """Deliveries `where` says, as a worker leaves one whose schedule ran out: failed in the log
    and out of the delivery queue (no waiting out hours of retries)."""
    await pool.execute(
        "WITH failed AS (UPDATE deliveries SET status = 'failed', next_attempt_at = NULL"
        f" WHERE {where} RETURNING id)"
        " DELETE FROM delivery_queue WHERE id IN (SELECT id FROM failed)",
        *args,
    )


async def count_jobs(pool: Pool, client_id: uuid.UUID) -> int:
    value: int = await pool.fetchval("SELECT count(*) FROM jobs WHERE client_id = $1", client_id)
    return value


async def session_stat(pool: Pool, query: str) -> Any:
    """`query` over the statistics views, with what the pool's session has done in them: a
    session's counters reach the shared ones when it flushes them, so force that, then read
    them afresh. For a pool of one connection, whose session is the one measured."""
    await pool.execute("SELECT pg_stat_force_next_flush()")
    await pool.execute("SELECT 1")
    await pool.execute("SELECT pg_stat_clear_snapshot()")
    return await pool.fetchval(query)


async def rows_read(pool: Pool, table: str) -> Any:
    """Rows of `table` read so far, by sequential scans and by every index."""
    return await session_stat(
        pool,
        "SELECT t.seq_tup_read + (SELECT COALESCE(sum(i.idx_tup_read), 0)"
        "                         FROM pg_stat_user_indexes i WHERE i.relid = t.relid)"
        f" FROM pg_stat_user_tables t WHERE t.relname = '{table}'",
    )


def assert_problem(response: httpx.Response, status: int, slug: str | None = None) -> Any:
    """The answer is an RFC 9457 problem with this status (and type); returns its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    assert body["status"] == status
    assert body["title"]
    if slug is not None:
        assert body["type"].endswith("/" + slug), body
    return body


def worker_runtime(
    pool: Pool,
    fal: FalClient,
    settings: Settings,
    *,
    store: ObjectStore | None = None,
    downloads: httpx.AsyncClient | None = None,
) -> Runtime:
    """The runtime a test's worker steps run with: its pool, fal client and settings, a wake-up
    of this process only, and the rest built as `open_runtime` builds them, idle (the API's
    parts open nothing until a request uses them; none does here)."""
    http = downloads or httpx.AsyncClient()
    wakeup = Wakeup(None)
    return Runtime(
        settings=settings,
        pool=pool,
        fal=fal,
        fal_storage=FalStorage(
            http, rest_url=settings.fal_rest_url, cdn_url=settings.fal_cdn_url, key=None
        ),
        downloads=http,
        wakeup=wakeup,
        callback_urls=CallbackUrlSource(pool, settings.public_base_url),
        store=store,
        keys=KeyResolver(pool, ttl=settings.api_key_cache_seconds),
        fal_signatures=SignatureVerifier(JwksCache(http, settings.fal_jwks_url), user_id=None),
        watcher=JobWatcher(pool),
        intake=Intake(pool),
        transitions=Transitions(pool, wakeup),
    )
