"""A small HTTP/1.1 client for the requests on every job's path: fal's queue calls
(app.fal.transport), webhook deliveries (app.webhooks.delivery) and the fake fal's webhooks.

Why not aiohttp: around each POST its request, response and timer objects cost about 100 us of
CPU on loopback, against 12 us for this client (20,000 POSTs of a webhook body over 64
connections, one uvloop process each, the same receiver; bench/README.md, issue 17, tenth
pass). A worker makes one such call per submission and one per delivery.

What it does: keep-alive connections kept per origin, at most `max_connections` in use at once
(waiters served first come, first served); TLS with the default trust store; answers parsed by
httptools (llhttp, uvicorn's parser), with a length, chunked or up to the close, cut at a limit
when asked. What it does not do: redirects, proxies, cookies, decompression, pipelining,
HTTP/2. Callers that want any of them say so themselves (app.fal.transport decodes).

Failures carry their phase, as the callers' policies depend on it: `NotSent` when no byte of
the request left (no connection, a refused address, no connection free in time), `AnswerLost`
when some may have (the connection dropped, the answer was malformed or late). A reused
keep-alive connection that its server closed just as the request went out lands in
`AnswerLost`: conservative, as the request may have been read.
"""

from __future__ import annotations

import asyncio
import functools
import re
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import quote

import httptools
import idna

# An idle connection older than this is closed rather than reused: servers drop idle ones on
# their own schedule (uvicorn after 5 s), and the older it is, the likelier its server is
# closing it as the request goes out. aiohttp's default.
KEEPALIVE_SECONDS = 15.0

# An answer's status line and headers past this many bytes end the call (a receiver cannot
# make a worker hold unbounded headers); aiohttp allowed 8 KiB a field, 100 fields.
MAX_HEAD_BYTES = 64 * 1024
# Each address of a name but the last gets this long to connect before the next is tried.
ADDRESS_CONNECT_SECONDS = 2.0

AddrInfo = tuple[int, int, int, str, tuple[Any, ...]]
# Sees each address before a socket is made for it, and raises an OSError to refuse it
# (app.webhooks.ssrf). It must not block.
Guard = Callable[[AddrInfo], None]


class HttpError(Exception):
    """A request that got no whole answer; `cause` is what went wrong underneath."""

    def __init__(self, message: str, *, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.cause = cause

    @property
    def timed_out(self) -> bool:
        return isinstance(self.cause, TimeoutError)


class InvalidRequest(HttpError, ValueError):
    """A URL or header that cannot go on the wire as given; nothing was sent."""


class NotSent(HttpError):
    """No byte of the request left this process."""


class AnswerLost(HttpError):
    """The request went out, or part of it; no whole answer came back."""


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Bounds in seconds, None for none: `total` on the whole call, `pool` on waiting for a
    connection in use to be free, `connect` on opening a new one (lookup, connect, TLS)."""

    total: float | None = None
    pool: float | None = None
    connect: float | None = None


class Headers(Mapping[str, str]):
    """An answer's headers, looked up by any case; a repeated name gives its first value
    (`get_all` gives each)."""

    __slots__ = ("_first", "_raw")

    def __init__(self, raw: Sequence[tuple[bytes, bytes]]) -> None:
        self._raw = raw
        first: dict[str, str] = {}
        for name, value in raw:
            first.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
        self._first = first

    def __getitem__(self, name: str) -> str:
        return self._first[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._first

    def __iter__(self) -> Iterator[str]:
        return iter(self._first)

    def __len__(self) -> int:
        return len(self._first)

    def get_all(self, name: str) -> list[str]:
        wanted = name.lower().encode("latin-1")
        return [value.decode("latin-1") for key, value in self._raw if key.lower() == wanted]

    def multi_items(self) -> list[tuple[str, str]]:
        return [(key.decode("latin-1"), value.decode("latin-1")) for key, value in self._raw]


class Response:
    """An answer read whole (or its body up to the call's limit: `truncated`)."""

    __slots__ = ("_headers", "body", "raw_headers", "status", "truncated")

    def __init__(
        self, status: int, raw_headers: list[tuple[bytes, bytes]], body: bytes, truncated: bool
    ) -> None:
        self.status = status
        self.raw_headers = raw_headers
        self.body = body
        self.truncated = truncated
        self._headers: Headers | None = None

    @property
    def headers(self) -> Headers:
        if self._headers is None:
            self._headers = Headers(self.raw_headers)
        return self._headers


@dataclass(frozen=True, slots=True)
class Origin:
    scheme: str
    host: str  # as dialled: an IPv6 literal without its brackets
    port: int
    # The Host header for it: the authority as given, the scheme's default port left out.
    authority: str

    @property
    def tls(self) -> bool:
        return self.scheme == "https"


_DEFAULT_PORTS = {"http": 80, "https": 443}


# Cached: a worker sends to the same few URLs over and over (measured at 2.5 % of the delivery
# worker's CPU in the fan-out benchmark, uncached). An URL it refuses raises every time.
@functools.lru_cache(maxsize=4096)
def split_url(url: str) -> tuple[Origin, str]:
    """A URL's origin and its request target (path and query, `/` for none; a fragment is
    not sent; a character outside RFC 3986's percent-encoded, as a browser sends it). Raises
    InvalidRequest for a URL this client cannot send: not http(s), no host, credentials in
    it, a port that is not one."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise InvalidRequest(f"not an absolute URL: {url!r}")
    cut = min((i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0), default=-1)
    authority, tail = (rest, "") if cut < 0 else (rest[:cut], rest[cut:])
    tail = tail.partition("#")[0]
    target = tail if tail.startswith("/") else "/" + tail
    if _UNSAFE.search(target):
        target = _UNSAFE.sub(lambda match: quote(match[0], safe=""), target)
    return _origin(scheme.lower(), authority), target


# What a request target may hold as it is: RFC 3986's unreserved and reserved characters, and
# '%' (escapes are kept as written). Anything else (spaces, controls, quotes, beyond ASCII) is
# sent as the percent-encoded UTF-8 of each character.
_UNSAFE = re.compile(r"[^A-Za-z0-9\-._~!$&'()*+,;=:@/?%\[\]]")


@functools.lru_cache(maxsize=1024)
def _origin(scheme: str, authority: str) -> Origin:
    if scheme not in _DEFAULT_PORTS:
        raise InvalidRequest(f"not an http or https URL: {scheme}://{authority}")
    if "@" in authority:
        raise InvalidRequest("credentials in a URL are not sent")
    if not authority or any(c in authority for c in " \r\n\t\x00/\\"):
        raise InvalidRequest(f"not a host: {authority!r}")
    default = _DEFAULT_PORTS[scheme]
    if authority.startswith("["):
        host, bracket, after = authority[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            raise InvalidRequest(f"not a host: {authority!r}")
        port_text = after[1:]
        shown = f"[{host}]"
    else:
        host, _, port_text = authority.partition(":")
        shown = host
    if not host:
        raise InvalidRequest(f"not a host: {authority!r}")
    if port_text and not (
        port_text.isascii() and port_text.isdigit() and 0 < int(port_text) < 65536
    ):
        raise InvalidRequest(f"not a port: {port_text!r}")
    port = int(port_text) if port_text else default
    if not host.isascii():
        # A name beyond ASCII is dialled and named by its IDNA 2008 form (UTS 46), as httpx
        # and browsers do: Python's own codec is IDNA 2003, which maps `faß.de` to `fass.de`.
        try:
            host = shown = idna.encode(host, uts46=True).decode("ascii")
        except idna.IDNAError as exc:
            raise InvalidRequest(f"not a host: {host!r}") from exc
    shown = shown.lower()
    return Origin(scheme, host.lower(), port, shown if port == default else f"{shown}:{port}")


# A header's name is a token (RFC 9110, 5.1); its value may not end the line or hold a NUL.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_LINE_END = re.compile(r"[\r\n\x00]")


def request_head(method: str, target: str, headers: Sequence[tuple[str, str]]) -> bytes:
    """The request line and headers, as given and in their order. Raises InvalidRequest for
    a name or value that would end a line (header injection), or a method that is not a
    token."""
    if not _TOKEN.fullmatch(method) or method == "HEAD":
        # HEAD's answer has no body whatever its headers say: not a case this client reads.
        raise InvalidRequest(f"method {method!r} is not sent")
    lines = [f"{method} {target} HTTP/1.1"]
    for name, value in headers:
        if not _TOKEN.fullmatch(name) or _LINE_END.search(value):
            raise InvalidRequest(f"header {name!r} cannot go on the wire")
        lines.append(f"{name}: {value}")
    lines.append("\r\n")
    try:
        return "\r\n".join(lines).encode("latin-1")
    except UnicodeEncodeError as exc:
        raise InvalidRequest(f"a header is not latin-1: {exc}") from exc


class _Connection(asyncio.Protocol):
    """One keep-alive connection: one request at a time, its answer parsed as it arrives."""

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        # Made by its loop's create_connection, and bound to it: looked up once, not per
        # request (on Python 3.11 each lookup is a getpid() system call).
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._answer: asyncio.Future[Response] | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._size = 0
        self._limit: int | None = None
        self._headers_done = False
        self._head_bytes = 0
        # The answer's end is told by a length, chunks or its status; else by the close.
        self._delimited = True

    # -- asyncio.Protocol --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's is not an asyncio.Transport subclass).
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._answer is None or self._answer.done():
            # Bytes nobody asked for: the connection's framing cannot be trusted any more.
            self.close()
            return
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._fail(AnswerLost(f"malformed answer: {exc!r}", cause=exc))
            return
        if not self._headers_done:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                error = ValueError(f"more than {MAX_HEAD_BYTES} bytes of status line and headers")
                self._fail(AnswerLost(str(error), cause=error))

    def eof_received(self) -> bool:
        # Closed for reuse at once: connection_lost comes a loop turn later, and a request
        # written meanwhile would be lost unsent.
        self.closed = True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        answer = self._answer
        if answer is None or answer.done():
            return
        if self._headers_done and not self._delimited and exc is None:
            self._respond(truncated=False)  # its body ran up to the close
        else:
            reason = exc or ConnectionResetError("the server closed the connection")
            answer.set_exception(AnswerLost(f"connection lost: {reason!r}", cause=reason))

    # -- httptools callbacks --

    def on_message_begin(self) -> None:
        if self._answer is None or self._answer.done():
            # An answer nobody asked for, in the same bytes as the last one: this connection's
            # framing cannot be trusted. Raising stops the parser; data_received drops it.
            raise ConnectionError("an answer that was not asked for")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        self._headers_done = True
        self._delimited = (
            status < 200
            or status in (204, 304)
            or any(
                name.lower() == b"content-length"
                or (name.lower() == b"transfer-encoding" and b"chunked" in value.lower())
                for name, value in self._headers
            )
        )

    def on_body(self, chunk: bytes) -> None:
        if self._answer is None or self._answer.done():
            return
        limit = self._limit
        if limit is not None and self._size + len(chunk) > limit:
            self._body.append(chunk[: limit - self._size])
            self._size = limit
            # The rest is never read: this connection's framing ends here with it.
            self._respond(truncated=True)
            self.close()
            return
        self._body.append(chunk)
        self._size += len(chunk)

    def on_message_complete(self) -> None:
        if self._answer is None or self._answer.done():
            return
        status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            # An interim answer (103 Early Hints): the final one follows on the same request.
            self._headers, self._body, self._size, self._headers_done = [], [], 0, False
            self._head_bytes = 0
            return
        keep = self._parser.should_keep_alive() and status != 101
        self._respond(truncated=False)
        if not keep:
            self.close()

    # -- the client's side --

    def send(self, data: bytes, limit: int | None) -> asyncio.Future[Response]:
        assert self.transport is not None
        self._answer = self.loop.create_future()
        self._headers, self._body, self._size = [], [], 0
        self._limit, self._headers_done, self._delimited = limit, False, True
        self._head_bytes = 0
        self.transport.write(data)
        return self._answer

    def time_out(self) -> None:
        """The call's time is up: no answer (or not all of it) came in time."""
        if self._answer is not None and not self._answer.done():
            reason = TimeoutError("no answer in time")
            self._answer.set_exception(AnswerLost("no answer in time", cause=reason))
        self.abort()

    def reusable(self, now: float) -> bool:
        return (
            not self.closed
            and self.transport is not None
            and not self.transport.is_closing()
            and now - self.idle_since < KEEPALIVE_SECONDS
        )

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def _respond(self, *, truncated: bool) -> None:
        assert self._answer is not None
        status = self._parser.get_status_code()
        headers, self._headers = self._headers, []  # the answer's own, whatever comes next
        self._answer.set_result(Response(status, headers, b"".join(self._body), truncated))

    def _fail(self, error: HttpError) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(error)
        self.abort()


class HttpClient:
    """Connections kept per origin, at most `max_connections` in use at once. `guard` sees
    every address before it is dialled (app.webhooks.ssrf). Made and used on one event loop."""

    def __init__(
        self,
        *,
        max_connections: int = 100,
        guard: Guard | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.max_connections = max_connections
        self._guard = guard
        self._ssl_context = ssl_context
        self._idle: dict[Origin, list[_Connection]] = {}
        self._in_use = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._closed = False

    async def request(
        self,
        method: str,
        url: str | tuple[Origin, str],
        headers: Sequence[tuple[str, str]],
        body: bytes | None = None,
        *,
        timeouts: Timeouts = Timeouts(),
        body_limit: int | None = None,
    ) -> Response:
        """Send one request; `headers` go out as given and in order (the Host header and the
        body's length included: nothing is added). The answer is read whole, or up to
        `body_limit` bytes of body."""
        origin, target = split_url(url) if isinstance(url, str) else url
        data = request_head(method, target, headers)
        if body:
            data += body
        if self._closed:
            raise NotSent("the client is closed", cause=ConnectionError("the client is closed"))
        # Most calls find a connection free at once: they need no timeout scope until then,
        # and take the event loop from it (asyncio.get_running_loop() is a getpid() call on
        # Python 3.11: 1.3 % of the delivery worker's CPU).
        connection = self._idle_connection(origin)
        loop = asyncio.get_running_loop() if connection is None else connection.loop
        deadline = None if timeouts.total is None else loop.time() + timeouts.total
        if connection is None:
            try:
                async with asyncio.timeout_at(deadline):
                    connection = await self._acquire(origin, timeouts)
            except TimeoutError as exc:
                raise NotSent("no connection in time", cause=exc) from exc
        try:
            answer = connection.send(data, body_limit)
            timer = None if deadline is None else loop.call_at(deadline, connection.time_out)
            try:
                return await answer
            finally:
                if timer is not None:
                    timer.cancel()
        except BaseException:
            connection.abort()
            raise
        finally:
            self._release(connection)

    async def aclose(self) -> None:
        self._closed = True
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                closed = ConnectionError("the client is closed")
                waiter.set_exception(NotSent("the client is closed", cause=closed))

    # -- the pool --

    def _idle_connection(self, origin: Origin) -> _Connection | None:
        """A kept connection to `origin`, in use from now on, if one is there and a slot is
        free with nobody waiting for it; else None."""
        idle = self._idle.get(origin)
        if not idle or self._in_use >= self.max_connections or self._waiters:
            return None
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if connection.reusable(now):
                self._in_use += 1
                return connection
            connection.close()
        del self._idle[origin]
        return None

    async def _acquire(self, origin: Origin, timeouts: Timeouts) -> _Connection:
        await self._take_slot(timeouts.pool)
        try:
            idle = self._idle.get(origin)
            now = time.monotonic()
            while idle:
                connection = idle.pop()
                if connection.reusable(now):
                    return connection
                connection.close()
            # A new connection is rare: the time to close those no origin took back.
            for key, connections in list(self._idle.items()):
                if connections and not connections[0].reusable(now):
                    self._prune(connections, now)
                if not connections:
                    del self._idle[key]
            return await self._connect(origin, timeouts)
        except BaseException:
            self._free_slot()
            raise

    def _release(self, connection: _Connection) -> None:
        if connection.closed or self._closed:
            connection.close()
        else:
            connection.idle_since = now = time.monotonic()
            idle = self._idle.setdefault(connection.origin, [])
            idle.append(connection)
            # Oldest first: once the first is stale or there are more than could be in use,
            # the stale and the oldest extra go.
            if len(idle) > self.max_connections or not idle[0].reusable(now):
                self._prune(idle, now)
        self._free_slot()

    def _prune(self, idle: list[_Connection], now: float) -> None:
        kept = [c for c in idle if c.reusable(now)]
        for connection in idle:
            if not connection.reusable(now):
                connection.close()
        for connection in kept[: -self.max_connections]:
            connection.close()
        idle[:] = kept[-self.max_connections :]

    async def _take_slot(self, pool_timeout: float | None) -> None:
        """A connection's worth of `max_connections`: at once if one is free and nobody waits,
        else handed over by `_free_slot` in the order asked."""
        if self._in_use < self.max_connections and not self._waiters:
            self._in_use += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(pool_timeout):
                await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._free_slot()  # handed over as the wait ended: pass it on
            else:
                # Left in the queue, done: _free_slot passes over it (no O(n) removal).
                waiter.cancel()
            if isinstance(exc, TimeoutError):
                raise NotSent("no connection free in time", cause=exc) from exc
            raise

    def _free_slot(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot is the waiter's now
                return
        self._in_use -= 1

    async def _connect(self, origin: Origin, timeouts: Timeouts) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeouts.connect):
                infos = await loop.getaddrinfo(
                    origin.host, origin.port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
                )
                sock = await self._dial(loop, infos)
                connection = _Connection(origin)
                try:
                    transport, _ = await loop.create_connection(
                        lambda: connection,
                        sock=sock,
                        ssl=self._tls() if origin.tls else None,
                        server_hostname=origin.host if origin.tls else None,
                    )
                except BaseException:
                    sock.close()
                    raise
                # uvloop calls connection_made soon after, not before, handing the transport.
                connection.transport = transport
                return connection
        except TimeoutError as exc:
            raise NotSent(f"could not connect to {origin.authority} in time", cause=exc) from exc
        except UnicodeError as exc:
            # A name the resolver cannot encode (an empty or overlong label).
            raise InvalidRequest(f"not a host: {origin.host!r}: {exc}", cause=exc) from exc
        except OSError as exc:
            raise NotSent(f"could not connect to {origin.authority}: {exc}", cause=exc) from exc
        except ssl.SSLError as exc:  # pragma: no cover (an OSError on every supported Python)
            raise NotSent(f"TLS with {origin.authority} failed: {exc}", cause=exc) from exc

    async def _dial(
        self, loop: asyncio.AbstractEventLoop, infos: Sequence[AddrInfo]
    ) -> socket.socket:
        """A connected socket to the first address that answers, each seen by the guard
        first; the last failure when none does."""
        error: OSError = OSError(f"no address for {infos!r}")
        for i, info in enumerate(infos):
            family, type_, proto, _, address = info
            try:
                if self._guard is not None:
                    self._guard(info)
                sock = socket.socket(family, type_, proto)
            except OSError as exc:
                error = exc
                continue
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if i + 1 < len(infos):
                    # Not all the time on one address that never answers: the next gets a turn.
                    async with asyncio.timeout(ADDRESS_CONNECT_SECONDS):
                        await loop.sock_connect(sock, address)
                else:
                    await loop.sock_connect(sock, address)
            except (OSError, TimeoutError) as exc:
                sock.close()
                error = exc
                continue
            except BaseException:
                sock.close()
                raise
            return sock
        raise error

    def _tls(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = ssl.create_default_context()
        return self._ssl_context
