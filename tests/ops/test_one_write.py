"""A response's head and body leave in one write (`app.http_server._OneWrite`), and a head whose
body is not written at once still goes out at the loop's next turn, before any close."""

from __future__ import annotations

import asyncio

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from uvicorn.server import ServerState

from app.http_server import _OneWrite, bounded_protocol
from tests.servers import LiveServer

HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


class Recording(asyncio.Transport):
    """A transport that keeps what it was asked to write, write by write."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


async def test_a_head_goes_out_with_the_body_written_after_it() -> None:
    real = Recording()
    transport = _OneWrite(real, asyncio.get_running_loop())
    transport.write(HEAD)
    transport.write(b"ok")
    transport.write(b"more")  # not a head: straight through
    assert real.writes == [HEAD + b"ok", b"more"]
    await asyncio.sleep(0)
    assert real.writes == [HEAD + b"ok", b"more"]  # nothing left to flush


async def test_a_head_alone_goes_out_at_the_next_turn_and_before_a_close() -> None:
    real = Recording()
    transport = _OneWrite(real, asyncio.get_running_loop())
    transport.write(HEAD)
    assert real.writes == []
    await asyncio.sleep(0)
    assert real.writes == [HEAD]
    transport.write(HEAD)
    transport.close()
    assert real.writes == [HEAD, HEAD]
    assert real.closed


async def test_the_servers_protocol_writes_through_it() -> None:
    config = uvicorn.Config(Starlette(), http=bounded_protocol(5.0, 5.0))
    config.load()
    protocol = config.http_protocol_class(config=config, server_state=ServerState(), app_state={})
    real = Recording()
    protocol.connection_made(real)
    protocol.transport.write(HEAD)
    protocol.transport.write(b"ok")
    assert real.writes == [HEAD + b"ok"]
    protocol.connection_lost(None)


async def _stream() -> object:
    yield b"first "
    await asyncio.sleep(0.05)
    yield b"second"


async def _app_routes(request: Request) -> Response:
    if request.path_params["kind"] == "stream":
        return StreamingResponse(_stream(), media_type="text/plain")
    if request.path_params["kind"] == "empty":
        return Response(status_code=204)
    return PlainTextResponse("plain", headers={"x-answer": "1"})


async def test_answers_of_every_shape_arrive_whole_over_a_real_server() -> None:
    app = Starlette(routes=[Route("/{kind}", _app_routes, methods=["GET", "HEAD"])])
    with LiveServer(app, lifespan="off", http=bounded_protocol(5.0, 5.0)) as server:
        async with httpx.AsyncClient(base_url=server.url) as http:
            for _ in range(3):  # on one kept-alive connection, in turn
                plain = await http.get("/plain")
                assert (plain.status_code, plain.text) == (200, "plain")
                assert plain.headers["x-answer"] == "1"
                empty = await http.get("/empty")
                assert (empty.status_code, empty.content) == (204, b"")
                head = await http.head("/plain")
                assert (head.status_code, head.content) == (200, b"")
                streamed = await http.get("/stream")
                assert streamed.text == "first second"
