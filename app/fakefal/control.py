"""The fake's control API under `/_fake/` (no auth): knobs, counters, requests, reset.

For tests, demos and chaos runs; nothing on real fal corresponds to it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

if TYPE_CHECKING:
    from app.fakefal.server import FakeFal


def routes(fake: FakeFal) -> list[BaseRoute]:
    async def read_config(request: Request) -> Response:
        """The current knobs."""
        return JSONResponse(fake.config.model_dump(mode="json"))

    async def update_config(request: Request) -> Response:
        """Change some knobs (a partial JSON object); answers the whole new config."""
        try:
            changes: Any = await request.json()
        except ValueError:
            return JSONResponse({"detail": "the body must be a JSON object"}, 400)
        if not isinstance(changes, dict):
            return JSONResponse({"detail": "the body must be a JSON object"}, 422)
        try:
            fake.configure(changes)
        except ValidationError as exc:
            return JSONResponse(
                {"detail": exc.errors(include_url=False, include_context=False)}, 422
            )
        except ValueError as exc:
            return JSONResponse({"detail": str(exc)}, 422)
        return JSONResponse(fake.config.model_dump(mode="json"))

    async def read_stats(request: Request) -> Response:
        """What the fake has done since it started or was reset."""
        return JSONResponse(fake.stats.as_dict())

    async def list_requests(request: Request) -> Response:
        """Every request it remembers, oldest first."""
        now = time.monotonic()
        return JSONResponse({"requests": [r.summary(now) for r in fake.requests]})

    async def read_models(request: Request) -> Response:
        """The model ids served: the catalog's and those registered with the fake."""
        return JSONResponse(
            {"catalog": sorted(fake.catalog), "registered": list(fake.config.models)}
        )

    async def register_models(request: Request) -> Response:
        """Serve more model ids: `{"ids": ["owner/app[/path]", ...]}` (kept across resets)."""
        try:
            body: Any = await request.json()
        except ValueError:
            return JSONResponse({"detail": "the body must be a JSON object"}, 400)
        ids = body.get("ids") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not all(isinstance(name, str) for name in ids):
            return JSONResponse({"detail": 'the body must be {"ids": ["owner/app", ...]}'}, 422)
        try:
            registered = fake.register_models(ids)
        except ValidationError as exc:
            return JSONResponse(
                {"detail": exc.errors(include_url=False, include_context=False)}, 422
            )
        return JSONResponse({"catalog": sorted(fake.catalog), "registered": registered})

    async def reset(request: Request) -> Response:
        """Forget requests and counters; the config stays."""
        fake.reset()
        return Response(status_code=204)

    return [
        Route("/_fake/config", read_config, methods=["GET"]),
        Route("/_fake/config", update_config, methods=["PATCH"]),
        Route("/_fake/stats", read_stats, methods=["GET"]),
        Route("/_fake/requests", list_requests, methods=["GET"]),
        Route("/_fake/models", read_models, methods=["GET"]),
        Route("/_fake/models", register_models, methods=["POST"]),
        Route("/_fake/reset", reset, methods=["POST"]),
    ]
