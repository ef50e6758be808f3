"""Delivery fairness: client B's webhook latency while client A's 200 endpoints hang.

One `falrelay worker` (default settings: 128 delivery slots, 32 per endpoint, 15 s delivery
timeout) per variant, each on a database of its own. Client A has 200 endpoints at a receiver
path that never answers and one `job.succeeded` event delivered to all of them; once A's
deliveries are in flight, client B (one endpoint at the same receiver, answering at once) gets
`B_EVENTS` events. B's latency is the receiver's arrival time minus the event's timestamp
(when its delivery rows were committed). Variants: falrelay as it is, and the baseline,
`FALRELAY_DELIVERY_FAIR_SHARE=false` (the old first-due-first-sent claim across clients).
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson

from app import ids
from app.db.pool import create_pool
from app.db.wakeup import CHANNEL
from app.webhooks import fanout, repository, signing
from bench.benchmarks.common import HARNESS_TIMEOUT, connect, wait_until
from bench.context import Context, create_api_key, start_receiver, start_worker
from bench.report import Figure, Report
from bench.workload import succeeded_event

HANGING = 200
B_EVENTS = 5
GOAL_S = 2.0

INSERT_EVENT = f"""
WITH ev AS (
    INSERT INTO events (id, client_id, job_id, type, payload, created_at)
    VALUES (uuid7(), $1, NULL, 'job.succeeded', $2::jsonb, now())
    RETURNING id
), queued AS (
    INSERT INTO deliveries (id, client_id, event_id, job_id, endpoint_id, url, next_attempt_at)
    SELECT uuid7(), $1, ev.id, NULL, e, NULL, now() FROM ev, unnest($3::uuid[]) AS e
    RETURNING id, client_id, event_id, endpoint_id, url, next_attempt_at
)
{fanout.ENQUEUE} FROM queued
"""


async def _endpoints(database_url: str, client_id: uuid.UUID, url: str, n: int) -> list[Any]:
    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        made = []
        for _ in range(n):
            endpoint = await repository.insert_endpoint(
                pool,
                endpoint_id=ids.uuid7(),
                client_id=client_id,
                url=url,
                description="bench",
                event_types=["job.succeeded"],
                secret=signing.new_secret(),
            )
            made.append(endpoint["id"])
        return made
    finally:
        await pool.close()


async def _variant(
    ctx: Context, procs: Any, receiver_url: str, name: str, fair: bool, hanging: int
) -> list[float]:
    """B's latencies in seconds, for one worker with fair share on or off."""
    database_url = await ctx.postgres.create_database("fairness")
    a_id, _ = await create_api_key(database_url, "tenant-a")
    b_id, _ = await create_api_key(database_url, "tenant-b")
    a_endpoints = await _endpoints(database_url, a_id, f"{receiver_url}/hang/a", hanging)
    b_endpoints = await _endpoints(database_url, b_id, f"{receiver_url}/e2e/{name}", 1)
    await start_worker(
        procs,
        database_url,
        name=f"falrelay-worker-{name}",
        allow_private_webhook_urls=True,
        delivery_fair_share=fair,
        # Stopped with A's deliveries hanging: a drain would only wait out its bound.
        shutdown_timeout_seconds=2,
    )
    conn = await connect(database_url)
    try:
        now = datetime.now(UTC).isoformat()
        payload = orjson.dumps(succeeded_event("job_" + uuid.uuid4().hex, now)).decode()
        await conn.execute(INSERT_EVENT, a_id, payload, a_endpoints)
        await conn.execute("SELECT pg_notify($1, 'deliver')", CHANNEL)

        async def a_hanging() -> bool:
            n = await conn.fetchval(
                "SELECT count(*) FROM delivery_queue WHERE client_id = $1 AND locked_until > now()",
                a_id,
            )
            return bool(n >= min(hanging, 64))

        await wait_until(a_hanging, within=30.0)
        async with httpx.AsyncClient(
            base_url=receiver_url, trust_env=False, timeout=HARNESS_TIMEOUT
        ) as http:
            await http.post("/reset")
            for _ in range(B_EVENTS):
                at = datetime.now(UTC).isoformat()
                body = orjson.dumps(succeeded_event("job_" + uuid.uuid4().hex, at)).decode()
                await conn.execute(INSERT_EVENT, b_id, body, b_endpoints)
                await conn.execute("SELECT pg_notify($1, 'deliver')", CHANNEL)

            async def b_arrived() -> bool:
                stats = (await http.get("/stats")).json()
                return bool(stats["jobs"] >= B_EVENTS)

            await wait_until(b_arrived, within=120.0, interval=0.1)
            stats = (await http.get("/stats")).json()
        return [ms / 1000 for ms in stats["added_ms"]]
    finally:
        await conn.close()


async def run(ctx: Context) -> Report:
    opts = ctx.options
    hanging = 20 if opts.smoke else HANGING
    report = ctx.report(
        "delivery-fairness",
        f"client B's webhook latency while client A's {hanging} endpoints hang, one worker",
        baseline="the same worker with FALRELAY_DELIVERY_FAIR_SHARE=false (the old claim: "
        "first due, first sent, across clients)",
        goal=f"B's p100 < {GOAL_S} s",
    )
    runs = 1 if opts.smoke else opts.runs
    fair: list[list[float]] = []
    fifo: list[list[float]] = []
    with ctx.processes("delivery-fairness") as procs:
        _, receiver_url = await start_receiver(procs)
        for i in range(runs):
            started = time.monotonic()
            fair.append(await _variant(ctx, procs, receiver_url, f"fair{i}", True, hanging))
            if not opts.smoke:
                fifo.append(await _variant(ctx, procs, receiver_url, f"fifo{i}", False, hanging))
            report.details.setdefault("run_seconds", []).append(time.monotonic() - started)
    p50 = Figure("B latency p50", "s", [sorted(r)[len(r) // 2] for r in fair],
                 [sorted(r)[len(r) // 2] for r in fifo])  # fmt: skip
    p100 = Figure("B latency p100", "s", [max(r) for r in fair], [max(r) for r in fifo])
    p100.goal = f"< {GOAL_S} s"
    p100.met = p100.value is not None and p100.value < GOAL_S
    report.figures = [p50, p100]
    report.settings = {
        "hanging_endpoints": hanging,
        "b_events": B_EVENTS,
        "runs": runs,
        "worker": "falrelay worker, defaults (128 slots, 32 per endpoint, 15 s timeout), "
        "FALRELAY_ALLOW_PRIVATE_WEBHOOK_URLS=true",
    }
    report.details["b_latency_s"] = {"fair": fair, "baseline": fifo}
    return report
