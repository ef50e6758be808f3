"""The long-lived objects of a falrelay process, built once and closed in reverse order."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg
import httpx

from app import tracing
from app.catalog.registry import CATALOG
from app.db.availability import UNAVAILABLE
from app.db.pool import Pool, create_pool
from app.db.wakeup import Wakeup
from app.fal.callback_urls import CallbackUrlSource
from app.fal.client import FalClient
from app.fal.storage import FalStorage
from app.fal.transport import AiohttpTransport
from app.outputs import links
from app.settings import FAL_CONNECT_TIMEOUT, Settings
from app.storage import ObjectStore, open_store

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    pool: Pool
    fal_http: httpx.AsyncClient
    # Output files read from fal's CDN while they are copied (app.outputs): httpx's own pool,
    # which streams a body as it arrives. The fal client's transport reads each answer whole,
    # right for small JSON, not for a 40 MB video (bench/README.md, mirror).
    downloads: httpx.AsyncClient
    fal: FalClient
    fal_storage: FalStorage
    wakeup: Wakeup
    callback_urls: CallbackUrlSource
    store: ObjectStore | None


def fal_http_client(settings: Settings) -> httpx.AsyncClient:
    # One client per process for fal and its JWKS: explicit timeouts, and no redirects (a
    # redirected submit could be sent twice). aiohttp's pool underneath (see transport.py).
    return httpx.AsyncClient(
        transport=AiohttpTransport(max_connections=100),
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
async def open_services(settings: Settings) -> AsyncIterator[Services]:
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
        yield Services(
            settings=settings,
            pool=pool,
            fal_http=fal_http,
            downloads=downloads,
            fal=FalClient(
                fal_http,
                queue_url=settings.fal_queue_url,
                key=key,
                media_ttl_seconds=settings.fal_media_ttl_seconds,
            ),
            fal_storage=FalStorage(
                fal_http, rest_url=settings.fal_rest_url, cdn_url=settings.fal_cdn_url, key=key
            ),
            wakeup=wakeup,
            callback_urls=CallbackUrlSource(pool, settings.public_base_url),
            store=store,
        )
    finally:
        if store is not None:
            await store.aclose()
        await wakeup.aclose()
        await fal_http.aclose()
        await downloads.aclose()
        await pool.close()
