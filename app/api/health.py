from __future__ import annotations

import asyncpg
from fastapi import APIRouter
from starlette.responses import Response

from app.api.deps import RuntimeDep
from app.api.responses import JSONBytes
from app.db.migrate import head_revision
from app.errors import ServiceUnavailable, error_responses

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up (liveness)."""
    return {"status": "ok"}


@router.get("/readyz", responses=error_responses(ServiceUnavailable))
async def readyz(runtime: RuntimeDep) -> Response:
    """The database answers and its schema is at this release's head (readiness)."""
    try:
        current = await runtime.pool.fetchval("SELECT version_num FROM alembic_version")
    except asyncpg.UndefinedTableError:
        current = None
    head = head_revision()
    if current != head:
        raise ServiceUnavailable(
            f"The database schema is at {current or 'nothing'}, this release needs {head}: "
            "run `falrelay migrate`."
        )
    return JSONBytes({"status": "ready", "schema": head})
