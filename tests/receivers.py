"""A webhook receiver for tests: records every request, answers as each path is scripted."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Answer:
    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering: a slow or hanging receiver


class Receiver:
    """`script(path, Answer, ...)` queues answers for a path (then it answers 200)."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self._scripts: dict[str, deque[Answer]] = defaultdict(deque)
        self._defaults: dict[str, Answer] = {}
        self._lock = threading.Lock()
        self.app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["POST"])])

    def script(self, path: str, *answers: Answer, then: Answer | None = None) -> None:
        with self._lock:
            self._scripts[path].extend(answers)
            if then is not None:
                self._defaults[path] = then

    def at(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    async def _handle(self, request: Request) -> Response:
        path = "/" + request.path_params["path"]
        body = await request.body()
        with self._lock:
            self.received.append(Received(path, dict(request.headers), body, time.monotonic()))
            queue = self._scripts[path]
            answer = queue.popleft() if queue else self._defaults.get(path, Answer())
        if answer.delay:
            await asyncio.sleep(answer.delay)
        return Response(answer.body, status_code=answer.status, headers=answer.headers)
