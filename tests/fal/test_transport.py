"""The transport under the fal client, against real sockets on loopback: failures sorted
by whether the request could have reached fal, and the fal client's calls sent without httpx's
objects byte for byte as httpx's client sends them."""

from __future__ import annotations

import asyncio
import gzip
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from urllib.parse import quote

import httpx
import orjson
import pytest

from app.fal.client import FalClient, SubmitAmbiguous, SubmitNotSent
from app.fal.transport import FalTransport, wire_target
from tests.servers import recording_server

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[tuple[str, list[bytes]]]:
    """A TCP server on loopback running `handler`; yields its URL and what each connection
    had sent by the time the handler returned."""
    seen: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        seen.append(head)
        try:
            await handler(reader, writer)
        except asyncio.CancelledError:
            pass  # the server closed while the handler was still holding the connection
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        server.close()


@asynccontextmanager
async def fal_client(
    url: str, *, read: float = 5.0, connections: int = 10
) -> AsyncIterator[FalClient]:
    async with httpx.AsyncClient(
        transport=FalTransport(max_connections=connections),
        timeout=httpx.Timeout(read, connect=0.5, pool=0.3),
    ) as http:
        yield FalClient(http, queue_url=url, key="k")


async def submit(fal: FalClient) -> object:
    return await fal.submit("some/model", {"prompt": "p"}, webhook_url=None)


async def test_a_refused_connection_was_not_sent() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    async with fal_client(f"http://127.0.0.1:{port}") as fal:
        with pytest.raises(SubmitNotSent):
            await submit(fal)


async def test_a_connection_dropped_after_the_request_is_ambiguous() -> None:
    async def read_then_hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)

    async with raw_server(read_then_hang_up) as (url, seen), fal_client(url) as fal:
        with pytest.raises(SubmitAmbiguous):
            await submit(fal)
    assert seen[0].startswith(b"POST /some/model HTTP/1.1")


async def test_an_answer_that_never_comes_is_ambiguous() -> None:
    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    async with raw_server(never_answer) as (url, seen), fal_client(url, read=0.3) as fal:
        with pytest.raises(SubmitAmbiguous, match="ReadTimeout"):
            await submit(fal)
    assert len(seen) == 1


async def test_waiting_for_a_pooled_connection_is_not_sending() -> None:
    arrived, release = asyncio.Event(), asyncio.Event()

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        arrived.set()
        await release.wait()

    # One connection, busy with a first request: the second times out in the pool, unsent.
    async with raw_server(hold) as (url, seen), fal_client(url, connections=1) as fal:
        first = asyncio.create_task(submit(fal))
        await arrived.wait()
        with pytest.raises(SubmitNotSent, match="ConnectTimeout"):
            await submit(fal)
        assert len(seen) == 1
        release.set()
        with pytest.raises(SubmitAmbiguous):
            await first


async def test_answers_arrive_whole_headers_and_compressed_bodies_included() -> None:
    answer = {
        "request_id": "r1",
        "status_url": "http://fal/s",
        "response_url": "http://fal/r",
        "cancel_url": "http://fal/c",
    }
    body = gzip.compress(orjson.dumps(answer))

    async def gzipped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
            b"Content-Length: %d\r\nx-fal-request-id: r1\r\n\r\n%s" % (len(body), body)
        )
        await writer.drain()

    async with raw_server(gzipped) as (url, seen), fal_client(url) as fal:
        submitted = await fal.submit("some/model", {"prompt": "p"}, webhook_url="http://cb/x")
    assert submitted.request_id == "r1"
    assert submitted.cancel_url == "http://fal/c"
    head = seen[0].decode().lower()
    assert "authorization: key k" in head
    assert "content-type: application/json" in head
    assert head.startswith("post /some/model?fal_webhook=http%3a%2f%2fcb%2fx http/1.1")


# -- the direct path: `exchange` sends what httpx's client over this transport sends -----------

MODEL = "imagineart/imagineart-2.0-preview/text-to-image"
ARGUMENTS = {"prompt": "ünïcode ✓", "n": 1.5e16, "seed": 2**70, "nested": {"a": [1, None]}}
WEBHOOK = "https://relay.example/callbacks/fal/job_1/tok?x=a b&y=é"


def as_fal(*, cookie: bool = False) -> Callable[[bytes, int], bytes]:
    """Answers as fal's queue would; with `cookie`, the first answer sets one."""

    def answer(request: bytes, n: int) -> bytes:
        if request.startswith(b"PUT "):
            body = orjson.dumps({"status": "CANCELLATION_REQUESTED"})
        else:
            body = orjson.dumps(
                {
                    "request_id": "r1",
                    "status_url": "http://fal/s",
                    "response_url": "http://fal/r",
                    "cancel_url": "http://fal/c",
                    "status": "IN_QUEUE",
                }
            )
        setting = b"set-cookie: lb=7; Path=/\r\n" if cookie and n == 1 else b""
        return (
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n%s"
            b"content-length: %d\r\n\r\n%s" % (setting, len(body), body)
        )

    return answer


def falrelay_http() -> httpx.AsyncClient:
    """As `app.runtime.fal_http_client` makes it."""
    return httpx.AsyncClient(
        transport=FalTransport(),
        timeout=httpx.Timeout(30, connect=5),
        follow_redirects=False,
        headers={"User-Agent": "falrelay"},
    )


async def not_through_httpx(*args: object) -> None:
    raise AssertionError("sent through httpx's request objects")


SUBMIT_HEADERS = {
    "Authorization": "Key secret-key",
    "X-Fal-Object-Lifecycle-Preference": '{"expiration_duration_seconds":60}',
}


async def test_the_fal_client_sends_what_httpx_would_without_its_objects(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with recording_server(as_fal()) as (port, seen):
        url = f"http://127.0.0.1:{port}"
        # What httpx's own client sends over the same transport.
        async with falrelay_http() as reference:
            priority = {"X-Fal-Queue-Priority": "low", "X-Fal-Request-Timeout": "2.5"}
            await reference.post(
                f"{url}/{MODEL}?fal_webhook={quote(WEBHOOK, safe='')}",
                json=ARGUMENTS,
                headers={**SUBMIT_HEADERS, **priority},
            )
            await reference.post(f"{url}/{MODEL}", json=ARGUMENTS, headers=SUBMIT_HEADERS)
            for call in (reference.get, reference.get, reference.put):
                await call(
                    f"{url}/{MODEL}/requests/r1", headers={"Authorization": "Key secret-key"}
                )
        expected = seen[:]
        seen.clear()

        monkeypatch.setattr(FalTransport, "handle_async_request", not_through_httpx)
        async with falrelay_http() as http:
            fal = FalClient(http, queue_url=f"{url}/", key="secret-key", media_ttl_seconds=60)
            submitted = await fal.submit(
                MODEL, ARGUMENTS, webhook_url=WEBHOOK, low_priority=True, start_timeout=2.5
            )
            await fal.submit(MODEL, ARGUMENTS, webhook_url=None)
            status = await fal.status(f"{url}/{MODEL}/requests/r1")
            result = await fal.result(f"{url}/{MODEL}/requests/r1")
            cancelled = await fal.cancel(f"{url}/{MODEL}/requests/r1")

    assert seen == expected
    assert [request.split(b" ", 1)[0] for request in seen] == [
        b"POST",
        b"POST",
        b"GET",
        b"GET",
        b"PUT",
    ]
    assert submitted.request_id == "r1"
    assert status.status == "IN_QUEUE"
    assert result.body["cancel_url"] == "http://fal/c"
    assert cancelled == "CANCELLATION_REQUESTED"


async def test_a_cookie_fal_sets_is_sent_back_as_httpx_sends_it() -> None:
    async with recording_server(as_fal(cookie=True)) as (port, seen):
        url = f"http://127.0.0.1:{port}"
        async with falrelay_http() as reference:
            for _ in range(2):
                await reference.post(f"{url}/{MODEL}", json=ARGUMENTS, headers=SUBMIT_HEADERS)
        expected = seen[:]
        seen.clear()

        async with falrelay_http() as http:
            fal = FalClient(http, queue_url=url, key="secret-key", media_ttl_seconds=60)
            await fal.submit(MODEL, ARGUMENTS, webhook_url=None)  # the short way: sets it
            await fal.submit(MODEL, ARGUMENTS, webhook_url=None)  # through httpx, with it

    assert seen == expected
    assert b"\r\ncookie: lb=7\r\n" in seen[1]


async def test_a_client_with_event_hooks_goes_through_httpx() -> None:
    hooked: list[str] = []

    async def on_request(request: httpx.Request) -> None:
        hooked.append(request.method)

    async with recording_server(as_fal()) as (port, _), falrelay_http() as http:
        url = f"http://127.0.0.1:{port}"
        fal = FalClient(http, queue_url=url, key="k")
        await fal.submit(MODEL, {"prompt": "p"}, webhook_url=None)
        http.cookies.clear()  # the server's first answer set one: hooks alone decide now
        http.event_hooks = {"request": [on_request], "response": []}  # set after the first call
        await fal.submit(MODEL, {"prompt": "p"}, webhook_url=None)
    assert hooked == ["POST"]


async def test_the_default_port_is_left_out_of_the_host_header_as_httpx_does() -> None:
    # Port 80 cannot be bound here; the URL's parse is what makes the header, so compare it.
    for url in ["http://example.test:80/x", "https://example.test:443/x", "http://h.test:8080/"]:
        request = httpx.Request("POST", url)
        target, host = wire_target(url)
        assert host == request.headers["host"]
        assert str(target) == str(request.url)


@pytest.mark.parametrize(
    "origin",
    [
        "http://127.0.0.1:8000",
        "HTTP://Example.TEST",
        "http://example.test:80",
        "https://example.test:443",
        "https://user:pw@example.test:8443",
        "http://[::1]:9000",
        "http://café.test",
        "http://host#frag",
        "http://host?x=1",
        "http://host:",
        "http://a@b@c",
        "http://",
    ],
)
@pytest.mark.parametrize(
    "tail",
    [
        "hook",
        "callbacks/fal/0b4c1a52-8a7e-4c1e-9d0f-2f8f0e8c6b11/tok_en-42",
        "a%2Fb/c%20d",
        "café/ünïcode",
        "q?x=1&y=%20z&z=a+b",
        "q?fal=%E2%9C%93&empty=&flag",
        "q?raw=a b&t=✓",
        "path/../dot/./s",
        "trailing/",
        "",
        f"{MODEL}?fal_webhook={quote(WEBHOOK, safe='')}",
        "a/%2e%2E/b?x=%7e%7E",
        "a%2",
        "a%zz/b",
        "q?x=%",
        "callbacks/fal/job_01a2/tok?model=fal-ai/flux/dev",
        "a/./b",
        "a/../b",
        ".hidden",
        "x?y=1?z=2&w=/v",
        "x#frag",
        "x?y=%zz",
        "under_score~tilde!$&'()*+,;=:@",
        "[brackets]",
    ],
)
def test_a_target_is_what_httpx_makes_of_the_url(origin: str, tail: str) -> None:
    """The quick way for plain URLs gives what httpx's parse gives, and its refusals stay."""
    url = f"{origin}/{tail}"
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        with pytest.raises(httpx.InvalidURL):
            wire_target(url)
        return
    target, host = wire_target(url)
    assert target == str(parsed)
    assert host == parsed.netloc.decode("ascii")
