from __future__ import annotations

import asyncpg
from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse
from starlette.responses import Response

from app.api.deps import RuntimeDep
from app.api.responses import JSONBytes
from app.db.migrate import head_revision, schema_is_usable
from app.errors import ServiceUnavailable, error_responses
from app.metrics import render as render_metrics

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up (liveness)."""
    return {"status": "ok"}


@router.get("/readyz", responses=error_responses(ServiceUnavailable))
async def readyz(request: Request, runtime: RuntimeDep) -> Response:
    """The database answers, its schema is at this release's head, and the process is not
    shutting down (readiness)."""
    if getattr(request.app.state, "draining", False):
        raise ServiceUnavailable("This process is shutting down.")
    try:
        current = await runtime.pool.fetchval("SELECT version_num FROM alembic_version")
    except asyncpg.UndefinedTableError:
        current = None
    head = head_revision()
    if not schema_is_usable(current):
        raise ServiceUnavailable(
            f"The database schema is at {current or 'nothing'}, this release needs {head}: "
            "run `falrelay migrate`."
        )
    return JSONBytes({"status": "ready", "schema": current})


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
)
async def metrics(runtime: RuntimeDep) -> Response:
    """Prometheus metrics: requests, job transitions, fal calls, deliveries, queue depths."""
    body, content_type = await render_metrics(runtime.pool)
    return Response(body, media_type=content_type)
