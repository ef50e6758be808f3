"""Per request: an id (X-Request-ID, kept or made), metrics by route template, an access line."""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import logs
from app.metrics import HTTP_LATENCY, HTTP_REQUESTS

access = logging.getLogger("falrelay.access")
_VALID_ID = re.compile(rb"^[A-Za-z0-9._\-]{1,64}$")


class Observe:
    def __init__(self, app: ASGIApp, *, access_log: bool) -> None:
        self.app = app
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        incoming = next((v for k, v in scope["headers"] if k == b"x-request-id"), b"")
        rid = incoming.decode() if _VALID_ID.match(incoming) else uuid.uuid4().hex
        token = logs.request_id.set(rid)
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = _route_of(scope)
            HTTP_REQUESTS.labels(scope["method"], route, str(status)).inc()
            HTTP_LATENCY.labels(scope["method"], route).observe(elapsed)
            if self.access_log:
                access.info(
                    "%s %s %d",
                    scope["method"],
                    route,
                    status,
                    extra={
                        "method": scope["method"],
                        "path": logs.mask_callback_tokens(scope["path"]),
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 2),
                    },
                )
            logs.request_id.reset(token)


def _route_of(scope: Scope) -> str:
    route: Any = scope.get("route")
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"
