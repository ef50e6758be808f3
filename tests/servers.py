"""Real HTTP servers on loopback for end-to-end tests: uvicorn in a thread of its own, and a
raw one that records the bytes each request arrived as."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Literal

import uvicorn
from starlette.types import ASGIApp


def free_port() -> int:
    """A loopback port nobody listens on right now (for a server that must know its URL
    before it starts)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LiveServer:
    """Serves `app` on 127.0.0.1 (an ephemeral port unless one is given) until the `with`
    block ends. The app runs on the server thread's own event loop, lifespan included."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        port: int = 0,
        lifespan: Literal["auto", "on", "off"] = "on",
        http: type[asyncio.Protocol] | Literal["auto"] = "auto",
    ) -> None:
        self._config = uvicorn.Config(
            app, host="127.0.0.1", port=port, lifespan=lifespan, log_level="warning", http=http
        )
        # Off the main thread, uvicorn leaves the process's signals alone.
        self._server = uvicorn.Server(self._config)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.port = port

    def _run(self) -> None:
        asyncio.run(self._server.serve())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LiveServer:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the live server did not start")
            time.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """One request's bytes as they arrived: its head, and a body of its Content-Length."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return head + await reader.readexactly(length)


@asynccontextmanager
async def recording_server(
    answer: Callable[[bytes, int], bytes],
) -> AsyncIterator[tuple[int, list[bytes]]]:
    """A keep-alive HTTP/1.1 server on loopback, on the test's own event loop; yields its port
    and every request's bytes as they arrived (head and body). `answer(request, n)` makes the
    bytes of the answer to the n-th request (1, 2, ...)."""
    seen: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                seen.append(await read_request(reader))
                writer.write(answer(seen[-1], len(seen)))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], seen
    finally:
        server.close()
