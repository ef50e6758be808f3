"""Small pieces the benchmarks share."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg

from app.db.pool import QUEUES_DELIVERIES, asyncpg_dsn
from bench.load import LoadResult
from bench.report import Report

E = TypeVar("E")

# The harness's own calls (set-up, control, stats) are no measurement: bounded generously, as on
# two busy cores beside other benchmarks a loopback connect has taken longer than httpx's 5 s.
HARNESS_TIMEOUT = 60.0


async def connect(database_url: str) -> asyncpg.Connection[Any]:
    """A connection that writes the delivery queue as falrelay's own do (app.db.pool)."""
    return await asyncpg.connect(asyncpg_dsn(database_url), server_settings=QUEUES_DELIVERIES)


def backend_cpu(pid: int) -> float:
    """Seconds of CPU a local Postgres backend has used (nanoseconds in schedstat, not clock
    ticks): measured by the server's own process, so it holds on a busy machine."""
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0]) / 1e9


async def wait_until(
    done: Callable[[], Awaitable[bool]], *, within: float, interval: float = 0.05
) -> float:
    """Polls `done` until it is true; returns the seconds it took. Bounded by `within` seconds."""
    started = time.perf_counter()
    while not await done():
        if time.perf_counter() - started > within:
            raise TimeoutError(f"not done after {within} s")
        await asyncio.sleep(interval)
    return time.perf_counter() - started


def load_summary(result: LoadResult) -> dict[str, Any]:
    return {
        "driver": result.driver,
        "requests": result.requests,
        "ok": result.ok,
        "errors": result.errors,
        "rps": round(result.rps, 1),
        "p50_ms": result.p50_ms,
        "p90_ms": result.p90_ms,
        "p99_ms": result.p99_ms,
        "max_ms": result.max_ms,
        "statuses": result.statuses,
    }


def check_errors(result: LoadResult, what: str, notes: list[str], limit: float = 0.001) -> None:
    """A run that mostly answered errors measured the wrong thing: say so loudly. A server
    error is a bug whatever its share: said too."""
    server_errors = any(str(status).startswith("5") for status in result.statuses)
    if result.error_share > limit or server_errors:
        notes.append(
            f"{what}: {result.errors} of {result.requests} requests failed ({result.statuses})"
        )


def chosen_experiments(report: Report, experiments: list[E], wanted: bool) -> list[E]:
    """The experiments to run beside falrelay: none unless `--experiments` asked for them, and
    a note when it did but this benchmark has none to offer (bench/variants.py)."""
    if wanted and not experiments:
        report.notes.append("--experiments: no experiment is defined for this benchmark")
    return experiments if wanted else []
