from __future__ import annotations

from typing import Annotated, Any, cast

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.api.ratelimit import remember
from app.auth.service import Principal
from app.clients import ratelimit
from app.errors import Unauthorized
from app.runtime import Runtime


async def get_runtime(request: Request) -> Runtime:
    # async: FastAPI runs a plain `def` dependency in its thread pool, a costly hop for a
    # lookup (measured: about a fifth of intake throughput).
    return cast(Runtime, request.app.state.runtime)


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="An API key from `falrelay keys create NAME`, sent as `Bearer <key>`.",
)


async def get_principal(
    request: Request,
    runtime: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The key's client; every request of a client with a rate limit counts against it here
    (so every /v1 route is limited: test pings and secret rotations too)."""
    return await authenticate(
        runtime, None if credentials is None else credentials.credentials, request.state
    )


def bearer_key(authorization: str | None) -> str | None:
    """The key of an `Authorization: Bearer <key>` header, read as `_bearer` reads it (for the
    routes served without FastAPI, app.api.raw)."""
    if not authorization:
        return None
    scheme, _, param = authorization.partition(" ")
    key = param.strip()
    if not (scheme and key) or scheme.lower() != "bearer":
        return None
    return key


async def authenticate(runtime: Runtime, key: str | None, state: Any) -> Principal:
    """`key`'s client, its request counted against its rate limit; the RateLimit fields are
    left in `state` (the request's) for app.api.edge to send."""
    if key is None:
        raise Unauthorized("Send the API key as `Authorization: Bearer <key>`.")
    principal = await runtime.keys.resolve(key)
    if principal is None:
        raise Unauthorized("The API key is not valid, or it was revoked.")
    rate = principal.limits.rate
    if rate is not None:
        decision = await ratelimit.consume(runtime.pool, principal.client_id, rate)
        if not decision.allowed:
            raise ratelimit.refusal(rate, decision)
        remember(state, decision.headers(rate))
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]
