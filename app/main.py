from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.routing import APIRoute

from app import __version__, console, tracing
from app.api import (
    callbacks,
    docs,
    files,
    health,
    home,
    jobs,
    models,
    openapi,
    outbound,
    usage,
    webhooks,
)
from app.api.edge import Edge
from app.api.problems import install_handlers
from app.api.raw import RawRoute, RawRoutes
from app.runtime import open_runtime
from app.settings import Settings
from app.worker.runner import running_worker

DESCRIPTION = """\
A durable jobs API in front of fal.ai's queue. POST a job, get a completion webhook or poll
its status; every job is stored in Postgres before it is acknowledged.

Errors are `application/problem+json` (RFC 9457).
"""


def _operation_id(route: APIRoute) -> str:
    # Stable operationIds: the handler's name (create_job, list_jobs, ...), not FastAPI's
    # path-derived default, so generated clients keep their method names.
    return route.name


def create_app(settings: Settings | None = None, *, run_worker: bool = False) -> FastAPI:
    """The API; with `run_worker`, the submission and reconciliation workers run in the same
    process and event loop (`falrelay serve`)."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_runtime(settings) as runtime:
            app.state.runtime = runtime
            if not run_worker:
                yield
                return
            async with running_worker(runtime) as worker:
                app.state.worker = worker
                yield

    app = FastAPI(
        title="falrelay",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        generate_unique_id_function=_operation_id,
        # /docs and /redoc are app.api.docs's: FastAPI's load their scripts from a CDN.
        docs_url=None,
        redoc_url=None,
        # Traces are app.tracing's, on its own provider. FastAPI's own telemetry would look up
        # OpenTelemetry's global providers on every request (environment reads, a few per cent
        # of the API's CPU in the intake benchmark) to find them unset, or, set by someone
        # else, trace each request a second time.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        openapi_tags=[
            {"name": "jobs", "description": "Create, read, list and cancel generation jobs."},
            {
                "name": "webhooks",
                "description": "Endpoints that receive job events, and the delivery log.",
            },
            {"name": "models", "description": "The fal models jobs can run."},
            {"name": "usage", "description": "What the client's jobs made and cost."},
            {"name": "fal", "description": "fal's signed webhooks (called by fal, not clients)."},
            {"name": "operations", "description": "Liveness and readiness probes."},
        ],
    )
    install_handlers(app)
    app.add_middleware(
        Edge,
        access_log=settings.access_log,
        max_bytes=settings.max_body_bytes,
        routes={("POST", "/v1/jobs"): settings.max_job_body_bytes},
        # The two hottest routes, without FastAPI's per-request work; still declared below.
        raw=RawRoutes(
            RawRoute("POST", "/v1/jobs", jobs.create_job_raw),
            RawRoute("POST", "/callbacks/fal/{job_id}/{token}", callbacks.fal_callback_raw),
        ),
    )
    app.include_router(jobs.router)
    app.include_router(webhooks.router)
    app.include_router(models.router)
    app.include_router(usage.router)
    app.include_router(callbacks.router)
    app.include_router(files.router)
    app.include_router(health.router)
    app.include_router(console.router)
    app.include_router(docs.router)
    app.include_router(home.router)
    outbound.document(app)
    openapi.install(app)
    # Spans for the routes when the OTEL_* variables ask for traces (app.tracing); else nothing.
    tracing.start_from_env()
    tracing.instrument_app(app)
    return app


def begin_draining(app: FastAPI) -> None:
    """On SIGTERM: /readyz turns 503 and the workers stop claiming, at once, while uvicorn
    finishes the requests in flight (both within FALRELAY_SHUTDOWN_TIMEOUT_SECONDS)."""
    app.state.draining = True
    worker = getattr(app.state, "worker", None)
    if worker is not None:
        worker.stop()
