from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse
from starlette.responses import Response

from app.api.deps import RuntimeDep
from app.api.problems import error_responses
from app.api.responses import JSONBytes
from app.errors import ServiceUnavailable, Unauthorized
from app.health import NotReady, check_alive, check_ready
from app.metrics import render as render_metrics
from app.metrics import scrape_allowed
from app.worker.supervision import Supervisor

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/livez", responses=error_responses(ServiceUnavailable))
async def livez(request: Request) -> Response:
    """The process is up and none of its worker loops is stuck beyond repair (liveness: a 503
    here means restart the process)."""
    try:
        return JSONBytes(check_alive(_supervisor(request)))
    except NotReady as exc:
        raise ServiceUnavailable(str(exc)) from exc


@router.get("/readyz", responses=error_responses(ServiceUnavailable))
async def readyz(request: Request, runtime: RuntimeDep) -> Response:
    """The database answers, its schema is at this release's head, every worker loop is making
    progress, and the process is not shutting down (readiness)."""
    try:
        ready = await check_ready(
            runtime.pool,
            _supervisor(request),
            draining=getattr(request.app.state, "draining", False),
        )
    except NotReady as exc:
        raise ServiceUnavailable(str(exc)) from exc
    return JSONBytes(ready)


def _supervisor(request: Request) -> Supervisor | None:
    worker = getattr(request.app.state, "worker", None)
    return worker.supervisor if worker is not None else None


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={
        200: {"content": {"text/plain": {}}, "description": "Prometheus text format"},
        **error_responses(Unauthorized),
    },
)
async def metrics(request: Request, runtime: RuntimeDep) -> Response:
    """Prometheus metrics: requests, job transitions, fal calls, deliveries, queue depths.
    With FALRELAY_METRICS_TOKEN set, only for `Authorization: Bearer <that token>`."""
    settings = runtime.settings
    token = settings.metrics_token.get_secret_value() if settings.metrics_token else None
    if not scrape_allowed(request.headers.get("authorization"), token):
        raise Unauthorized("/metrics needs the metrics bearer token.")
    body, content_type = await render_metrics(
        runtime.pool, max_age=settings.metrics_queue_refresh_seconds
    )
    return Response(body, media_type=content_type)
