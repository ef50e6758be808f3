"""The aiohttp transport under the fal client: failures sorted by whether the request could have
reached fal, against real sockets on loopback."""

from __future__ import annotations

import asyncio
import gzip
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
import orjson
import pytest

from app.fal.client import FalClient, SubmitAmbiguous, SubmitNotSent
from app.fal.transport import AiohttpTransport

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
        transport=AiohttpTransport(max_connections=connections),
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
