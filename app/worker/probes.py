"""A worker-only process's HTTP port (FALRELAY_METRICS_PORT): /metrics and the same probes as
the API's, /healthz, /livez and /readyz, so Kubernetes can tell a stuck worker from a busy one.

aiohttp's small server (already here for deliveries) rather than a second uvicorn: it installs
no signal handlers of its own, so the worker's SIGTERM drain stays the only one.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from app.db.availability import is_unavailable
from app.db.pool import Pool
from app.health import NotReady, check_alive, check_ready
from app.metrics import DEFAULT_QUEUE_REFRESH_SECONDS, scrape_allowed
from app.metrics import render as render_metrics
from app.worker.supervision import Supervisor

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


class ProbeServer:
    def __init__(
        self,
        pool: Pool,
        *,
        host: str,
        port: int,
        metrics_token: str | None = None,
        queue_refresh_seconds: float = DEFAULT_QUEUE_REFRESH_SECONDS,
    ) -> None:
        self._pool = pool
        self._metrics_token = metrics_token
        self._queue_refresh_seconds = queue_refresh_seconds
        self._supervisor: Supervisor | None = None
        self._host = host
        self._port = port
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/livez", self._probe(self._alive))
        app.router.add_get("/readyz", self._probe(self._ready))
        self._runner = web.AppRunner(app, access_log=None)

    def watch(self, supervisor: Supervisor) -> None:
        self._supervisor = supervisor

    async def start(self) -> None:
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, self._port).start()

    async def aclose(self) -> None:
        await self._runner.cleanup()

    async def _metrics(self, request: web.Request) -> web.Response:
        if not scrape_allowed(request.headers.get("Authorization"), self._metrics_token):
            problem = {"title": "Unauthorized", "status": 401, "detail": "A bearer token."}
            response = _json(401, problem, content_type=PROBLEM_JSON)
            response.headers["WWW-Authenticate"] = "Bearer"
            return response
        body, content_type = await render_metrics(self._pool, max_age=self._queue_refresh_seconds)
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def _healthz(self, request: web.Request) -> web.Response:
        return _json(200, {"status": "ok"})

    async def _alive(self) -> dict[str, Any]:
        return check_alive(self._supervisor)

    async def _ready(self) -> dict[str, Any]:
        if self._supervisor is None:
            raise NotReady("The worker is starting.")
        return await check_ready(self._pool, self._supervisor, draining=self._supervisor.stopping)

    @staticmethod
    def _probe(
        check: Callable[[], Awaitable[dict[str, Any]]],
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            try:
                return _json(200, await check())
            except NotReady as exc:
                problem = {"title": "Service unavailable", "status": 503, "detail": str(exc)}
                return _json(503, problem, content_type=PROBLEM_JSON)
            except Exception as exc:
                # Not ready, and say why without internals (the port asks for no token): the
                # exception itself is logged.
                log.warning("probe %s failed", request.path, exc_info=exc)
                detail = (
                    "The database is unreachable." if is_unavailable(exc) else type(exc).__name__
                )
                problem = {"title": "Service unavailable", "status": 503, "detail": detail}
                return _json(503, problem, content_type=PROBLEM_JSON)

        return handle


def _json(
    status: int, body: dict[str, Any], *, content_type: str = "application/json"
) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(body), headers={"Content-Type": content_type}
    )
