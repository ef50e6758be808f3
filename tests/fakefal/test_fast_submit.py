"""Queue submits served before Starlette's router (`FakeFal.app`) answer byte for byte as the
router serving the catch-all route does (`FakeFal.routed`): every request below goes to two
fakes with the same seed, one through each, and the answers (status, raw headers, body) are
compared, request ids and ports aside."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount, Route

from app.fakefal import FakeFal, FakeFalConfig
from app.fakefal.endpoints import RESERVED_ROOTS
from tests.fakefal.support import IMAGINEART
from tests.servers import LiveServer

PROMPT = {"prompt": "a red fox in snow", "aspect_ratio": "16:9", "seed": 1234}
AUTH = {"Authorization": "Key k"}
JSON = {**AUTH, "Content-Type": "application/json"}


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


NOWHERE = f"http://127.0.0.1:{_closed_port()}/hook"
BODY = json.dumps(PROMPT).encode()

# (name, path, query, headers, body)
CASES: list[tuple[str, str, dict[str, str], dict[str, str], bytes]] = [
    ("a submit", f"/{IMAGINEART}", {}, JSON, BODY),
    ("with a webhook", f"/{IMAGINEART}", {"fal_webhook": NOWHERE}, JSON, BODY),
    ("an ftp webhook", f"/{IMAGINEART}", {"fal_webhook": "ftp://x/y"}, JSON, BODY),
    ("a max queue length", f"/{IMAGINEART}", {"fal_max_queue_length": "3"}, JSON, BODY),
    ("a bad max queue length", f"/{IMAGINEART}", {"fal_max_queue_length": "-1"}, JSON, BODY),
    ("low priority", f"/{IMAGINEART}", {}, {**JSON, "X-Fal-Queue-Priority": "LOW"}, BODY),
    ("a bad priority", f"/{IMAGINEART}", {}, {**JSON, "X-Fal-Queue-Priority": "high"}, BODY),
    ("a start timeout", f"/{IMAGINEART}", {}, {**JSON, "X-Fal-Request-Timeout": "5"}, BODY),
    ("a tiny timeout", f"/{IMAGINEART}", {}, {**JSON, "X-Fal-Request-Timeout": "0.1"}, BODY),
    ("a NaN timeout", f"/{IMAGINEART}", {}, {**JSON, "X-Fal-Request-Timeout": "nan"}, BODY),
    ("a word timeout", f"/{IMAGINEART}", {}, {**JSON, "X-Fal-Request-Timeout": "soon"}, BODY),
    (
        "a media lifetime",
        f"/{IMAGINEART}",
        {},
        {**JSON, "X-Fal-Object-Lifecycle-Preference": '{"expiration_duration_seconds": 60}'},
        BODY,
    ),
    ("no auth", f"/{IMAGINEART}", {}, {"Content-Type": "application/json"}, BODY),
    ("bearer auth", f"/{IMAGINEART}", {}, {"Authorization": "Bearer k"}, BODY),
    ("no key", f"/{IMAGINEART}", {}, {"Authorization": "Key"}, BODY),
    ("lower-case key", f"/{IMAGINEART}", {}, {"Authorization": "key k"}, BODY),
    ("malformed JSON", f"/{IMAGINEART}", {}, JSON, b'{"prompt": '),
    ("an empty body", f"/{IMAGINEART}", {}, JSON, b""),
    ("whitespace", f"/{IMAGINEART}", {}, JSON, b"  \n"),
    ("a list", f"/{IMAGINEART}", {}, JSON, b"[1, 2]"),
    ("not UTF-8", f"/{IMAGINEART}", {}, JSON, b'{"prompt": "\xff\xfe"}'),
    ("a huge integer", f"/{IMAGINEART}", {}, JSON, b'{"prompt": "p", "seed": 1' + b"0" * 30 + b"}"),
    ("an invalid input", f"/{IMAGINEART}", {}, JSON, b'{"prompt": ""}'),
    ("UTF-8", f"/{IMAGINEART}", {}, JSON, '{"prompt": "fox \u2603 \U0001f98a"}'.encode()),
    ("a trailing slash", f"/{IMAGINEART}/", {}, JSON, BODY),
    ("double slashes", f"//{IMAGINEART}", {}, JSON, BODY),
    ("an unknown model", "/someone/something", {}, JSON, BODY),
    ("one segment", "/someone", {}, JSON, BODY),
    ("the root", "/", {}, JSON, BODY),
    ("a namespace", "/workflows/someone/app", {}, JSON, BODY),
    ("a request path", "/imagineart/imagineart-2.0-preview/requests/abc", {}, JSON, BODY),
    ("an encoded slash", "/imagineart%2Fimagineart-2.0-preview/text-to-image", {}, JSON, BODY),
    ("a space", "/some one/app", {}, JSON, BODY),
    ("a newline", "/someone/app%0A", {}, JSON, BODY),
    ("a newline inside", "/some%0Aone/app", {}, JSON, BODY),
    ("non-ASCII", "/caf\u00e9/app", {}, JSON, BODY),
    ("a reserved root", "/run/someone/app", {}, JSON, BODY),
    ("the control API", "/_fake/models", {}, JSON, b'{"ids": []}'),
    ("a file", "/files/x.png", {}, JSON, BODY),
    ("storage", "/storage/nothing", {}, JSON, BODY),
    ("a near-reserved root", "/runs/someone/app", {}, JSON, BODY),
    ("jwks", "/.well-known/jwks.json", {}, JSON, BODY),
]

_IDS = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def _normalised(response: httpx.Response, base: str) -> tuple[int, list[Any], bytes]:
    body = response.content
    headers = []
    for name, value in response.headers.raw:
        if name == b"date":
            continue
        if name == b"content-length":
            assert int(value) == len(body)
            continue
        headers.append((name, _IDS.sub(b"<id>", value.replace(base.encode(), b"<base>"))))
    return response.status_code, headers, _IDS.sub(b"<id>", body.replace(base.encode(), b"<base>"))


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[str, str, FakeFal, FakeFal]]:
    """The same fake twice, with the same seed: one behind `app`, one behind its router."""
    config = {"random_seed": 7, "webhook_retry_delays": []}
    fast, routed = FakeFal(FakeFalConfig(**config)), FakeFal(FakeFalConfig(**config))  # type: ignore[arg-type]
    with LiveServer(fast.app) as a, LiveServer(routed.routed) as b:
        yield a.url, b.url, fast, routed


def _mounted(fake: FakeFal, app: Any) -> Starlette:
    async def other(request: Any) -> None:  # pragma: no cover - never reached
        raise AssertionError

    @asynccontextmanager
    async def lifespan(outer: Starlette) -> AsyncIterator[None]:
        yield
        await fake.aclose()  # a mounted app's own lifespan never runs

    return Starlette(routes=[Route("/x", other), Mount("/fal", app=app)], lifespan=lifespan)


@pytest.fixture(scope="module")
def mounted() -> Iterator[tuple[str, str]]:
    config = {"random_seed": 7, "webhook_retry_delays": []}
    fast, routed = FakeFal(FakeFalConfig(**config)), FakeFal(FakeFalConfig(**config))  # type: ignore[arg-type]
    with (
        LiveServer(_mounted(fast, fast.app)) as a,
        LiveServer(_mounted(routed, routed.routed)) as b,
    ):
        yield f"{a.url}/fal", f"{b.url}/fal"


def _send(
    client: httpx.Client, base: str, path: str, query: dict[str, str], headers: Any, body: bytes
) -> httpx.Response:
    url = httpx.URL(base + path, params=query or None)
    return client.post(url, headers=headers, content=body)


@pytest.mark.parametrize(("name", "path", "query", "headers", "body"), CASES)
def test_a_submit_answers_as_the_router_does(
    servers: tuple[str, str, FakeFal, FakeFal],
    name: str,
    path: str,
    query: dict[str, str],
    headers: dict[str, str],
    body: bytes,
) -> None:
    fast_url, routed_url, _, _ = servers
    with httpx.Client(trust_env=False, timeout=10) as client:
        fast = _send(client, fast_url, path, query, headers, body)
        routed = _send(client, routed_url, path, query, headers, body)
    assert _normalised(fast, fast_url) == _normalised(routed, routed_url), name


@pytest.mark.parametrize(("name", "path", "query", "headers", "body"), CASES[:12])
def test_a_mounted_submit_answers_as_the_router_does(
    mounted: tuple[str, str],
    name: str,
    path: str,
    query: dict[str, str],
    headers: dict[str, str],
    body: bytes,
) -> None:
    fast_url, routed_url = mounted
    with httpx.Client(trust_env=False, timeout=10) as client:
        fast = _send(client, fast_url, path, query, headers, body)
        routed = _send(client, routed_url, path, query, headers, body)
    assert _normalised(fast, fast_url) == _normalised(routed, routed_url), name


def test_faults_are_drawn_alike() -> None:
    config = {"random_seed": 3, "submit_5xx_rate": 0.3, "submit_429_rate": 0.3}
    fast, routed = FakeFal(FakeFalConfig(**config)), FakeFal(FakeFalConfig(**config))  # type: ignore[arg-type]
    with (
        LiveServer(fast.app) as a,
        LiveServer(routed.routed) as b,
        httpx.Client(trust_env=False, timeout=10) as client,
    ):
        answers = [
            (
                _normalised(_send(client, a.url, f"/{IMAGINEART}", {}, JSON, BODY), a.url),
                _normalised(_send(client, b.url, f"/{IMAGINEART}", {}, JSON, BODY), b.url),
            )
            for _ in range(30)
        ]
    assert {status for (status, _, _), _ in answers} == {200, 429, 502, 503}
    for fast_answer, routed_answer in answers:
        assert fast_answer == routed_answer


def test_a_failing_submit_answers_starlettes_500(
    servers: tuple[str, str, FakeFal, FakeFal], monkeypatch: pytest.MonkeyPatch
) -> None:
    fast_url, routed_url, fast, routed = servers

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("broken")

    for fake in (fast, routed):
        monkeypatch.setattr(fake, "serves", broken)
    with httpx.Client(trust_env=False, timeout=10) as client:
        answers = [
            _normalised(_send(client, url, f"/{IMAGINEART}", {}, JSON, BODY), url)
            for url in (fast_url, routed_url)
        ]
    assert answers[0] == answers[1]
    assert answers[0][0] == 500


def test_every_other_route_lives_under_a_reserved_root() -> None:
    # What lets `app` send a POST elsewhere straight to the submit handler: no route but the
    # catch-all can match it.
    fake = FakeFal()
    *others, catch_all = fake.routed.routes
    assert isinstance(catch_all, Route)
    assert catch_all.path == "/{path:path}"
    for route in others:
        assert isinstance(route, Route)
        assert route.path.split("/")[1] in RESERVED_ROOTS, route.path
