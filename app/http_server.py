"""The HTTP server's bounds on slow and idle clients.

uvicorn closes a connection idle between requests (`timeout_keep_alive`) and answers 503 past
`limit_concurrency`, but it waits forever for a request's headers and body: a client that sends
a few bytes now and then (slowloris) holds a socket, and enough of them exhaust the process's
file descriptors. `BoundedHttpToolsProtocol` adds two read deadlines to uvicorn's httptools
protocol, at most one timer at a time per connection and none for a request that arrives whole:

- headers: from the connection's start, or from the first byte of a later request, until the
  blank line that ends the headers;
- body: from the end of the headers until the end of the body.

Past either the client gets `408` and the connection is closed. A deadline only ever bounds
the client's sending: a response being written (an event stream, a `Prefer: wait`) is never cut;
the connection is closed once it is done instead.

It also writes a response's head and its body in one system call (`_OneWrite`).
"""

from __future__ import annotations

import asyncio
import logging
import resource
from typing import Any, ClassVar, Literal

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from app.settings import Settings

log = logging.getLogger(__name__)

_TIMEOUT_BODY = b"Request Timeout"


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header and body read deadlines (class attributes, set
    by `bounded_protocol`, since uvicorn builds one protocol per connection from the class)."""

    header_timeout: ClassVar[float]
    body_timeout: ClassVar[float]

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        # What the client still owes of the request being read: the read deadline runs while
        # this is set, and only then.
        self._awaiting: Literal["headers", "body"] | None = None
        self._read_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_OneWrite(transport, self.loop))  # type: ignore[arg-type]
        # A connection that never sends a byte is a request whose headers are late.
        self._awaiting = "headers"
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._awaiting = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # A request that arrived whole in this read left nothing awaited, and set no timer.
        if self._awaiting is not None and self._read_deadline is None:
            self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._awaiting = "headers"

    def on_headers_complete(self) -> None:
        self._disarm()
        self._awaiting = "body"
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        self._awaiting = None
        super().on_message_complete()

    def handle_websocket_upgrade(self) -> None:
        # The connection now belongs to the WebSocket protocol.
        self._disarm()
        self._awaiting = None
        super().handle_websocket_upgrade()

    def _arm(self) -> None:
        if self.transport.is_closing():
            return
        timeout = self.header_timeout if self._awaiting == "headers" else self.body_timeout
        self._read_deadline = self.loop.call_later(timeout, self._read_timed_out)

    def _disarm(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _read_timed_out(self) -> None:
        self._read_deadline = None
        if self.transport.is_closing():
            return
        cycle = self.cycle  # for late headers, the request before (None on a new connection)
        if self._awaiting == "headers":
            responding = cycle is not None and not cycle.response_complete
        else:
            responding = cycle.response_started and not cycle.response_complete
        if responding:
            # Let the response finish (an event stream may run for minutes), read nothing more,
            # and close the connection after it, as uvicorn's own graceful shutdown does.
            cycle.keep_alive = False
            self.flow.pause_reading()
            return
        if self._awaiting == "headers" or not cycle.response_started:
            self._write_408()
        if self._awaiting == "body" and not cycle.response_complete:
            # The app is waiting for the body: it now reads a disconnect, and anything it still
            # sends goes nowhere.
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.close()

    def _write_408(self) -> None:
        head = [b"HTTP/1.1 408 Request Timeout\r\n"]
        defaults = self.server_state.default_headers  # the Date header
        head += [name + b": " + value + b"\r\n" for name, value in defaults]
        head += [
            b"content-type: text/plain; charset=utf-8\r\n",
            b"content-length: %d\r\n" % len(_TIMEOUT_BODY),
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + _TIMEOUT_BODY)


class _OneWrite:
    """The connection's transport, holding a response's head until its body is written.

    uvicorn writes a response's status line and headers when the app starts the response, and
    its body when the app sends it: two system calls for every answer, though the body follows
    at once. A write is a good part of a request's cost (about a fifth of `falrelay serve`'s
    CPU per job end to end went to `write`, bench/README.md), so the head waits here and goes
    out with the body. A head with no body written in the same turn of the loop (an event
    stream's, a `Prefer: wait` answer's) goes out on its own at the loop's next turn; a close
    sends it first. Everything else is the transport's."""

    __slots__ = ("_flush", "_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None
        self._flush: asyncio.Handle | None = None

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            assert self._flush is not None
            self._flush.cancel()
            self._flush = None
            self._transport.write(held + data)
        elif data.startswith(b"HTTP/1.1 ") and data.endswith(b"\r\n\r\n"):
            self._held = data
            self._flush = self._loop.call_soon(self._write_held)
        else:
            self._transport.write(data)

    def _write_held(self) -> None:
        self._flush = None
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._write_held()
        self._transport.close()

    def abort(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        self._held = None
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def bounded_protocol(header_timeout: float, body_timeout: float) -> type[HttpToolsProtocol]:
    """The protocol class to pass to `uvicorn.Config(http=...)`."""
    return type(
        "BoundedHttpToolsProtocol",
        (BoundedHttpToolsProtocol,),
        {"header_timeout": header_timeout, "body_timeout": body_timeout},
    )


def limit_concurrency(max_connections: int) -> int:
    """uvicorn's `limit_concurrency` for at most `max_connections` open connections. uvicorn
    answers 503 when the connections (counting the one asking) or the requests in flight reach
    its limit; a request in flight holds a connection, so the connections decide."""
    return max_connections + 1


def ensure_open_files(settings: Settings) -> None:
    """Raises the soft limit on open files (up to the hard one) when this process's sockets may
    not fit, as the Go runtime does at start: the common soft default, 1024, is below the
    default connection cap, and a process out of descriptors cannot accept even a health check.
    """
    # Besides client connections: the Postgres pool and LISTEN, calls to fal and webhook
    # deliveries in flight, and a margin for logs, DNS and the listening sockets.
    needed = (
        settings.http_max_connections
        + settings.db_pool_max_size
        + 1
        + settings.fal_connections
        + settings.delivery_concurrency
        + 64
    )
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft < needed:
        log.warning(
            "the open files limit (%d) is below the %d descriptors this process may need: "
            "lower FALRELAY_HTTP_MAX_CONNECTIONS or raise `ulimit -n`",
            soft,
            needed,
        )
