"""A request body bound, enforced before the body reaches JSON parsing."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.problems import problem_response
from app.errors import BadRequest, PayloadTooLarge


class BodySizeLimit:
    """Answers 413 to a body over `max_bytes`.

    With a Content-Length the check is one comparison (the HTTP server never delivers more
    bytes than it announces). A chunked body is read here first, up to the bound, and replayed
    to the app: FastAPI would turn an error raised mid-read into a generic 400.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        routes: Mapping[tuple[str, str], int] | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        # (method, path) → its own bound: job creation carries file inputs as data URIs.
        self.routes = dict(routes or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self.routes.get((scope["method"], scope["path"]), self.max_bytes)
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit():
                    await problem_response(BadRequest("Invalid Content-Length."))(
                        scope, receive, send
                    )
                elif int(value) > max_bytes:
                    await problem_response(_too_large(max_bytes))(scope, receive, send)
                else:
                    await self.app(scope, receive, send)
                return

        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            if len(body) > max_bytes:
                await problem_response(_too_large(max_bytes))(scope, receive, send)
                return
            if not message.get("more_body", False):
                break

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _too_large(max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"The request body must be at most {max_bytes} bytes.")
