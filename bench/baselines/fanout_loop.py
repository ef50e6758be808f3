"""The fan-out baseline: a bare aiohttp loop posting the same webhook bodies, with the same
concurrency, to the same receiver. No database, no signing per request, no bookkeeping.

`python -m bench.baselines.fanout_loop SPEC.json` prints one JSON line: how many were sent,
how many got a 2xx, the seconds it took and the CPU seconds the process spent. `"loop":
"uvloop"` (the reference figures were measured on uvloop) or `"asyncio"`; `"client":
"aiohttp"` (the baseline) or `"falrelay"`: the same loop on falrelay's own HTTP client
(app.http_client), which the worker delivers with, to show what each costs per POST.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from app.http_client import AnswerLost, HttpClient, NotSent, split_url


async def post_all(
    url: str, body: bytes, headers: dict[str, str], count: int, concurrency: int
) -> dict[str, Any]:
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=15)
    sent = ok = 0
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def sender() -> None:
            nonlocal sent, ok
            while sent < count:
                sent += 1
                try:
                    async with session.post(url, data=body, headers=headers) as response:
                        await response.read()
                        ok += 200 <= response.status < 300
                except (aiohttp.ClientError, TimeoutError):
                    pass

        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(sender() for _ in range(concurrency)))
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {"sent": sent, "ok": ok, "elapsed_s": elapsed, "cpu_s": cpu}


async def post_all_falrelay(
    url: str, body: bytes, headers: dict[str, str], count: int, concurrency: int
) -> dict[str, Any]:
    """The same loop on falrelay's client, with the headers aiohttp adds by itself."""
    client = HttpClient(max_connections=concurrency)
    origin, target = split_url(url)
    wire = [
        ("host", origin.authority),
        ("accept", "*/*"),
        ("accept-encoding", "gzip, deflate"),
        ("content-length", str(len(body))),
        *headers.items(),
    ]
    sent = ok = 0

    async def sender() -> None:
        nonlocal sent, ok
        while sent < count:
            sent += 1
            try:
                response = await client.request("POST", (origin, target), wire, body)
                ok += 200 <= response.status < 300
            except (NotSent, AnswerLost):
                pass

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(sender() for _ in range(concurrency)))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    await client.aclose()
    return {"sent": sent, "ok": ok, "elapsed_s": elapsed, "cpu_s": cpu}


def main(argv: list[str]) -> None:
    spec = json.loads(Path(argv[0]).read_text())
    post = post_all_falrelay if spec.get("client") == "falrelay" else post_all
    work = post(
        spec["url"], spec["body"].encode(), spec["headers"], spec["count"], spec["concurrency"]
    )
    if spec.get("loop", "uvloop") == "uvloop":
        import uvloop

        result = uvloop.run(work)
    else:
        result = asyncio.run(work)
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
