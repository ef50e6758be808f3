"""The hot routes (`POST /v1/jobs`, fal's callback) served as plain ASGI handlers, before
FastAPI's router.

FastAPI's routing, dependency solving and exception wrappers were most of the API's time per
request in the intake profile (bench/README.md). A raw route skips them and reproduces what
they did for it: the body read and parsed as FastAPI parses a JSON body (the same content-type
rule, the same parser), parameters validated by the same
pydantic types with the same error locations, and every error answered as
`app.api.problems` answers it. The routes stay declared in FastAPI, which documents them
(`openapi.json`) and serves them under a `root_path`; both entries call one function per route.

Anything a raw route does not know how to answer propagates to Starlette's server-error
middleware, as it would from FastAPI's router.
"""

from __future__ import annotations

import email.message
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

from pydantic import TypeAdapter, ValidationError
from starlette.datastructures import Headers, QueryParams
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from app.api.problems import known_error_response
from app.errors import BadRequest, MalformedJSON
from app.runtime import Runtime

# An empty body: FastAPI validates nothing against it, a required body is "missing".
UNDEFINED: Any = object()

Handler = Callable[["RawRequest"], Awaitable[Any]]


class RawRequest:
    """What a raw handler sees of a request: its headers, path parameters and body."""

    __slots__ = ("_body", "headers", "path_params", "receive", "scope")

    def __init__(self, scope: Scope, receive: Receive, path_params: dict[str, str]) -> None:
        self.scope = scope
        self.receive = receive
        self.path_params = path_params
        self.headers = Headers(scope=scope)
        self._body: bytes | None = None

    @property
    def query_params(self) -> QueryParams:
        return QueryParams(self.scope["query_string"])

    @property
    def runtime(self) -> Runtime:
        return cast(Runtime, self.scope["app"].state.runtime)

    async def body(self) -> bytes:
        """The whole body, as Starlette's `Request.body` reads it (ClientDisconnect if the
        client leaves first)."""
        if self._body is None:
            chunks: list[bytes] = []
            while True:
                message = await self.receive()
                if message["type"] == "http.request":
                    chunks.append(message.get("body", b""))
                    if not message.get("more_body", False):
                        break
                elif message["type"] == "http.disconnect":
                    raise ClientDisconnect()
            self._body = b"".join(chunks)
        return self._body

    async def client_gone(self) -> None:
        """Returns when the client has disconnected: with the body read, that is all that
        comes."""
        while (await self.receive())["type"] != "http.disconnect":
            pass


@dataclass(frozen=True, slots=True)
class RawRoute:
    method: str
    # The route's template as FastAPI declares it: `/callbacks/fal/{job_id}/{token}`.
    template: str
    handler: Handler

    async def serve(
        self, scope: Scope, receive: Receive, send: Send, path_params: dict[str, str]
    ) -> None:
        request = RawRequest(scope, receive, path_params)
        try:
            response = await self.handler(request)
        except Exception as exc:
            answer = known_error_response(exc, scope["method"], scope["path"])
            if answer is None:
                raise
            response = answer
        await response(scope, receive, send)


class RawRoutes:
    """Matches (method, path) as Starlette's router would for these templates: a parameter
    is one whole non-empty path segment."""

    def __init__(self, *routes: RawRoute) -> None:
        self._exact: dict[tuple[str, str], RawRoute] = {}
        self._templated: list[tuple[RawRoute, list[str]]] = []
        for route in routes:
            segments = route.template.split("/")
            if any(s.startswith("{") for s in segments):
                self._templated.append((route, segments))
            else:
                self._exact[(route.method, route.template)] = route

    def match(self, method: str, path: str) -> tuple[RawRoute, dict[str, str]] | None:
        route = self._exact.get((method, path))
        if route is not None:
            return route, {}
        if not self._templated:
            return None
        parts = path.split("/")
        for route, segments in self._templated:
            if route.method != method or len(parts) != len(segments):
                continue
            params: dict[str, str] = {}
            for part, segment in zip(parts, segments, strict=True):
                if segment.startswith("{"):
                    if not part:
                        break
                    params[segment[1:-1]] = part
                elif part != segment:
                    break
            else:
                return route, params
        return None


async def json_body(request: RawRequest) -> Any:
    """The body as FastAPI reads a JSON body parameter: `UNDEFINED` when empty; parsed when the
    Content-Type is `application/json` or `application/*+json`; else the bytes themselves
    (which then fail validation), a missing Content-Type included (FastAPI's strict content
    type). Not JSON: MalformedJSON; unreadable (not UTF-8, nested too deep, the client gone):
    BadRequest, with FastAPI's words."""
    try:
        body = await request.body()
        if not body:
            return UNDEFINED
        content_type = request.headers.get("content-type")
        if content_type and _is_json(content_type):
            # `json.loads`, as FastAPI: it reads what our checks rely on (a lone UTF-16
            # surrogate, "\ud800", reaches the 422 `unicode` check), NaN and Infinity, UTF-16
            # and UTF-32 bodies. orjson would save 6 µs of about 600 here, but it reads an
            # integer past 64 bits as a float and nests deeper than `json.loads` can: answers
            # would differ.
            return json.loads(body)
        return body
    except json.JSONDecodeError:
        raise MalformedJSON("The request body is not valid JSON.") from None
    except Exception:
        raise BadRequest("There was an error parsing the body") from None


_JSON_TYPES: dict[str, bool] = {}


def _is_json(content_type: str) -> bool:
    """FastAPI's test of a Content-Type (through `email.message`, so parameters, case and
    spacing are read as it reads them), remembered per distinct header value."""
    known = _JSON_TYPES.get(content_type)
    if known is None:
        message = email.message.Message()
        message["content-type"] = content_type
        subtype = message.get_content_subtype()
        known = message.get_content_maintype() == "application" and (
            subtype == "json" or subtype.endswith("+json")
        )
        if len(_JSON_TYPES) < 256:
            _JSON_TYPES[content_type] = known
    return known


def validate(
    adapter: TypeAdapter[Any], value: Any, loc: tuple[str | int, ...], errors: list[Any]
) -> Any:
    """`value` validated as FastAPI validates a parameter (`from_attributes`, the errors'
    locations under `loc`; `UNDEFINED`, nothing sent, is its "missing" error); the errors are
    added to `errors`, and None returned."""
    if value is UNDEFINED:
        errors.append({"type": "missing", "loc": loc, "msg": "Field required", "input": None})
        return None
    try:
        return adapter.validate_python(value, from_attributes=True)
    except ValidationError as exc:
        errors.extend({**e, "loc": loc + e["loc"]} for e in exc.errors(include_url=False))
        return None
