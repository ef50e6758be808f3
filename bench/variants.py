"""`falrelay` with a proposed change applied in-process, to measure a change before anyone
makes it in app/: `python -m bench.variants uvloop,async-deps api --host ... --port ...`.

Each variant is one lever from issue 6, patched as narrowly as possible:

- `uvloop`: the event loop uvicorn would pick itself. `falrelay api/serve/worker` start their
  loop with `asyncio.run`, so uvicorn's `loop="auto"` never applies and they run on the
  default asyncio loop.
- `async-deps`: `app.api.deps.get_runtime` as an `async def`. FastAPI runs a plain `def`
  dependency in a worker thread: two thread hand-offs per request.
- `fal-keepalive`: the fal httpx client keeps as many idle connections as the submission loop
  has calls in flight (it keeps 20 of up to 32, so 12 are closed and reopened per round).
- `fal-aiohttp`: the fal httpx client on `httpx_aiohttp.AiohttpTransport` (aiohttp's pool),
  same API, same timeouts. Needs the `httpx-aiohttp` package.
- `record-async`: a delivery frees its slot once the receiver has answered; its result is
  still recorded in the next batch (the lease covers a crash meanwhile), instead of holding
  the slot until that batch commits. Unbounded: no backpressure on the results waiting.
- `record-by-pk`: the batch that records delivery results (`queue.RECORD_DELIVERIES`) with
  its `status = 'pending'` guard written so the planner cannot match it to the partial index
  of pending deliveries: it then joins on the primary key instead of reading every pending
  row into a hash table on each batch.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from fastapi import Request

VARIANTS = (
    "uvloop",
    "async-deps",
    "fal-keepalive",
    "fal-aiohttp",
    "record-async",
    "record-by-pk",
)


def _use_uvloop() -> None:
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _async_runtime_dependency() -> None:
    # Must run before the routers are imported: they read the dependency when declared.
    from app.api import deps

    # FastAPI resolves the annotation `Request` in this module's globals (imported above).
    async def get_runtime(request: Request) -> Any:
        return request.app.state.runtime

    annotated: Any = deps.RuntimeDep
    marker = annotated.__metadata__[0]
    object.__setattr__(marker, "dependency", get_runtime)
    deps.get_runtime = get_runtime


def _fal_client(*, aiohttp_transport: bool) -> None:
    import httpx

    from app import services
    from app.settings import Settings

    original = services.fal_http_client

    def fal_http_client(settings: Settings) -> httpx.AsyncClient:
        made = original(settings)
        # Same timeouts, headers and redirect policy; only the pool differs.
        kwargs: dict[str, Any] = {
            "timeout": made.timeout,
            "follow_redirects": False,
            "headers": {"User-Agent": "falrelay"},
        }
        if aiohttp_transport:
            from httpx_aiohttp import AiohttpTransport

            kwargs["transport"] = AiohttpTransport()
        else:
            kwargs["limits"] = httpx.Limits(max_connections=100, max_keepalive_connections=100)
        return httpx.AsyncClient(**kwargs)

    services.fal_http_client = fal_http_client


def _record_in_background() -> None:
    from app import ids, logs
    from app.webhooks.schemas import DELIVERY_ID_PREFIX
    from app.worker.deliverer import Deliverer

    async def work(self: Deliverer, ctx: Any, row: Any) -> None:
        logs.delivery_id.set(ids.encode(DELIVERY_ID_PREFIX, row["id"]))
        try:
            outcome = await self._attempt(row)
        finally:
            self._in_flight[row["target"]] -= 1
            if self._in_flight[row["target"]] <= 0:
                del self._in_flight[row["target"]]
        self._pending.append(outcome)
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush())

    Deliverer.work = work  # type: ignore[method-assign]


def _record_by_primary_key() -> None:
    from app.worker import queue

    guard = "AND d.status = 'pending'"
    if guard not in queue.RECORD_DELIVERIES:
        raise SystemExit("record-by-pk: RECORD_DELIVERIES changed; update bench/variants.py")
    # The same guard, as a value the planner cannot prove at plan time.
    queue.RECORD_DELIVERIES = queue.RECORD_DELIVERIES.replace(
        guard, "AND d.status = (SELECT 'pending'::text)"
    )


def main(argv: list[str]) -> None:
    chosen = [v for v in argv[0].split(",") if v]
    unknown = set(chosen) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"unknown variants {sorted(unknown)}; choose from {VARIANTS}")
    if "uvloop" in chosen:
        _use_uvloop()
    if "async-deps" in chosen:
        _async_runtime_dependency()
    if "fal-keepalive" in chosen or "fal-aiohttp" in chosen:
        _fal_client(aiohttp_transport="fal-aiohttp" in chosen)
    if "record-async" in chosen:
        _record_in_background()
    if "record-by-pk" in chosen:
        _record_by_primary_key()
    from app.cli import main as falrelay

    falrelay(argv[1:])


if __name__ == "__main__":
    main(sys.argv[1:])
