"""The fan-out baseline: a bare aiohttp loop posting the same webhook bodies, with the same
concurrency, to the same receiver. No database, no signing per request, no bookkeeping.

`python -m bench.baselines.fanout_loop SPEC.json` prints one JSON line: how many were sent,
how many got a 2xx, and the seconds it took. `"loop": "uvloop"` (the reference figures were
measured on uvloop) or `"asyncio"`.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp


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

        started = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {"sent": sent, "ok": ok, "elapsed_s": elapsed}


def main(argv: list[str]) -> None:
    spec = json.loads(Path(argv[0]).read_text())
    work = post_all(
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
