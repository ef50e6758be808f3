"""A webhook receiver as fast as Python serves HTTP: a raw ASGI app under uvicorn.

Run as `uvicorn bench.receiver:app` in a process of its own. `POST /count/...` only counts;
`POST /hang/...` never answers (a receiver that hangs past any delivery timeout);
`POST /e2e/...` also reads each `job.succeeded` body and keeps, per job, how long after the
event (the job's state change, stamped by Postgres in the callback's transaction) and after the
job's creation the delivery arrived. `GET /stats` answers the figures; `POST /reset` clears.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

import orjson

OK = {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}


class State:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.count = 0
        self.jobs: dict[str, tuple[float, float]] = {}  # job id -> (added ms, e2e ms)
        self.duplicates = 0
        self.first_at: float | None = None
        self.last_at: float | None = None

    def record(self, path: str, body: bytes) -> None:
        now = time.time()
        self.count += 1
        self.first_at = self.first_at or now
        self.last_at = now
        if not path.startswith("/e2e"):
            return
        event = orjson.loads(body)
        if event.get("type") != "job.succeeded":
            return
        job = event["data"]
        if job["id"] in self.jobs:
            self.duplicates += 1
            return
        at = datetime.fromisoformat(event["timestamp"]).timestamp()
        created = datetime.fromisoformat(job["created_at"]).timestamp()
        self.jobs[job["id"]] = ((now - at) * 1000, (now - created) * 1000)

    def as_json(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "jobs": len(self.jobs),
            "duplicates": self.duplicates,
            "added_ms": [v[0] for v in self.jobs.values()],
            "e2e_ms": [v[1] for v in self.jobs.values()],
            "first_at": self.first_at,
            "last_at": self.last_at,
        }


state = State()


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    path: str = scope["path"]
    if scope["method"] == "GET" and path == "/stats":
        payload = orjson.dumps(state.as_json())
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(payload)),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
        return
    if path.startswith("/hang"):
        await asyncio.sleep(3600)
        return
    if path == "/reset":
        state.reset()
    else:
        state.record(path, body)
    await send(OK)
    await send({"type": "http.response.body", "body": b"ok"})
