"""httpx's interface over aiohttp's connection pool for the calls to fal, and a shorter way
round it for callers that know the transport (`AiohttpTransport.exchange`).

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

import functools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx
import yarl

# Phases, not names: aiohttp's ConnectionTimeoutError is a subclass of ServerTimeoutError, so
# the connect-phase errors are tested first.
_BEFORE_SENDING: tuple[type[BaseException], ...] = (
    aiohttp.ClientConnectorError,
    aiohttp.ConnectionTimeoutError,
)


@dataclass(frozen=True, slots=True)
class Answer:
    """An answer read whole, with what the fal client reads of an `httpx.Response`."""

    status_code: int
    headers: Mapping[str, str]  # case-insensitive (aiohttp's CIMultiDictProxy)
    content: bytes

    def json(self) -> Any:
        # The standard library's, as httpx's `Response.json`: orjson would turn an integer
        # beyond 64 bits into a float.
        return json.loads(self.content)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")


def client_timeout(timeout: Mapping[str, float | None]) -> aiohttp.ClientTimeout:
    """httpx's timeouts (`Timeout.as_dict()`) as aiohttp's."""
    connect, read = timeout.get("connect"), timeout.get("read")
    return aiohttp.ClientTimeout(
        # A bound on the whole call, as the workers' leases assume.
        total=None if connect is None or read is None else connect + read,
        connect=timeout.get("pool"),
        sock_connect=connect,
        sock_read=read,
    )


def json_body(value: Any) -> bytes:
    """A JSON body byte for byte as httpx encodes `json=` (`httpx._content.encode_json`)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


class AiohttpTransport(httpx.AsyncBaseTransport):
    def __init__(self, *, max_connections: int = 100) -> None:
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        # Made on first use, inside the event loop that will use it (aiohttp binds to it).
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._max_connections),
            auto_decompress=False,  # httpx's decoders do it, for the encodings httpx offered
            skip_auto_headers=("User-Agent", "Content-Type", "Accept-Encoding"),
        )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        answer, content = await self._call(
            request.method,
            # As httpx encoded it: yarl would otherwise decode and re-encode the query,
            # and the fal_webhook URL must reach fal byte for byte.
            yarl.URL(str(request.url), encoded=True),
            request.headers.multi_items(),
            body or None,
            client_timeout(request.extensions.get("timeout", {})),
            request=request,
        )
        return httpx.Response(
            answer.status,
            headers=list(answer.raw_headers),
            stream=httpx.ByteStream(content),
            request=request,
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def exchange(
        self,
        method: str,
        url: str,
        headers: Sequence[tuple[str, str]],
        *,
        json: bytes | None = None,
        timeouts: aiohttp.ClientTimeout,
    ) -> Answer:
        """The request an `httpx.AsyncClient` over this transport would send, byte for byte
        (`headers` being the client's merged with the call's, as `Headers.multi_items()` gives
        them; `json` a body from `json_body`), sent without httpx's objects; the answer read
        whole and decoded. Raises httpx's errors, by phase, as `handle_async_request` does.

        Why: httpx's request, URL, headers and response objects around each call cost about
        140 us of CPU, against 90 us for the whole call on aiohttp (3,000 submits to a local
        server), and the submission is on every job's path."""
        target, host = wire_target(url)
        sent = [("host", host), *headers]
        if json is not None:
            sent += [("content-length", str(len(json))), ("content-type", "application/json")]
        elif method in ("POST", "PUT", "PATCH"):
            sent.insert(1, ("content-length", "0"))
        answer, content = await self._call(method, target, sent, json, timeouts, request=None)
        if "content-encoding" in answer.headers:
            # Decoded by httpx's decoders, as the encodings offered are the httpx client's.
            encoded = httpx.Response(
                answer.status, headers=list(answer.raw_headers), stream=httpx.ByteStream(content)
            )
            content = encoded.read()
        return Answer(answer.status, answer.headers, content)

    async def _call(
        self,
        method: str,
        url: yarl.URL,
        headers: Sequence[tuple[str, str]],
        body: bytes | None,
        timeouts: aiohttp.ClientTimeout,
        *,
        request: httpx.Request | None,
    ) -> tuple[aiohttp.ClientResponse, bytes]:
        session = self._session or self._open()
        try:
            async with session.request(
                method,
                url,
                headers=headers,
                data=body,
                allow_redirects=False,
                timeout=timeouts,
            ) as answer:
                return answer, await answer.read()
        except _BEFORE_SENDING as exc:
            if isinstance(exc, aiohttp.ConnectionTimeoutError):
                raise httpx.ConnectTimeout(str(exc), request=request) from exc
            raise httpx.ConnectError(str(exc), request=request) from exc
        except TimeoutError as exc:
            raise httpx.ReadTimeout(str(exc) or "timed out", request=request) from exc
        except aiohttp.ClientError as exc:
            raise httpx.ReadError(f"{type(exc).__name__}: {exc}", request=request) from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def wire_target(url: str) -> tuple[yarl.URL, str]:
    """The URL as httpx encodes it, and the Host header httpx makes of it; raises
    httpx.InvalidURL where httpx refused the URL.

    Why the split: httpx's parse of each URL (a webhook's, a submission's with its webhook in
    the query: unique per job) was 8 % of the fake fal's CPU end to end. Its origin (scheme and
    authority) is parsed by httpx once; a path and query made only of characters that httpx's
    encoding keeps and of percent-escapes (which it keeps too), with no dot segment to remove,
    are kept as they are, which is what httpx does with them. Anything else goes to httpx
    whole."""
    scheme, sep, rest = url.partition("://")
    authority, slash, tail = rest.partition("/")
    plain = _PLAIN_AUTHORITY.fullmatch(authority) and _PLAIN_TAIL.fullmatch(tail)
    if sep and slash and plain and "/." not in f"/{tail}":
        origin = _origin(f"{scheme}://{authority}")
        if origin is not None:
            base, host = origin
            return yarl.URL(f"{base}/{tail}", encoded=True), host
    parsed = httpx.URL(url)
    # yarl would otherwise decode and re-encode the path and query.
    return yarl.URL(str(parsed), encoded=True), parsed.netloc.decode("ascii")


# An authority with no '%', '?' or '#' in it: httpx renders it on its own (`_origin`).
_PLAIN_AUTHORITY = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@\[\]]*")
# A path and query that httpx's percent-encoding leaves as they are: unreserved characters, the
# sub-delimiters, ':' and '@' (and '/' and '?' after the first '?'), and escapes ('%' and two
# hex digits); no other '%', no fragment.
_PLAIN_TAIL = re.compile(
    r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-Fa-f]{2})*"
    r"(\?(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9A-Fa-f]{2})*)?"
)


@functools.lru_cache(maxsize=64)
def _origin(origin: str) -> tuple[str, str] | None:
    """httpx's rendering of a URL's scheme and authority (its default port dropped, its host
    lower-cased) and its Host header; None where httpx would refuse it, or the rendering is not
    the origin followed by a slash."""
    try:
        parsed = httpx.URL(f"{origin}/")
    except httpx.InvalidURL:
        return None
    text = str(parsed)
    if not text.endswith("/") or parsed.raw_path != b"/":
        return None
    return text[:-1], parsed.netloc.decode("ascii")
