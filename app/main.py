from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.routing import APIRoute

from app import __version__
from app.api import health, jobs, models, openapi
from app.api.limits import BodySizeLimit
from app.api.runtime import Runtime
from app.auth.service import KeyResolver
from app.db.pool import create_pool
from app.errors import install_handlers
from app.settings import Settings

DESCRIPTION = """\
A durable jobs API in front of fal.ai's queue. POST a job, get a completion webhook or poll
its status; every job is stored in Postgres before it is acknowledged.

Errors are `application/problem+json` (RFC 9457).
"""


def _operation_id(route: APIRoute) -> str:
    # Stable operationIds: the handler's name (create_job, list_jobs, ...), not FastAPI's
    # path-derived default, so generated clients keep their method names.
    return route.name


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await create_pool(
            settings.require_database_url(),
            min_size=settings.db_pool_min_size,
            max_size=settings.db_pool_max_size,
            statement_cache_size=settings.db_statement_cache_size,
        )
        app.state.runtime = Runtime(
            settings=settings,
            pool=pool,
            keys=KeyResolver(pool, ttl=settings.api_key_cache_seconds),
        )
        try:
            yield
        finally:
            await pool.close()

    app = FastAPI(
        title="falrelay",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        generate_unique_id_function=_operation_id,
        openapi_tags=[
            {"name": "jobs", "description": "Create, read, list and cancel generation jobs."},
            {"name": "models", "description": "The fal models jobs can run."},
            {"name": "operations", "description": "Liveness and readiness probes."},
        ],
    )
    install_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.include_router(jobs.router)
    app.include_router(models.router)
    app.include_router(health.router)
    openapi.install(app)
    return app
