"""The hot routes served before FastAPI's router (app.api.raw) answer byte for byte as FastAPI
serving the declared routes does: every request below goes to both, and the answers (status,
headers, body) are compared, ids and times aside."""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import AsyncIterator
from typing import Any
from unittest import mock

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from app.api import jobs
from app.api.edge import Edge
from app.api.raw import RawRoute, RawRoutes
from app.auth import service as auth_service
from app.db.pool import Pool
from app.jobs.service import IdempotencyKeyInFlight
from app.main import create_app
from app.settings import Settings
from tests.support import http_client

JOB = {"input": {"prompt": "a red fox in snow", "resolution": "1K"}, "metadata": {"a": "b"}}
JSON = {"Content-Type": "application/json"}


def _body(value: Any) -> bytes:
    return json.dumps(value).encode()


# (name, headers, body): each sent by one client to each app.
CASES: list[tuple[str, dict[str, str], bytes]] = [
    ("created", JSON, _body(JOB)),
    ("every field", JSON, _body({**JOB, "priority": "low", "start_timeout": 30})),
    ("json with a charset", {"Content-Type": "Application/JSON; charset=utf-8"}, _body(JOB)),
    ("a +json type", {"Content-Type": "application/merge-patch+json"}, _body(JOB)),
    ("no content type", {}, _body(JOB)),
    ("an empty content type", {"Content-Type": ""}, _body(JOB)),
    ("text/plain", {"Content-Type": "text/plain"}, _body(JOB)),
    ("application/jsonx", {"Content-Type": "application/jsonx"}, _body(JOB)),
    ("malformed", JSON, b'{"input": '),
    ("empty", JSON, b""),
    ("null", JSON, b"null"),
    ("a list", JSON, b"[1, 2]"),
    ("a string", JSON, b'"x"'),
    ("a lone surrogate", JSON, b'{"input": {"prompt": "a \\ud800 b"}}'),
    ("a lone surrogate in a key", JSON, b'{"input": {"prompt": "p"}, "metadata": {"\\udfff": ""}}'),
    ("NaN", JSON, b'{"input": {"prompt": "p", "seed": NaN}}'),
    ("Infinity", JSON, b'{"input": {"prompt": "p", "seed": -Infinity}}'),
    ("a huge integer", JSON, b'{"input": {"prompt": "p", "seed": 123456789012345678901234567890}}'),
    ("a float seed", JSON, b'{"input": {"prompt": "p", "seed": 1e2}}'),
    ("floats", JSON, b'{"input": {"prompt": "p", "seed": 2.2250738585072011e-308, "x": 0.1}}'),
    ("an integer past 64 bits", JSON, b'{"input": {"prompt": "p", "seed": 18446744073709551616}}'),
    ("1e400", JSON, b'{"input": {"prompt": "p", "seed": 1e400}}'),
    ("not UTF-8", JSON, b'{"input": {"prompt": "\xff\xfe"}}'),
    ("UTF-16", JSON, json.dumps(JOB).encode("utf-16")),
    ("a BOM", JSON, b"\xef\xbb\xbf" + _body(JOB)),
    (
        "nested too deep",
        JSON,
        b'{"input": {"prompt": "p", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}}",
    ),
    ("a duplicate key", JSON, b'{"input": {"prompt": "a"}, "input": {"prompt": "b"}}'),
    ("a NUL", JSON, b'{"input": {"prompt": "a \\u0000 b"}}'),
    ("a control character", JSON, b'{"input": {"prompt": "a \x01 b"}}'),
    ("no input", JSON, _body({"metadata": {"a": "b"}})),
    (
        "many errors",
        JSON,
        _body(
            {
                "model": "",
                "input": [],
                "metadata": {"": 1, "k": "v" * 600},
                "extra": 1,
                "priority": "urgent",
                "start_timeout": 1,
                "callback_url": 5,
            }
        ),
    ),
    ("an unknown model", JSON, _body({**JOB, "model": "no/such/model"})),
    ("a bad input", JSON, _body({"input": {"prompt": "", "aspect_ratio": "7:1", "x": 1}})),
    ("a private callback", JSON, _body({**JOB, "callback_url": "http://127.0.0.1/hook"})),
    ("a bad key", {**JSON, "Idempotency-Key": "has space"}, _body(JOB)),
    ("an empty key", {**JSON, "Idempotency-Key": ""}, _body(JOB)),
    ("a long key", {**JSON, "Idempotency-Key": "k" * 256}, _body(JOB)),
    ("a bad key and body", {**JSON, "Idempotency-Key": "caf\xe9"}, _body({"input": 1})),
    ("a bad key, no body", {**JSON, "Idempotency-Key": "a b"}, b""),
    ("prefer wait", {**JSON, "Prefer": "wait=0.1"}, _body(JOB)),
    ("prefer unreadable", {**JSON, "Prefer": "wait=x, respond-async"}, _body(JOB)),
    ("too large", {**JSON, "Content-Length": "99999999"}, _body(JOB)),
    ("a bad length", {**JSON, "Content-Length": "1x"}, _body(JOB)),
]
# Sent without the client's key.
AUTH_CASES: list[tuple[str, dict[str, str], bytes]] = [
    ("no key", JSON, _body(JOB)),
    ("no key, malformed", JSON, b"{"),
    ("no key, empty", JSON, b""),
    ("basic", {**JSON, "Authorization": "Basic abc"}, _body(JOB)),
    ("bearer without a key", {**JSON, "Authorization": "Bearer "}, _body(JOB)),
    ("lower-case bearer", {**JSON, "Authorization": "bearer frk_nope"}, _body(JOB)),
    ("an unknown key", {**JSON, "Authorization": "Bearer frk_nope"}, _body(JOB)),
]
# Headers whose values differ between any two answers.
UNIQUE_HEADERS = {"x-request-id", "location"}


def _declared_only(app: FastAPI) -> FastAPI:
    for middleware in app.user_middleware:
        if middleware.cls is Edge:
            middleware.kwargs["raw"] = RawRoutes()
    return app


@pytest.fixture(scope="module")
async def apps(settings: Settings) -> AsyncIterator[dict[str, FastAPI]]:
    raw = create_app(settings)
    declared = _declared_only(create_app(settings))
    async with raw.router.lifespan_context(raw), declared.router.lifespan_context(declared):
        yield {"raw": raw, "declared": declared}


def _comparable(response: httpx.Response) -> tuple[int, list[tuple[str, str]], Any]:
    headers = [(k, v) for k, v in response.headers.multi_items() if k not in UNIQUE_HEADERS]
    content_type = response.headers.get("content-type", "")
    body: Any = response.content
    if "json" in content_type and response.content:
        body = response.json()
        if isinstance(body, dict) and body.get("id", "").startswith("job_"):
            # Another job each time: its id and times differ, and so may its length.
            body = {k: v for k, v in body.items() if k != "id" and not k.endswith("_at")}
            headers = [(k, v) for k, v in headers if k != "content-length"]
    return response.status_code, headers, body


async def _send(
    http: httpx.AsyncClient, headers: dict[str, str], body: bytes, path: str = "/v1/jobs"
) -> httpx.Response:
    request = http.build_request("POST", path, content=body)
    # httpx's own Content-Type and Content-Length only where the case sends none of its own;
    # values as bytes, so a case can send Latin-1.
    given = {name.lower().encode() for name in headers}
    kept = [(k, v) for k, v in request.headers.raw if k.lower() not in given]
    request.headers = httpx.Headers(
        kept + [(name.encode(), value.encode("latin-1")) for name, value in headers.items()]
    )
    return await http.send(request)


async def _clients(
    apps: dict[str, FastAPI], pool: Pool
) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    _, key = await auth_service.create_client(pool, "raw-routes")
    async with http_client(apps["raw"], key) as raw, http_client(apps["declared"], key) as declared:
        yield {"raw": raw, "declared": declared}


@pytest.mark.parametrize(("name", "headers", "body"), CASES, ids=[case[0] for case in CASES])
async def test_a_job_request_is_answered_as_fastapi_answers_it(
    apps: dict[str, FastAPI], pool: Pool, name: str, headers: dict[str, str], body: bytes
) -> None:
    async for http in _clients(apps, pool):
        answers = [await _send(http[which], headers, body) for which in ("raw", "declared")]
        assert _comparable(answers[0]) == _comparable(answers[1]), name


@pytest.mark.parametrize(
    ("name", "headers", "body"), AUTH_CASES, ids=[case[0] for case in AUTH_CASES]
)
async def test_authentication_is_answered_as_fastapi_answers_it(
    apps: dict[str, FastAPI], name: str, headers: dict[str, str], body: bytes
) -> None:
    answers = []
    for which in ("raw", "declared"):
        async with http_client(apps[which]) as http:
            answers.append(await _send(http, headers, body))
    assert _comparable(answers[0]) == _comparable(answers[1]), name
    assert answers[0].status_code in (400, 401)


async def test_idempotency_keys_are_answered_as_fastapi_answers_them(
    apps: dict[str, FastAPI], pool: Pool
) -> None:
    async for http in _clients(apps, pool):
        for which in ("raw", "declared"):
            key = {**JSON, "Idempotency-Key": f"{which}-{secrets.token_hex(4)}"}
            created = await _send(http[which], key, _body(JOB))
            replayed = await _send(http[which], key, _body(JOB))
            reused = await _send(http[which], key, _body({**JOB, "metadata": {}}))
            assert [created.status_code, replayed.status_code, reused.status_code] == [
                201,
                200,
                422,
            ]
            assert replayed.json()["id"] == created.json()["id"]
            if which == "raw":
                raw_answers = [_comparable(r) for r in (created, replayed, reused)]
        assert raw_answers == [_comparable(r) for r in (created, replayed, reused)]


@pytest.mark.parametrize(
    ("path", "headers", "body"),
    [
        ("/callbacks/fal/job_x/not-a-token", JSON, b"{}"),
        ("/callbacks/fal/job_x/not-a-token", {}, b""),
    ],
)
async def test_a_fal_callback_is_answered_as_fastapi_answers_it(
    apps: dict[str, FastAPI], path: str, headers: dict[str, str], body: bytes
) -> None:
    answers = []
    for which in ("raw", "declared"):
        async with http_client(apps[which]) as http:
            answers.append(await _send(http, headers, body, path))
    assert _comparable(answers[0]) == _comparable(answers[1])
    assert answers[0].status_code == 401


async def test_the_hot_routes_are_served_before_fastapis_router(
    apps: dict[str, FastAPI], pool: Pool
) -> None:
    served: list[str] = []
    original = RawRoute.serve

    async def spy(route: RawRoute, *args: Any) -> None:
        served.append(route.template)
        await original(route, *args)

    async for http in _clients(apps, pool):
        with mock.patch.object(RawRoute, "serve", spy):
            assert (await _send(http["raw"], JSON, _body(JOB))).status_code == 201
            assert (await http["raw"].post("/callbacks/fal/job_x/y", json={})).status_code == 401
            assert (await http["raw"].get("/v1/jobs")).status_code == 200
            assert (await _send(http["declared"], JSON, _body(JOB))).status_code == 201
    assert served == ["/v1/jobs", "/callbacks/fal/{job_id}/{token}"]


def test_raw_routes_match_only_their_templates() -> None:
    async def handler(request: object) -> None:
        raise AssertionError

    routes = RawRoutes(
        RawRoute("POST", "/v1/jobs", handler),
        RawRoute("POST", "/callbacks/fal/{job_id}/{token}", handler),
    )
    assert routes.match("POST", "/v1/jobs") is not None
    assert routes.match("GET", "/v1/jobs") is None
    assert routes.match("POST", "/v1/jobs/") is None
    found = routes.match("POST", "/callbacks/fal/job_1/tok")
    assert found is not None
    assert found[1] == {"job_id": "job_1", "token": "tok"}
    for path in ("/callbacks/fal/job_1", "/callbacks/fal/job_1/", "/callbacks/fal//tok"):
        assert routes.match("POST", path) is None, path
    assert routes.match("POST", "/callbacks/fal/a/b/c") is None


async def test_the_access_line_and_metrics_are_those_of_the_declared_route(
    apps: dict[str, FastAPI], pool: Pool, caplog: pytest.LogCaptureFixture
) -> None:
    lines = []
    async for http in _clients(apps, pool):
        for which in ("raw", "declared"):
            caplog.clear()
            with caplog.at_level(logging.INFO, logger="falrelay.access"):
                await _send(http[which], JSON, b"{")
            (record,) = [r for r in caplog.records if r.name == "falrelay.access"]
            lines.append((record.getMessage(), record.method, record.path, record.status))  # type: ignore[attr-defined]
    assert lines[0] == lines[1] == ("POST /v1/jobs 400", "POST", "/v1/jobs", 400)


@pytest.mark.parametrize(
    "error",
    [
        IdempotencyKeyInFlight("The first request with this key is still in flight."),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        ConnectionResetError(),
        asyncpg.UntranslatableCharacterError("unsupported Unicode escape sequence"),
    ],
    ids=type,
)
async def test_the_services_errors_are_answered_as_fastapi_answers_them(
    apps: dict[str, FastAPI], pool: Pool, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    async def failing(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(jobs.service, "create_job", failing)
    async for http in _clients(apps, pool):
        answers = [await _send(http[which], JSON, _body(JOB)) for which in ("raw", "declared")]
        assert _comparable(answers[0]) == _comparable(answers[1])
        assert answers[0].status_code in (409, 422, 503)


async def test_an_unexpected_error_leaves_the_raw_route_as_it_leaves_fastapis(
    apps: dict[str, FastAPI], pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def failing(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(jobs.service, "create_job", failing)
    async for http in _clients(apps, pool):
        for which in ("raw", "declared"):
            with pytest.raises(RuntimeError, match="a bug"):
                await _send(http[which], JSON, _body(JOB))
