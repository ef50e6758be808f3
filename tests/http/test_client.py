"""falrelay's HTTP/1.1 client against raw servers on loopback: the bytes it sends, how it keeps
and drops connections, how it reads answers, and the phase of each failure."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
import uvloop

from app.http_client import (
    MAX_HEAD_BYTES,
    AnswerLost,
    HttpClient,
    InvalidRequest,
    NotSent,
    Timeouts,
    _Connection,
    split_url,
)
from app.webhooks import ssrf
from tests.servers import read_request

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "Server"], Awaitable[None]]


@dataclass
class Server:
    url: str = ""
    connections: int = 0
    open_now: int = 0
    most_open: int = 0
    requests: list[bytes] = field(default_factory=list)

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        request = await read_request(reader)
        self.requests.append(request)
        return request

    async def arrived(self, n: int) -> None:
        """Until `n` requests have come in."""
        for _ in range(1000):
            if len(self.requests) >= n:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"{n} requests did not arrive")


@asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[Server]:
    state = Server()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        state.open_now += 1
        state.most_open = max(state.most_open, state.open_now)
        try:
            await handler(reader, writer, state)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            state.open_now -= 1
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    state.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        yield state
    finally:
        server.close()


def answer(body: bytes = b"ok", *, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n%s" % (len(body), extra, body)


def holding(release: asyncio.Event) -> Handler:
    """Answers each request once `release` is set."""

    async def hold(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server
    ) -> None:
        while True:
            await server.read_request(reader)
            await release.wait()
            writer.write(answer())
            await writer.drain()

    return hold


async def keep_answering(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server
) -> None:
    while True:
        await server.read_request(reader)
        writer.write(answer())
        await writer.drain()


def post(server: Server, body: bytes = b"{}") -> tuple[str, list[tuple[str, str]], bytes]:
    host = server.url.removeprefix("http://")
    return (
        f"{server.url}/hook?x=1",
        [("host", host), ("content-length", str(len(body))), ("X-Case", "Kept")],
        body,
    )


async def test_requests_go_out_as_given_and_share_one_kept_connection() -> None:
    client = HttpClient(max_connections=4)
    async with serving(keep_answering) as server:
        for _ in range(3):
            url, headers, body = post(server)
            response = await client.request("POST", url, headers, body)
            assert (response.status, response.body, response.truncated) == (200, b"ok", False)
            assert response.headers["Content-Length"] == "2"
    await client.aclose()
    host = server.url.removeprefix("http://").encode()
    expected = b"POST /hook?x=1 HTTP/1.1\r\nhost: %s\r\ncontent-length: 2\r\nX-Case: Kept\r\n\r\n{}"
    assert server.requests == [expected % host] * 3
    assert server.connections == 1


async def test_a_connection_the_server_closes_is_not_reused() -> None:
    async def close_after_each(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server
    ) -> None:
        await server.read_request(reader)
        writer.write(answer(extra=b"connection: close\r\n"))
        await writer.drain()

    client = HttpClient()
    async with serving(close_after_each) as server:
        for _ in range(3):
            assert (await client.request("POST", *post(server))).status == 200
    await client.aclose()
    assert server.connections == 3


async def test_an_idle_connection_the_server_dropped_is_replaced_unseen() -> None:
    async def one_then_hang_up(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server
    ) -> None:
        await server.read_request(reader)
        writer.write(answer())  # keep-alive promised, then dropped while idle
        await writer.drain()

    client = HttpClient()
    async with serving(one_then_hang_up) as server:
        assert (await client.request("POST", *post(server))).status == 200
        for _ in range(200):  # until the client has seen the close
            if server.open_now == 0:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        assert (await client.request("POST", *post(server))).status == 200
    await client.aclose()
    assert server.connections == 2


async def test_chunked_and_close_delimited_answers_are_read_whole() -> None:
    async def chunked_then_close_delimited(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server
    ) -> None:
        await server.read_request(reader)
        writer.write(
            b"HTTP/1.1 201 Created\r\ntransfer-encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        )
        await server.read_request(reader)
        writer.write(b"HTTP/1.0 200 OK\r\n\r\nuntil the close")
        await writer.drain()

    client = HttpClient()
    async with serving(chunked_then_close_delimited) as server:
        first = await client.request("POST", *post(server))
        second = await client.request("POST", *post(server))
    await client.aclose()
    assert (first.status, first.body) == (201, b"hello world")
    assert (second.status, second.body) == (200, b"until the close")
    assert server.connections == 1


async def test_an_interim_answer_is_skipped_for_the_final_one() -> None:
    async def early_hints(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server
    ) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n" + answer(b"final"))
        await keep_answering(reader, writer, server)

    client = HttpClient()
    async with serving(early_hints) as server:
        response = await client.request("POST", *post(server))
        assert (response.status, response.body) == (200, b"final")
        assert "link" not in response.headers
        assert (await client.request("POST", *post(server))).body == b"ok"
    await client.aclose()


async def test_a_body_past_the_limit_is_cut_and_its_connection_dropped() -> None:
    big = b"x" * 1_000_000

    async def large(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server
    ) -> None:
        while True:
            await server.read_request(reader)
            writer.write(answer(big))
            await writer.drain()

    client = HttpClient()
    async with serving(large) as server:
        cut = await client.request("POST", *post(server), body_limit=100)
        whole = await client.request("POST", *post(server))
    await client.aclose()
    assert (cut.body, cut.truncated) == (b"x" * 100, True)
    assert (len(whole.body), whole.truncated) == (1_000_000, False)
    assert server.connections == 2


async def test_no_more_connections_than_the_limit_are_open_at_once() -> None:
    release = asyncio.Event()

    client = HttpClient(max_connections=2)
    async with serving(holding(release)) as server:
        calls = [asyncio.create_task(client.request("POST", *post(server))) for _ in range(6)]
        await server.arrived(2)
        await asyncio.sleep(0.05)
        assert len(server.requests) == 2  # the other four wait for a connection
        release.set()
        responses = await asyncio.gather(*calls)
    await client.aclose()
    assert [r.status for r in responses] == [200] * 6
    assert (server.most_open, server.connections) == (2, 2)


async def test_a_refused_connection_is_not_sent() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    client = HttpClient()
    with pytest.raises(NotSent) as refused:
        await client.request("GET", f"http://127.0.0.1:{port}/", [("host", "x")])
    assert isinstance(refused.value.cause, ConnectionRefusedError)
    assert not refused.value.timed_out


async def test_the_guard_refuses_an_address_before_connecting() -> None:
    client = HttpClient(guard=ssrf.refuse_private)
    async with serving(keep_answering) as server:
        with pytest.raises(NotSent) as refused:
            await client.request("POST", *post(server))
    assert isinstance(refused.value.cause, ssrf.RefusedAddress)
    assert server.connections == 0


async def test_waiting_for_a_free_connection_times_out_unsent() -> None:
    release = asyncio.Event()

    client = HttpClient(max_connections=1)
    async with serving(holding(release)) as server:
        first = asyncio.create_task(client.request("POST", *post(server)))
        await server.arrived(1)
        with pytest.raises(NotSent) as waited:
            await client.request("POST", *post(server), timeouts=Timeouts(pool=0.2))
        assert waited.value.timed_out
        release.set()
        assert (await first).status == 200
        # The slot the timed-out call waited for was not lost.
        assert (await client.request("POST", *post(server), timeouts=Timeouts(total=5))).status
    await client.aclose()
    assert len(server.requests) == 2


async def test_after_sending_a_drop_or_silence_is_an_answer_lost() -> None:
    async def hang_up(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server
    ) -> None:
        await server.read_request(reader)

    async def never_answer(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server
    ) -> None:
        await server.read_request(reader)
        await asyncio.sleep(30)

    async def garbage(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server
    ) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 abc\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(30)

    client = HttpClient()
    async with serving(hang_up) as server:
        with pytest.raises(AnswerLost) as dropped:
            await client.request("POST", *post(server))
        assert not dropped.value.timed_out
    async with serving(never_answer) as server:
        with pytest.raises(AnswerLost) as silent:
            await client.request("POST", *post(server), timeouts=Timeouts(total=0.3))
        assert silent.value.timed_out
    async with serving(garbage) as server:
        with pytest.raises(AnswerLost, match="malformed"):
            await client.request("POST", *post(server), timeouts=Timeouts(total=10))
    await client.aclose()


@pytest.mark.parametrize(
    ("name", "value"),
    [("x-evil", "a\r\nx-injected: 1"), ("x-evil\r\nx-injected", "1"), ("bad name", "v")],
)
async def test_a_header_that_would_break_a_line_is_refused_unsent(name: str, value: str) -> None:
    client = HttpClient()
    async with serving(keep_answering) as server:
        url, headers, body = post(server)
        with pytest.raises(InvalidRequest):
            await client.request("POST", url, [*headers, (name, value)], body)
    await client.aclose()
    assert server.connections == 0


@pytest.mark.parametrize(
    ("url", "dialled", "authority", "target"),
    [
        ("http://Example.TEST/a?b=1#frag", ("example.test", 80), "example.test", "/a?b=1"),
        ("https://example.test:443", ("example.test", 443), "example.test", "/"),
        ("https://example.test:8443?q", ("example.test", 8443), "example.test:8443", "/?q"),
        ("http://h.test/a b/%41?c=<d>\x7f", ("h.test", 80), "h.test", "/a%20b/%41?c=%3Cd%3E%7F"),
        ("http://faß.de/", ("xn--fa-hia.de", 80), "xn--fa-hia.de", "/"),
        ("http://[::1]:9000/x", ("::1", 9000), "[::1]:9000", "/x"),
        (
            "http://café.test/ü?q=é",
            ("xn--caf-dma.test", 80),
            "xn--caf-dma.test",
            "/%C3%BC?q=%C3%A9",
        ),
    ],
)
def test_a_url_is_split_into_what_is_dialled_and_sent(
    url: str, dialled: tuple[str, int], authority: str, target: str
) -> None:
    origin, sent = split_url(url)
    assert (origin.host, origin.port) == dialled
    assert (origin.authority, sent) == (authority, target)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.test/",
        "example.test/x",
        "http://user:pw@example.test/",
        "http:///x",
        "http://example.test:99999/",
        "http://example.test:²/",
        "http://exa mple.test/",
    ],
)
def test_a_url_that_cannot_be_sent_is_refused(url: str) -> None:
    with pytest.raises(InvalidRequest):
        split_url(url)


def test_the_same_on_uvloop_which_falrelay_runs_on() -> None:
    # uvloop hands a new connection its transport after create_connection returns, not before.
    async def three_posts() -> tuple[list[int], int]:
        client = HttpClient()
        async with serving(keep_answering) as server:
            bounded = Timeouts(total=10)
            statuses = [
                (await client.request("POST", *post(server), timeouts=bounded)).status
                for _ in range(3)
            ]
        await client.aclose()
        return statuses, server.connections

    assert uvloop.run(three_posts()) == ([200, 200, 200], 1)


async def test_an_answer_nobody_asked_for_ends_its_connection() -> None:
    async def answer_twice(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server
    ) -> None:
        await server.read_request(reader)
        # The answer, and in the same bytes one more that no request asked for.
        stale = b"HTTP/1.1 299 Stale\r\nx-stale: 1\r\ncontent-length: 5\r\n\r\nstale"
        writer.write(answer() + stale)
        await keep_answering(reader, writer, server)

    client = HttpClient()
    async with serving(answer_twice) as server:
        first = await client.request("POST", *post(server))
        await asyncio.sleep(0.05)
        second = await client.request("POST", *post(server))
    await client.aclose()
    assert first.raw_headers == [(b"content-length", b"2")]
    assert (second.status, second.body) == (200, b"ok")
    assert server.connections == 2


async def test_headers_past_the_limit_end_the_call() -> None:
    async def endless_headers(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server
    ) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n")
        for _ in range(MAX_HEAD_BYTES // 1000 + 10):
            writer.write(b"x-pad: " + b"p" * 1000 + b"\r\n")
            await writer.drain()
        await asyncio.sleep(30)

    client = HttpClient()
    async with serving(endless_headers) as server:
        with pytest.raises(AnswerLost, match="headers"):
            await client.request("POST", *post(server), timeouts=Timeouts(total=10))
    await client.aclose()


async def test_a_body_up_to_the_close_needs_the_close_not_a_reset() -> None:
    async def unframed(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server
    ) -> None:
        await server.read_request(reader)
        # Not chunked, no length: the body runs to the close.
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: identity\r\n\r\nall of it")
        await writer.drain()

    async def reset(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server
    ) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.0 200 OK\r\n\r\npart of")
        await writer.drain()
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        writer.transport.abort()

    client = HttpClient()
    async with serving(unframed) as server:
        whole = await client.request("POST", *post(server), timeouts=Timeouts(total=10))
    async with serving(reset) as server:
        with pytest.raises(AnswerLost):
            await client.request("POST", *post(server), timeouts=Timeouts(total=10))
    await client.aclose()
    assert whole.body == b"all of it"


async def test_a_connection_its_server_is_closing_is_not_taken(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def answer_then_close(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server
    ) -> None:
        await server.read_request(reader)
        writer.write(answer())  # keep-alive promised, then closed
        await writer.drain()

    seen_eof: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    original = _Connection.eof_received

    def eof_received(self: _Connection) -> bool | None:
        kept = original(self)
        if not seen_eof.done():
            seen_eof.set_result(None)
        return kept

    monkeypatch.setattr(_Connection, "eof_received", eof_received)
    client = HttpClient()
    async with serving(answer_then_close) as server:
        assert (await client.request("POST", *post(server))).status == 200
        await seen_eof
        # Woken in the loop turn of the server's close, before its connection is lost.
        assert (await client.request("POST", *post(server))).status == 200
    await client.aclose()
    assert server.connections == 2


async def test_a_closed_client_fails_its_waiters_unsent() -> None:
    release = asyncio.Event()

    client = HttpClient(max_connections=1)
    async with serving(holding(release)) as server:
        first = asyncio.create_task(client.request("POST", *post(server)))
        waiting = asyncio.create_task(client.request("POST", *post(server)))
        await server.arrived(1)
        await client.aclose()
        with pytest.raises(NotSent):
            await waiting
        first.cancel()
        release.set()
    assert len(server.requests) == 1
