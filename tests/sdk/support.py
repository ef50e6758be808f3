"""For the SDK tests: the stack's API key, and a proxy on loopback that fails on cue."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.stack import Stack

HOP_BY_HOP = {"host", "connection", "transfer-encoding", "keep-alive", "content-length"}


def key_of(stack: Stack) -> str:
    return stack.api.headers["authorization"].removeprefix("Bearer ")


@dataclass
class Fault:
    """What the proxy does to the next request matching `method` and `path`."""

    method: str
    path: str
    status: int = 503
    headers: dict[str, str] = field(default_factory=dict)
    # The request reaches the service, and the service's answer is lost on the way back.
    forward: bool = False
    # The answer (an event stream) is passed on up to its first event, then the connection
    # breaks mid-body.
    cut_after_first_event: bool = False


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    query: str
    headers: dict[str, str]


class StreamCut(Exception):
    """Raised inside a streaming answer: the server drops the connection mid-body."""


class FaultyProxy:
    """Forwards everything to `upstream`, except what `fail()` scripted; records requests."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.seen: list[Seen] = []
        self._faults: deque[Fault] = deque()
        self._lock = threading.Lock()
        methods = ["GET", "POST", "PATCH", "DELETE", "PUT"]
        self.app = Starlette(routes=[Route("/{path:path}", self._handle, methods=methods)])

    def fail(self, *faults: Fault) -> None:
        with self._lock:
            self._faults.extend(faults)

    def requests(self, method: str, path: str) -> list[Seen]:
        return [seen for seen in self.seen if seen.method == method and seen.path == path]

    def _take(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.method == method and fault.path == path:
                    self._faults.remove(fault)
                    return fault
        return None

    async def _handle(self, request: Request) -> Response:
        body = await request.body()
        path = request.url.path
        self.seen.append(Seen(request.method, path, request.url.query, dict(request.headers)))
        fault = self._take(request.method, path)
        if fault is not None and not (fault.forward or fault.cut_after_first_event):
            return _problem(fault)
        http = httpx.AsyncClient(base_url=self.upstream, timeout=30)
        headers = {k: v for k, v in request.headers.items() if k not in HOP_BY_HOP}
        upstream = http.build_request(
            request.method, path, params=request.url.query, content=body, headers=headers
        )
        answer = await http.send(upstream, stream=True)
        if fault is not None and fault.forward:
            await answer.aread()
            await answer.aclose()
            await http.aclose()
            return _problem(fault)
        chunks = _first_event(answer) if fault is not None else answer.aiter_raw()

        async def close() -> None:
            await answer.aclose()
            await http.aclose()

        return StreamingResponse(
            chunks,
            status_code=answer.status_code,
            headers={k: v for k, v in answer.headers.items() if k not in HOP_BY_HOP},
            background=BackgroundTask(close),
        )


async def _first_event(answer: httpx.Response) -> AsyncIterator[bytes]:
    buffer = b""
    async for chunk in answer.aiter_raw():
        buffer += chunk
        start = buffer.find(b"id: ")
        end = buffer.find(b"\n\n", start)
        if start != -1 and end != -1:
            yield buffer[: end + 2]
            raise StreamCut
    yield buffer


def _problem(fault: Fault) -> Response:
    return JSONResponse(
        {"type": "about:blank", "title": "Injected fault", "status": fault.status},
        status_code=fault.status,
        headers=fault.headers,
        media_type="application/problem+json",
    )
