"""The long-lived objects of a falrelay process, built once and closed in reverse order.

One `Runtime` per process, whatever its role: the API reads it in its dependencies
(app.api.deps, from `app.state.runtime`), the worker's loops take it as the first argument of
every step (app.worker). `open_runtime` owns what it opens (the pool, the HTTP clients, the
store, the watcher) and closes it; the worker opens and closes its own delivery session
(app.worker.runner).
"""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx

from app import tracing
from app.auth.service import KeyResolver
from app.catalog.registry import CATALOG
from app.clients.limits import LimitDefaults
from app.db.availability import UNAVAILABLE
from app.db.pool import Pool, create_pool
from app.db.wakeup import Wakeup
from app.fal.callback_urls import CallbackUrlSource
from app.fal.client import FalClient
from app.fal.signatures import JwksCache, SignatureVerifier
from app.fal.storage import FalStorage
from app.fal.transport import FalTransport
from app.jobs.intake import Intake
from app.jobs.transitions import Transitions
from app.jobs.watch import JobWatcher
from app.outputs import links
from app.settings import FAL_CONNECT_TIMEOUT, Settings
from app.storage import ObjectStore, open_store

log = logging.getLogger(__name__)


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Runtime:
    """What a process builds once and every request and worker step shares. `now` and `rng`
    are fields so that tests need no sleeping."""

    settings: Settings
    pool: Pool
    fal: FalClient
    fal_storage: FalStorage
    # Output files read from fal's CDN while they are copied (app.outputs): httpx's own pool,
    # which streams a body as it arrives. The fal client's transport reads each answer whole,
    # right for small JSON, not for a 40 MB video (bench/README.md, mirror).
    downloads: httpx.AsyncClient
    wakeup: Wakeup
    callback_urls: CallbackUrlSource
    # The operator's store for owned outputs (app.outputs); None: outputs are fal's URLs.
    store: ObjectStore | None
    # The API's: API keys (cached), fal's webhook signatures, and the one poller that wakes
    # event streams and `Prefer: wait` requests (app.jobs.watch; idle until a request waits).
    keys: KeyResolver
    fal_signatures: SignatureVerifier
    watcher: JobWatcher
    # New jobs, stored together while a client's last statement runs (the API's); fal's
    # answers to submissions (the worker's) and its successes (its callbacks'), likewise.
    intake: Intake
    transitions: Transitions
    now: Callable[[], datetime] = utcnow
    rng: random.Random = field(default_factory=random.Random)

    def after(self, seconds: float) -> datetime:
        return self.now() + timedelta(seconds=seconds)

    @property
    def webhook_mode(self) -> bool:
        """fal posts its results to us (a public base URL is set); else we poll for them."""
        return bool(self.settings.public_base_url)

    async def callback_url(self, public_job_id: str, model: str) -> str | None:
        """Where fal should post the job's result; None in poll mode."""
        return (await self.callback_urls.get()).for_job(public_job_id, model)


def fal_http_client(settings: Settings) -> httpx.AsyncClient:
    # One client per process for fal and its JWKS: explicit timeouts, and no redirects (a
    # redirected submit could be sent twice). falrelay's HTTP/1.1 client underneath
    # (app.fal.transport).
    return httpx.AsyncClient(
        transport=FalTransport(max_connections=settings.fal_connections),
        timeout=httpx.Timeout(settings.fal_timeout_seconds, connect=FAL_CONNECT_TIMEOUT),
        follow_redirects=False,
        headers={"User-Agent": "falrelay"},
    )


def downloads_client(settings: Settings) -> httpx.AsyncClient:
    """For output files copied from fal's CDN: httpx's own pool, which streams a body as it
    arrives, with a timeout per read rather than for the whole body (a large file over a slow
    link is fine)."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(settings.fal_timeout_seconds, connect=FAL_CONNECT_TIMEOUT),
        follow_redirects=True,
        headers={"User-Agent": "falrelay"},
    )


@asynccontextmanager
async def open_runtime(settings: Settings) -> AsyncIterator[Runtime]:
    # Every role opens these (a worker alone too): tracing starts here if OTEL_* asks for it.
    tracing.start_from_env()
    pool = await create_pool(
        settings.require_database_url(),
        min_size=settings.db_pool_min_size,
        max_size=settings.db_pool_max_size,
        statement_cache_size=settings.db_statement_cache_size,
    )
    fal_http = fal_http_client(settings)
    downloads = downloads_client(settings)
    key = settings.fal_key.get_secret_value() if settings.fal_key else None
    wakeup = Wakeup(pool)
    watcher = JobWatcher(pool, listen_url=settings.require_database_url())
    intake = Intake(pool)
    transitions = Transitions(pool, wakeup)
    store: ObjectStore | None = None
    try:
        try:
            await CATALOG.refresh(pool)
        except (*UNAVAILABLE, asyncpg.UndefinedTableError):  # type: ignore[misc]
            # Not fatal (an outage, or a database not migrated yet; readiness says which):
            # intake re-reads the catalog when a job names a model it lacks.
            log.warning("the imported models could not be read; the shipped ones serve")
        store = await open_store(settings, pool)
        links.configure(store)
        yield Runtime(
            settings=settings,
            pool=pool,
            fal=FalClient(
                fal_http,
                queue_url=settings.fal_queue_url,
                key=key,
                media_ttl_seconds=settings.fal_media_ttl_seconds,
            ),
            fal_storage=FalStorage(
                fal_http, rest_url=settings.fal_rest_url, cdn_url=settings.fal_cdn_url, key=key
            ),
            downloads=downloads,
            wakeup=wakeup,
            callback_urls=CallbackUrlSource(pool, settings.public_base_url),
            store=store,
            keys=KeyResolver(
                pool,
                ttl=settings.api_key_cache_seconds,
                defaults=LimitDefaults.from_settings(settings),
            ),
            fal_signatures=SignatureVerifier(
                JwksCache(fal_http, settings.fal_jwks_url), user_id=settings.fal_user_id
            ),
            watcher=watcher,
            intake=intake,
            transitions=transitions,
        )
    finally:
        await transitions.aclose()
        await intake.aclose()
        await watcher.aclose()
        if store is not None:
            await store.aclose()
        await wakeup.aclose()
        await fal_http.aclose()
        await downloads.aclose()
        await pool.close()
