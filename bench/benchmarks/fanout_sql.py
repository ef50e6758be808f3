"""The fan-out's statements by themselves: Postgres CPU per delivery of the delivery claim and
the recording of its results, on falrelay's connection settings against the server's own.

No HTTP and no worker: one connection drains N pending deliveries (one `job.succeeded` event
each, to one endpoint) with `app.webhooks.queue` (a claim of up to 128, then each 48 of them
recorded as answered 2xx), as the worker does. Three rounds, each of N new deliveries after a
`VACUUM ANALYZE` (what autovacuum does between bursts): by the third, the table holds twice N
delivered beside N pending, and its statistics say so. The CPU is the backend's own
(/proc/<pid>/schedstat of `pg_backend_pid()`), so the figures hold on a busy machine.

Baseline in the same run: the same, on a connection with the server's default settings (only
the JSON codecs of app.db.pool). Each side has a database of its own; their rounds alternate.
The two differ where the server can JIT-compile (`pg_jit_available()`): Postgres from Debian's
packages and most managed ones can; the embedded one (pgserver) cannot, and there both sides
run alike. Run it against such a server with `FALRELAY_BENCH_DATABASE_URL`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from app import ids
from app.db.pool import (
    QUEUES_DELIVERIES,
    Pool,
    _init_connection,
    _keep_session,
    asyncpg_dsn,
    create_pool,
)
from app.webhooks import queue, repository, signing
from app.webhooks.delivery import AttemptResult
from app.webhooks.models import DeliveryStatus
from bench import stats
from bench.benchmarks.common import backend_cpu, connect
from bench.benchmarks.fanout import INSERT_PENDING
from bench.context import Context, create_api_key
from bench.report import Figure, Report
from bench.workload import succeeded_event

ROUNDS = 3
CLAIM = 128
RECORD = 48
LEASE_SECONDS = 60.0


@dataclass
class Side:
    name: str
    pool: Pool
    admin: asyncpg.Connection[Any]
    client_id: uuid.UUID
    endpoint_id: uuid.UUID
    pid: int
    jit: str
    # Per round: ms of backend CPU per delivery, claim + record, and the claim's part of it.
    total: list[float] = field(default_factory=list)
    claim: list[float] = field(default_factory=list)

    async def round(self, payload: str, n: int) -> None:
        await self.admin.execute(INSERT_PENDING, self.client_id, payload, n, self.endpoint_id)
        await self.admin.execute("VACUUM ANALYZE deliveries")
        await self.admin.execute("VACUUM ANALYZE delivery_queue")
        await self.admin.execute("VACUUM ANALYZE delivery_attempts")
        started = backend_cpu(self.pid)
        claiming = 0.0
        done = 0
        while True:
            before = backend_cpu(self.pid)
            claimed = await queue.claim_deliveries(
                self.pool, CLAIM, LEASE_SECONDS, [], in_flight={}, capacity=CLAIM, reserve=0
            )
            claiming += backend_cpu(self.pid) - before
            if not claimed.rows:
                break
            now = datetime.now(UTC)
            for i in range(0, len(claimed.rows), RECORD):
                batch = [
                    queue.Outcome(
                        delivery_id=row["id"],
                        attempt_count=row["attempt_count"],
                        endpoint_id=row["endpoint_id"],
                        attempted_at=now,
                        result=AttemptResult(duration_ms=2, status_code=200, response_body=""),
                        status=DeliveryStatus.SUCCEEDED,
                        next_attempt_at=None,
                    )
                    for row in claimed.rows[i : i + RECORD]
                ]
                await queue.record(
                    self.pool, batch, now=now, breaker_failures=5, breaker_cooldown=30.0
                )
            done += len(claimed.rows)
        if done != n:
            raise RuntimeError(f"{self.name}: {done} of {n} deliveries drained")
        self.total.append(1000 * (backend_cpu(self.pid) - started) / n)
        self.claim.append(1000 * claiming / n)

    async def close(self) -> None:
        await self.pool.close()
        await self.admin.close()


async def _server_default_pool(database_url: str) -> Pool:
    """app.db.pool's pool without its server settings: what the server is configured with.
    It does keep the delivery queue itself, as falrelay's connections do (migration 0030)."""
    return await asyncpg.create_pool(
        asyncpg_dsn(database_url),
        min_size=1,
        max_size=1,
        init=_init_connection,
        reset=_keep_session,
        server_settings=QUEUES_DELIVERIES,
    )


async def _open(ctx: Context, name: str, falrelay: bool) -> Side:
    database_url = await ctx.postgres.create_database("fanoutsql")
    client_id, _ = await create_api_key(database_url)
    if falrelay:
        pool = await create_pool(database_url, min_size=1, max_size=1)
    else:
        pool = await _server_default_pool(database_url)
    endpoint = await repository.insert_endpoint(
        pool,
        endpoint_id=ids.uuid7(),
        client_id=client_id,
        url="http://127.0.0.1:9/hook",  # never sent to: no HTTP here
        description="bench",
        event_types=["job.succeeded"],
        secret=signing.new_secret(),
    )
    assert endpoint is not None
    async with pool.acquire() as conn:
        pid = await conn.fetchval("SELECT pg_backend_pid()")
        jit = await conn.fetchval("SHOW jit")
    return Side(name, pool, await connect(database_url), client_id, endpoint["id"], pid, jit)


async def run(ctx: Context) -> Report:
    opts = ctx.options
    report = ctx.report(
        "fanout-sql",
        "the fan-out's statements alone: Postgres CPU per delivery, claim and record",
        baseline="the same statements on a connection with the server's default settings",
        goal="no more than the baseline",
    )
    n = 300 if opts.smoke else 20_000
    runs = 1 if opts.smoke else opts.runs
    payload = orjson.dumps(
        succeeded_event("job_" + uuid.uuid4().hex, datetime.now(UTC).isoformat())
    ).decode()
    totals: dict[str, list[list[float]]] = {"falrelay": [], "server": []}
    claims: dict[str, list[list[float]]] = {"falrelay": [], "server": []}
    jit_available = False
    jit: dict[str, str] = {}
    for run_index in range(runs):
        # Fresh databases each run: every run's rounds start from an empty table.
        falrelay = await _open(ctx, "falrelay", True)
        server = await _open(ctx, "server defaults", False)
        try:
            jit_available = await falrelay.admin.fetchval("SELECT pg_jit_available()")
            jit = {"falrelay": falrelay.jit, "server defaults": server.jit}
            for index in range(ROUNDS):
                sides = [falrelay, server] if (run_index + index) % 2 == 0 else [server, falrelay]
                for side in sides:
                    await side.round(payload, n)
        finally:
            await falrelay.close()
            await server.close()
        for key, side in (("falrelay", falrelay), ("server", server)):
            totals[key].append(side.total)
            claims[key].append(side.claim)
    for index in range(ROUNDS):
        label = f"round {index + 1} ({index * n:,} delivered before, {n:,} pending)"
        mine = [run[index] for run in totals["falrelay"]]
        theirs = [run[index] for run in totals["server"]]
        report.figures.append(
            Figure(
                f"Postgres CPU per delivery, claim + record, {label}",
                "ms",
                mine,
                theirs,
                # Judged only where the JIT can run: elsewhere both sides are the same work.
                goal="<= baseline" if jit_available else None,
                met=_at_most(mine, theirs) if jit_available else None,
            )
        )
        report.figures.append(
            Figure(
                f"of which the claim, {label}",
                "ms",
                [run[index] for run in claims["falrelay"]],
                [run[index] for run in claims["server"]],
            )
        )
    report.settings = {
        "deliveries_per_round": n,
        "rounds_per_run": ROUNDS,
        "runs": runs,
        "claim_limit": CLAIM,
        "record_batch": RECORD,
        "jit_available": jit_available,
        "jit": jit,
    }
    if not jit_available:
        report.notes.append(
            "this server cannot JIT-compile (pg_jit_available() is false): both sides run "
            "alike; run it against a server that can with FALRELAY_BENCH_DATABASE_URL"
        )
    return report


def _at_most(runs: list[float], baseline: list[float]) -> bool | None:
    value, base = stats.median(runs), stats.median(baseline)
    if value is None or base is None:
        return None
    # Within a tenth, for the noise: a compiled claim costs several times as much.
    return value <= 1.1 * base
