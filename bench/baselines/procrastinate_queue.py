"""The queue baseline: procrastinate running a no-op task on the same Postgres.

`python -m bench.baselines.procrastinate_queue DSN [CONCURRENCY]` runs a worker (concurrency
10 by default, as the reference figure was measured) until SIGTERM; the harness defers jobs
with `app_for(dsn)` and counts what is left in `procrastinate_jobs`.
"""

from __future__ import annotations

import asyncio
import os
import sys

import procrastinate

TASK_NAME = "bench_noop"


def app_for(dsn: str) -> procrastinate.App:
    # The pool size only matters for smoke runs, which keep every process's pool small.
    size = int(os.environ.get("BENCH_BASELINE_POOL_MAX", "10"))
    connector = procrastinate.PsycopgConnector(conninfo=dsn, min_size=1, max_size=size)
    app = procrastinate.App(connector=connector)

    @app.task(name=TASK_NAME)
    async def noop() -> None:
        return None

    return app


async def defer(dsn: str, count: int) -> None:
    """`count` jobs in one batch (procrastinate's fastest way in: one INSERT)."""
    app = app_for(dsn)
    async with app.open_async():
        await app.tasks[TASK_NAME].batch_defer_async(*({} for _ in range(count)))


async def apply_schema(dsn: str) -> None:
    app = app_for(dsn)
    async with app.open_async():
        await app.schema_manager.apply_schema_async()


async def work(dsn: str, concurrency: int) -> None:
    app = app_for(dsn)
    async with app.open_async():
        sys.stdout.write("procrastinate worker ready\n")
        sys.stdout.flush()
        await app.run_worker_async(concurrency=concurrency, wait=True)


if __name__ == "__main__":
    asyncio.run(work(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 10))
