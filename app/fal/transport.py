"""httpx's interface over aiohttp's connection pool, for the calls to fal.

Why: in the queue benchmark httpcore's pool took about 40 % of a submission worker's CPU; the
same calls through aiohttp's pool nearly doubled the jobs submitted per second. The fal client
keeps speaking httpx, so its submit policy and its tests do not change.

The submit policy depends on one fact about a failed call: could the request have reached
fal? So errors are mapped by the phase they happened in, never by their name alone:

- before a byte was sent (no connection, refused, connect or pool timeout): `httpx.ConnectError`
  or `httpx.ConnectTimeout`, which the policy retries;
- after (a dropped connection, a read timeout, a malformed answer): `httpx.ReadTimeout` or
  `httpx.ReadError`, which it treats as ambiguous. A stale keep-alive connection closed by the
  server lands here too: conservative, since we cannot know the request was not read.
"""

from __future__ import annotations

import aiohttp
import httpx
import yarl

# Phases, not names: aiohttp's ConnectionTimeoutError is a subclass of ServerTimeoutError, so
# the connect-phase errors are tested first.
_BEFORE_SENDING: tuple[type[BaseException], ...] = (
    aiohttp.ClientConnectorError,
    aiohttp.ConnectionTimeoutError,
)


class AiohttpTransport(httpx.AsyncBaseTransport):
    def __init__(self, *, max_connections: int = 100) -> None:
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        # Made on first use, inside the event loop that will use it (aiohttp binds to it).
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._max_connections),
            auto_decompress=False,  # httpx decodes, from the headers it is given
            skip_auto_headers=("User-Agent", "Content-Type", "Accept-Encoding"),
        )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._session or self._open()
        timeout = request.extensions.get("timeout", {})
        connect, read = timeout.get("connect"), timeout.get("read")
        body = await request.aread()
        try:
            async with session.request(
                request.method,
                # As httpx encoded it: yarl would otherwise decode and re-encode the query,
                # and the fal_webhook URL must reach fal byte for byte.
                yarl.URL(str(request.url), encoded=True),
                headers=request.headers.multi_items(),
                data=body or None,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(
                    # A bound on the whole call, as the workers' leases assume.
                    total=None if connect is None or read is None else connect + read,
                    connect=timeout.get("pool"),
                    sock_connect=connect,
                    sock_read=read,
                ),
            ) as answer:
                content = await answer.read()
        except _BEFORE_SENDING as exc:
            if isinstance(exc, aiohttp.ConnectionTimeoutError):
                raise httpx.ConnectTimeout(str(exc), request=request) from exc
            raise httpx.ConnectError(str(exc), request=request) from exc
        except TimeoutError as exc:
            raise httpx.ReadTimeout(str(exc) or "timed out", request=request) from exc
        except aiohttp.ClientError as exc:
            raise httpx.ReadError(f"{type(exc).__name__}: {exc}", request=request) from exc
        return httpx.Response(
            answer.status,
            headers=list(answer.raw_headers),
            stream=httpx.ByteStream(content),
            request=request,
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
