"""Every request's one pass around the app: its id (X-Request-ID, kept or made), the body
bound, the RateLimit fields, metrics by route template and an access line.

One pure-ASGI layer, one wrapper of `send`: these were three middlewares, and their nested
wrappers held a quarter of the API's time in the intake profile (bench/README.md). The hot
routes (`app.api.raw`) are served from here, before FastAPI's router.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Mapping
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import logs
from app.api.problems import problem_response
from app.api.ratelimit import STATE_KEY
from app.api.raw import RawRoutes
from app.errors import BadRequest, PayloadTooLarge
from app.metrics import HTTP_LATENCY, HTTP_REQUESTS, child

access = logging.getLogger("falrelay.access")
_VALID_ID = re.compile(rb"^[A-Za-z0-9._\-]{1,64}$")


class Edge:
    """`max_bytes` bounds every request body, `routes` gives a (method, path) its own bound.

    With a Content-Length the bound is one comparison (the HTTP server never delivers more
    bytes than it announces). A chunked body is read here first, up to the bound, and replayed
    to the app: FastAPI would turn an error raised mid-read into a generic 400.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        access_log: bool,
        max_bytes: int,
        routes: Mapping[tuple[str, str], int] | None = None,
        raw: RawRoutes | None = None,
    ) -> None:
        self.app = app
        self.access_log = access_log
        self.max_bytes = max_bytes
        # (method, path) → its own bound: job creation carries file inputs as data URIs.
        self.routes = dict(routes or {})
        self.raw = raw or RawRoutes()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        incoming = next((v for k, v in scope["headers"] if k == b"x-request-id"), b"")
        # A request id only has to be unique, not unguessable: Python's own generator, not a
        # read of the kernel's (uuid4), which is a system call on every request.
        rid = incoming.decode() if _VALID_ID.match(incoming) else f"{random.getrandbits(128):032x}"
        token = logs.request_id.set(rid)
        status = 500
        method: str = scope["method"]
        path: str = scope["path"]
        # Under a root_path, FastAPI's router strips it first: the raw routes are left to it.
        raw = None if scope.get("root_path") else self.raw.match(method, path)
        template: str | None = None  # a raw route's, for metrics and the access line

        async def send_edged(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [*message.get("headers", [])]
                # The RateLimit fields `app.api.deps` left for a rate-limited client.
                fields = scope.get("state", {}).get(STATE_KEY)
                if fields:
                    headers += [
                        (name.lower().encode(), value.encode()) for name, value in fields.items()
                    ]
                headers.append((b"x-request-id", rid.encode()))
                message["headers"] = headers
            await send(message)

        try:
            body = await self._bounded(scope, receive, send_edged)
            if body is _ANSWERED:
                return
            if raw is not None:
                route, params = raw
                template = route.template
                await route.serve(
                    scope, receive if body is None else _replay(body, receive), send_edged, params
                )
                return
            if body is None:
                await self.app(scope, receive, send_edged)
                return
            await self.app(scope, _replay(body, receive), send_edged)
        finally:
            elapsed = time.perf_counter() - started
            route_label = template or _route_of(scope)
            child(HTTP_REQUESTS, method, route_label, str(status)).inc()
            child(HTTP_LATENCY, method, route_label).observe(elapsed)
            if self.access_log:
                access.info(
                    "%s %s %d",
                    method,
                    route_label,
                    status,
                    extra={
                        "method": method,
                        "path": logs.mask_callback_tokens(path),
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 2),
                    },
                )
            logs.request_id.reset(token)

    async def _bounded(self, scope: Scope, receive: Receive, send: Send) -> Any:
        """None when the body is within the bound and still to be read (it has a length);
        the body itself when it was read here (chunked); `_ANSWERED` when a 400 or 413 was
        sent, or the client went away mid-body."""
        max_bytes = self.routes.get((scope["method"], scope["path"]), self.max_bytes)
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit():
                    await problem_response(BadRequest("Invalid Content-Length."))(
                        scope, receive, send
                    )
                    return _ANSWERED
                if int(value) > max_bytes:
                    await problem_response(_too_large(max_bytes))(scope, receive, send)
                    return _ANSWERED
                return None

        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return _ANSWERED  # the client went away
            body += message.get("body", b"")
            if len(body) > max_bytes:
                await problem_response(_too_large(max_bytes))(scope, receive, send)
                return _ANSWERED
            if not message.get("more_body", False):
                return bytes(body)


_ANSWERED = object()


def _replay(body: bytes, receive: Receive) -> Receive:
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _too_large(max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"The request body must be at most {max_bytes} bytes.")


def _route_of(scope: Scope) -> str:
    route: Any = scope.get("route")
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"
