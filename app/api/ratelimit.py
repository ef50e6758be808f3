"""The RateLimit fields on every answer to a rate-limited client, and their OpenAPI entries.

The limit is checked in `get_principal` (app.api.deps), which every /v1 route depends on; it
leaves the fields in the request's state, and `app.api.edge` puts them on the answer, whatever
the route returns or raises (FastAPI drops headers set on an injected Response once a route
returns a Response of its own). A refusal (429) carries its fields itself.
"""

from __future__ import annotations

from typing import Any

from app.api.problems import PROBLEM_JSON

STATE_KEY = "rate_limit_headers"


def remember(state: Any, headers: dict[str, str]) -> None:
    """Called with `request.state`, which is the scope's "state" mapping underneath."""
    setattr(state, STATE_KEY, headers)


_FIELD = {"schema": {"type": "string"}}
RATE_LIMIT_HEADERS: dict[str, Any] = {
    "RateLimit-Policy": {
        **_FIELD,
        "description": 'The client\'s quota, e.g. `"default";q=10;w=1` (IETF draft '
        "httpapi-ratelimit-headers); only when the client has a rate limit.",
    },
    "RateLimit": {
        **_FIELD,
        "description": 'What is left of it, e.g. `"default";r=7;t=1`: `r` requests, whole again '
        "in `t` seconds; only when the client has a rate limit.",
    },
}

RATE_LIMITED: dict[int | str, dict[str, Any]] = {
    429: {
        "description": "Rate limit exceeded: retry after `Retry-After` seconds.",
        "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        "headers": {
            "Retry-After": {
                "schema": {"type": "integer"},
                "description": "Seconds until a request fits the rate limit again.",
            },
            **RATE_LIMIT_HEADERS,
        },
    }
}
