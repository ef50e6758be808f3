"""Clients that wait: open event streams and `Prefer: wait` requests, held from one process.

`python -m bench.watchers SPEC.json STATUS.json` opens `GET /v1/jobs/{id}/events` for every job
of the spec and keeps it open (reading what comes), and holds one `POST /v1/jobs` with
`Prefer: wait=N` per waiter (its own `Idempotency-Key`, so a re-issue replays its job and waits
again), re-issued with `wait=60` as each one times out. It runs until SIGTERM, writing its
counters to STATUS.json twice a second. aiohttp on uvloop holds thousands of connections in one
process; the open-files limit is raised to its hard limit first.
"""

from __future__ import annotations

import asyncio
import json
import resource
import signal
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

REISSUE_WAIT_S = 60


class Counters:
    def __init__(self) -> None:
        self.streams_open = 0  # got the stream's first bytes
        self.streams_ended = 0
        self.stream_errors = 0
        self.stream_bytes = 0
        self.waits_in_flight = 0
        self.waits_answered = 0
        self.wait_errors = 0
        self.wait_statuses: dict[str, int] = {}

    def as_json(self) -> dict[str, Any]:
        return {**vars(self), "at": time.time()}


async def _stream(
    http: aiohttp.ClientSession, base: str, job_id: str, headers: dict[str, str], c: Counters
) -> None:
    opened = False
    try:
        async with http.get(f"{base}/v1/jobs/{job_id}/events", headers=headers) as response:
            if response.status != 200:
                c.stream_errors += 1
                return
            async for chunk in response.content.iter_any():
                if not opened:
                    opened = True
                    c.streams_open += 1
                c.stream_bytes += len(chunk)
    except (TimeoutError, aiohttp.ClientError, OSError):
        c.stream_errors += 1
    finally:
        if opened:
            c.streams_open -= 1
            c.streams_ended += 1


async def _waiter(
    http: aiohttp.ClientSession,
    base: str,
    key: str,
    first_wait: float,
    body: str,
    headers: dict[str, str],
    c: Counters,
) -> None:
    wait = first_wait
    while True:
        request_headers = {**headers, "Idempotency-Key": key, "Prefer": f"wait={wait:g}"}
        c.waits_in_flight += 1
        try:
            async with http.post(f"{base}/v1/jobs", data=body, headers=request_headers) as answer:
                await answer.read()
                status = str(answer.status)
                c.wait_statuses[status] = c.wait_statuses.get(status, 0) + 1
                c.waits_answered += 1
        except (TimeoutError, aiohttp.ClientError, OSError):
            c.wait_errors += 1
            await asyncio.sleep(1.0)
        finally:
            c.waits_in_flight -= 1
        wait = REISSUE_WAIT_S


def _write(path: Path, c: Counters) -> None:
    # Whole or not at all: the harness reads it at any moment.
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(c.as_json()))
    tmp.replace(path)


async def _report(path: Path, c: Counters) -> None:
    while True:
        _write(path, c)
        await asyncio.sleep(0.5)


async def main_async(spec: dict[str, Any], status: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    counters = Counters()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    base: str = spec["base_url"]
    headers = {"Authorization": f"Bearer {spec['key']}"}
    post_headers = {**headers, "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        tasks = [asyncio.create_task(_report(status, counters))]
        # Opened a few hundred at a time: a burst of thousands of connects would overflow the
        # server's accept backlog.
        for i, job_id in enumerate(spec["stream_jobs"]):
            tasks.append(asyncio.create_task(_stream(http, base, job_id, headers, counters)))
            if i % 200 == 199:
                await asyncio.sleep(0.2)
        for key, first_wait in spec["waiters"]:
            tasks.append(
                asyncio.create_task(
                    _waiter(http, base, key, first_wait, spec["body"], post_headers, counters)
                )
            )
        await stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    _write(status, counters)


def main(argv: list[str]) -> None:
    spec = json.loads(Path(argv[0]).read_text())
    status = Path(argv[1])
    try:
        import uvloop

        uvloop.run(main_async(spec, status))
    except ImportError:
        asyncio.run(main_async(spec, status))


if __name__ == "__main__":
    main(sys.argv[1:])
