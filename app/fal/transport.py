"""httpx's interface over falrelay's HTTP/1.1 client (app.http_client) for the calls to fal,
and a shorter way round it for callers that know the transport (`FalTransport.exchange`).

Why: in the queue benchmark httpcore's pool took about 40 % of a submission worker's CPU, and
aiohttp's, which replaced it, about a third of what was left (bench/README.md, issue 17). The
fal client keeps speaking httpx, so its submit policy and its tests do not change.

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

import httpx

from app.http_client import (
    AnswerLost,
    Headers,
    HttpClient,
    HttpError,
    InvalidRequest,
    Response,
    Timeouts,
)


@dataclass(frozen=True, slots=True)
class Answer:
    """An answer read whole, with what the fal client reads of an `httpx.Response`."""

    status_code: int
    headers: Headers  # case-insensitive
    content: bytes

    def json(self) -> Any:
        # The standard library's, as httpx's `Response.json`: orjson would turn an integer
        # beyond 64 bits into a float.
        return json.loads(self.content)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")


def client_timeout(timeout: Mapping[str, float | None]) -> Timeouts:
    """httpx's timeouts (`Timeout.as_dict()`) as falrelay's client takes them."""
    connect, read = timeout.get("connect"), timeout.get("read")
    return Timeouts(
        # A bound on the whole call, as the workers' leases assume.
        total=None if connect is None or read is None else connect + read,
        pool=timeout.get("pool"),
        connect=connect,
    )


def json_body(value: Any) -> bytes:
    """A JSON body byte for byte as httpx encodes `json=` (`httpx._content.encode_json`)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


class FalTransport(httpx.AsyncBaseTransport):
    def __init__(self, *, max_connections: int = 100) -> None:
        self._client = HttpClient(max_connections=max_connections)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        answer = await self._call(
            request.method,
            # As httpx encoded it: the fal_webhook URL must reach fal byte for byte.
            str(request.url),
            _wire_headers(request, len(body)),
            body or None,
            client_timeout(request.extensions.get("timeout", {})),
            request=request,
        )
        return httpx.Response(
            answer.status,
            headers=answer.raw_headers,
            stream=httpx.ByteStream(answer.body),
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
        timeouts: Timeouts,
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
        answer = await self._call(method, target, sent, json, timeouts, request=None)
        content = answer.body
        if "content-encoding" in answer.headers:
            # Decoded by httpx's decoders, as the encodings offered are the httpx client's.
            encoded = httpx.Response(
                answer.status, headers=answer.raw_headers, stream=httpx.ByteStream(content)
            )
            content = encoded.read()
        return Answer(answer.status, answer.headers, content)

    async def _call(
        self,
        method: str,
        url: str,
        headers: Sequence[tuple[str, str]],
        body: bytes | None,
        timeouts: Timeouts,
        *,
        request: httpx.Request | None,
    ) -> Response:
        try:
            return await self._client.request(method, url, headers, body, timeouts=timeouts)
        except InvalidRequest as exc:
            raise httpx.LocalProtocolError(str(exc), request=request) from exc
        except AnswerLost as exc:
            if exc.timed_out:
                raise httpx.ReadTimeout(str(exc), request=request) from exc
            raise httpx.ReadError(str(exc), request=request) from exc
        except HttpError as exc:  # NotSent
            if exc.timed_out:
                raise httpx.ConnectTimeout(str(exc), request=request) from exc
            raise httpx.ConnectError(str(exc), request=request) from exc

    async def aclose(self) -> None:
        await self._client.aclose()


def _wire_headers(request: httpx.Request, length: int) -> list[tuple[str, str]]:
    """The request's headers as httpx made them (Host first), for its body read whole: a
    streamed body's chunked encoding becomes its length."""
    headers = request.headers.multi_items()
    if "transfer-encoding" in request.headers:
        headers = [(name, value) for name, value in headers if name != "transfer-encoding"]
        headers.append(("content-length", str(length)))
    return headers


def wire_target(url: str) -> tuple[str, str]:
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
            return f"{base}/{tail}", host
    parsed = httpx.URL(url)
    return str(parsed), parsed.netloc.decode("ascii")


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
