"""Claims as clients multiply: Postgres CPU per claim, the delivery claim and the submission claim,
with work due for many clients against the same work for one.

A shared deployment grows in clients, and each claim weighs every client (fair share): its cost
grows with how many have work due. Here N clients (100, then 1,000) each have 20 deliveries due
(to their callback URL) and 20 jobs queued; a claim takes 16, as a worker does when an eighth of
its slots come free. What a claim leased is handed back after it (outside the measurement), so
every claim finds the same queue. The CPU is the backend's own (/proc/<pid>/schedstat, as in
fanout-sql), so the figures hold on a busy machine.

Baseline in the same run: the same claims on a database where one client holds all of it (20 x N
deliveries and jobs), alternating with the many-clients one.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from app.db.pool import Pool, create_pool
from app.jobs import queue as jobs_queue
from app.webhooks import fanout
from app.webhooks import queue as webhooks_queue
from bench.benchmarks.common import backend_cpu, connect
from bench.context import Context
from bench.report import Figure, Report
from bench.workload import job_request

DUE_EACH = 20
CLAIM = 16
CAPACITY, RESERVE = 128, 32  # the worker's leases: 64 send slots, LEASE_FACTOR 2
CLAIMS = 200
GOAL = 10.0  # at 1,000 clients, a claim within ten times the one-client claim

_CLIENTS = (
    "INSERT INTO clients (id, name) SELECT uuid7(), 'bench-' || g FROM generate_series(1, $1) AS g"
)
_DELIVERIES = f"""
WITH ev AS (
    INSERT INTO events (id, client_id, job_id, type, payload, created_at)
    SELECT uuid7(), c.id, NULL, 'job.succeeded', $1::jsonb, now()
    FROM clients c CROSS JOIN generate_series(1, $2)
    RETURNING id, client_id
), queued AS (
    INSERT INTO deliveries (id, client_id, event_id, job_id, endpoint_id, url, next_attempt_at)
    SELECT uuid7(), client_id, id, NULL, NULL, 'http://127.0.0.1:9/hook', now() FROM ev
    RETURNING id, client_id, event_id, endpoint_id, url, next_attempt_at
)
{fanout.ENQUEUE} FROM queued
"""
_JOBS = """
INSERT INTO jobs (id, client_id, model, input, metadata)
SELECT uuid7(), c.id, $1, $2::jsonb, $3::jsonb FROM clients c CROSS JOIN generate_series(1, $4)
"""
_UNLEASE_JOBS = (
    "UPDATE jobs SET locked_until = NULL, attempts = attempts - 1 WHERE id = ANY($1::uuid[])"
)


@dataclass
class Queue:
    """A database with `clients` clients sharing `clients * DUE_EACH` of each kind of work."""

    pool: Pool
    admin: asyncpg.Connection[Any]
    pid: int

    async def per_claim(
        self, claim: Callable[[], Awaitable[list[uuid.UUID]]], claims: int
    ) -> float:
        """ms of backend CPU per claim, each handed back after its measurement."""
        spent = 0.0
        for _ in range(claims):
            before = backend_cpu(self.pid)
            ids = await claim()
            spent += backend_cpu(self.pid) - before
            if len(ids) != CLAIM:
                raise RuntimeError(f"a claim took {len(ids)} of {CLAIM}")
        return 1000 * spent / claims

    async def deliveries(self) -> list[uuid.UUID]:
        claimed = await webhooks_queue.claim_deliveries(
            self.pool, CLAIM, 60.0, [], in_flight={}, capacity=CAPACITY, reserve=RESERVE
        )
        await webhooks_queue.release_deliveries(self.pool, claimed.rows)
        return [row["id"] for row in claimed.rows]

    async def submissions(self) -> list[uuid.UUID]:
        claimed = await jobs_queue.claim_submissions(self.pool, CLAIM, 60.0)
        ids = [row["id"] for row in claimed.rows]
        await self.pool.execute(_UNLEASE_JOBS, ids)
        return ids


async def _queue(ctx: Context, clients: int, due_each: int) -> Queue:
    database_url = await ctx.postgres.create_database("claims")
    admin = await connect(database_url)
    request = job_request()
    await admin.execute(_CLIENTS, clients)
    await admin.execute(_DELIVERIES, orjson.dumps({"type": "job.succeeded"}).decode(), due_each)
    await admin.execute(
        _JOBS,
        request["model"],
        orjson.dumps(request["input"]).decode(),
        orjson.dumps(request["metadata"]).decode(),
        due_each,
    )
    await admin.execute("VACUUM ANALYZE")
    pool = await create_pool(database_url, min_size=1, max_size=1)
    async with pool.acquire() as conn:
        pid = await conn.fetchval("SELECT pg_backend_pid()")
    return Queue(pool, admin, pid)


async def run(ctx: Context) -> Report:
    opts = ctx.options
    report = ctx.report(
        "claims",
        f"Postgres CPU per claim of {CLAIM}, work due for many clients",
        baseline="the same claims, all the work held by one client",
        goal=f"at 1,000 clients, within {GOAL:g}x the one-client claim",
    )
    sizes = [10] if opts.smoke else [100, 1000]
    runs = 1 if opts.smoke else opts.runs
    claims = 10 if opts.smoke else CLAIMS
    measured: dict[tuple[str, int], dict[str, list[float]]] = {}
    for clients in sizes:
        many = await _queue(ctx, clients, DUE_EACH)
        one = await _queue(ctx, 1, DUE_EACH * clients)
        try:
            for kind in ("deliveries", "submissions"):
                figures = measured.setdefault((kind, clients), {"many": [], "one": []})
                # Warm: the plan, the caches.
                await getattr(many, kind)()
                await getattr(one, kind)()
                for i in range(runs):
                    pair = [("many", many), ("one", one)]
                    for label, side in pair if i % 2 == 0 else reversed(pair):
                        figures[label].append(await side.per_claim(getattr(side, kind), claims))
        finally:
            for side in (many, one):
                await side.pool.close()
                await side.admin.close()
    for (kind, clients), figures in measured.items():
        figure = Figure(
            f"{kind} claim, {clients:,} clients with {DUE_EACH} due each",
            "ms",
            figures["many"],
            figures["one"],
        )
        if clients == 1000:
            figure.goal = f"ratio <= {GOAL:g}"
            figure.met = figure.ratio is not None and figure.ratio <= GOAL
        report.figures.append(figure)
    report.settings = {
        "claim": CLAIM,
        "due_each": DUE_EACH,
        "claims_per_run": claims,
        "runs": runs,
        "delivery_capacity": CAPACITY,
        "delivery_reserve": RESERVE,
        "submission_caps": "none (account and clients)",
    }
    return report
