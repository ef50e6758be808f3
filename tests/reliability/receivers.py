"""Webhook receivers that fail, hang and recover, for the fault run.

Each (path, webhook-id) gets a fate the first time it arrives, drawn from a seeded generator:
answered at once, or failed once (500), throttled once (429 with Retry-After), or left hanging
past the sender's timeout once; every later arrival of the same event is answered 200. A path
can also be down for a while (an outage: every request answered 503) and come back. Everything
that arrives is recorded, so the run can count what each endpoint received and how often.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


@dataclass(frozen=True)
class Arrival:
    path: str
    webhook_id: str
    headers: dict[str, str]
    body: bytes
    answer: str  # what the receiver did: ok, fail, throttle, hang, outage


@dataclass(frozen=True)
class Fates:
    """Shares of first arrivals that fail, are throttled, or hang; the rest succeed."""

    fail: float = 0.0
    throttle: float = 0.0
    hang: float = 0.0


class FaultyReceiver:
    def __init__(self, seed: int, fates: dict[str, Fates], *, hang_seconds: float) -> None:
        self.arrivals: list[Arrival] = []
        self.faults: Counter[str] = Counter()
        self._rng = random.Random(seed)
        self._fates = fates
        self._hang_seconds = hang_seconds
        self._seen: set[tuple[str, str]] = set()
        self._down_until: dict[str, float] = {}
        self._lock = threading.Lock()
        self.app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["POST"])])

    def outage(self, path: str, seconds: float) -> None:
        """The path answers 503 to everything for `seconds`, then recovers."""
        with self._lock:
            self._down_until[path] = time.monotonic() + seconds
            self.faults["receiver_outages"] += 1

    def received(self, path: str) -> Counter[str]:
        """How many times each webhook-id was answered 2xx in time at `path`."""
        with self._lock:
            return Counter(
                a.webhook_id for a in self.arrivals if a.path == path and a.answer == "ok"
            )

    def accepted(self, path: str) -> Counter[str]:
        """How many times each webhook-id was taken in at `path`: answered 2xx, in time or
        after the sender gave up (a hang). Each beyond the first is a duplicate the receiver
        must deduplicate."""
        with self._lock:
            return Counter(
                a.webhook_id for a in self.arrivals if a.path == path and a.answer in ("ok", "hang")
            )

    async def _handle(self, request: Request) -> Response:
        path = "/" + request.path_params["path"]
        body = await request.body()
        webhook_id = request.headers.get("webhook-id", "")
        with self._lock:
            answer = self._answer(path, webhook_id)
            self.arrivals.append(Arrival(path, webhook_id, dict(request.headers), body, answer))
            if answer != "ok":
                self.faults[f"receiver_{answer}_answers"] += 1
        if answer == "fail":
            return Response(b"the receiver failed", status_code=500)
        if answer == "throttle":
            return Response(b"slow down", status_code=429, headers={"Retry-After": "1"})
        if answer == "outage":
            return Response(b"down for maintenance", status_code=503)
        if answer == "hang":
            await asyncio.sleep(self._hang_seconds)
        return Response(b"ok")

    def _answer(self, path: str, webhook_id: str) -> str:
        if time.monotonic() < self._down_until.get(path, 0.0):
            return "outage"
        key = (path, webhook_id)
        if key in self._seen:
            return "ok"
        self._seen.add(key)
        fates = self._fates.get(path, Fates())
        draw = self._rng.random()
        for answer, share in (("fail", fates.fail), ("throttle", fates.throttle)):
            if draw < share:
                return answer
            draw -= share
        return "hang" if draw < fates.hang else "ok"
