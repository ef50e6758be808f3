"""3. Fan-out: webhook deliveries a second from one `falrelay worker` process to a local
receiver.

N pending deliveries (one `job.succeeded` event each, to one endpoint) are inserted in one
statement while the worker idles; the clock starts when that commits (a NOTIFY wakes the
worker) and stops when no delivery is pending. Baseline in the same run:
bench/baselines/fanout_loop.py posting the same body and headers N times, 64 in flight.
With --experiments, workers with other settings or proposed changes (bench/variants.py) run
too, each on a database of its own so that no two workers share a queue.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from app import ids
from app.db.pool import create_pool
from app.db.wakeup import CHANNEL
from app.ids import EVENT_ID_PREFIX
from app.webhooks import fanout, repository, signing
from bench.benchmarks.common import chosen_experiments, connect, wait_until
from bench.context import Context, CpuMeter, create_api_key, start_receiver, start_worker
from bench.processes import Process, Processes
from bench.report import Figure, Report
from bench.workload import succeeded_event

CONCURRENCY = 64
RATIO_GOAL = 0.7
# (label, bench/variants.py variants, FALRELAY_* settings), each a worker of its own.
EXPERIMENTS: list[tuple[str, str, dict[str, Any]]] = [
    # More slots than the baseline's 64 in flight: whether slots wait on claims, not CPU.
    (
        "FALRELAY_DELIVERY_CONCURRENCY=128",
        "",
        {"delivery_concurrency": 128, "delivery_per_endpoint_concurrency": 128},
    ),
]

# One event and one delivery per row, as `fanout.record_event` writes them for a job with one
# subscribed endpoint, N at a time.
INSERT_PENDING = f"""
WITH ev AS (
    INSERT INTO events (id, client_id, job_id, type, payload, created_at)
    SELECT uuid7(), $1, NULL, 'job.succeeded', $2::jsonb, now()
    FROM generate_series(1, $3)
    RETURNING id
), queued AS (
    INSERT INTO deliveries (id, client_id, event_id, job_id, endpoint_id, url, next_attempt_at)
    SELECT uuid7(), $1, ev.id, NULL, $4, NULL, now() FROM ev
    RETURNING id, client_id, event_id, endpoint_id, url, next_attempt_at
)
{fanout.ENQUEUE} FROM queued
"""


@dataclass
class Lane:
    """One worker on a database of its own, with a client and an endpoint at the receiver."""

    name: str
    worker: Process
    conn: asyncpg.Connection[Any]
    client_id: uuid.UUID
    endpoint_id: uuid.UUID
    secret: str
    meter: CpuMeter
    rates: list[float] = field(default_factory=list)
    cpu: list[dict[str, float]] = field(default_factory=list)

    async def deliver(self, payload: dict[str, Any], n: int) -> float:
        """Seconds from the commit of n pending deliveries until none is pending."""
        await self.conn.execute(
            INSERT_PENDING, self.client_id, orjson.dumps(payload).decode(), n, self.endpoint_id
        )
        self.meter.start()
        started = time.perf_counter()
        await self.conn.execute("SELECT pg_notify($1, 'deliver')", CHANNEL)

        # Whether any is pending, not how many: this poll runs every 20 ms on the measured
        # server, and a count reads every pending entry, dead ones included (3-7 ms a poll
        # near the end of a 20,000-delivery run, as much Postgres time as the deliveries' own
        # claims on a slow run).
        async def drained() -> bool:
            pending = await self.conn.fetchval("SELECT EXISTS (SELECT FROM delivery_queue)")
            return not pending

        await wait_until(drained, within=max(60.0, n / 100), interval=0.02)
        elapsed = time.perf_counter() - started
        self.cpu.append(self.meter.per_unit(n))
        return elapsed


async def _open_lane(
    ctx: Context,
    procs: Processes,
    receiver: Process,
    hook_url: str,
    name: str,
    variants: str = "",
    settings: dict[str, Any] | None = None,
) -> Lane:
    database_url = await ctx.postgres.create_database("fanout")
    client_id, _ = await create_api_key(database_url)
    secret = signing.new_secret()
    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        endpoint = await repository.insert_endpoint(
            pool,
            endpoint_id=ids.uuid7(),
            client_id=client_id,
            url=hook_url,
            description="bench receiver",
            event_types=["job.succeeded"],
            secret=secret,
        )
    finally:
        await pool.close()
    worker = await start_worker(
        procs,
        database_url,
        name="falrelay-worker" if name == "falrelay" else f"falrelay-worker-{name}",
        variants=variants,
        **{
            "allow_private_webhook_urls": True,
            "delivery_concurrency": CONCURRENCY,
            "delivery_per_endpoint_concurrency": CONCURRENCY,
            **(settings or {}),
        },
    )
    meter = ctx.cpu_meter(worker=worker, receiver=receiver)
    return Lane(name, worker, await connect(database_url), client_id, endpoint["id"], secret, meter)


async def run(ctx: Context) -> Report:
    opts = ctx.options
    report = ctx.report(
        "fanout",
        f"webhook deliveries/s, one `falrelay worker`, {CONCURRENCY} in flight, one receiver",
        baseline="bench/baselines/fanout_loop.py: aiohttp ClientSession (TCPConnector(limit="
        f"{CONCURRENCY})) on uvloop posting the same body and headers, {CONCURRENCY} in flight",
        goal=f"ratio >= {RATIO_GOAL}",
    )
    count = 300 if opts.smoke else 20_000
    runs = 1 if opts.smoke else opts.runs
    lanes: list[Lane] = []
    base_rates: list[float] = []
    asyncio_rates: list[float] = []
    # The bare loop on falrelay's own HTTP client, and each loop's CPU per POST, by client.
    client_rates: list[float] = []
    loop_cpu: dict[str, list[float]] = {}

    with ctx.processes("fanout") as procs:
        receiver, receiver_url = await start_receiver(procs)
        hook_url = f"{receiver_url}/count/hook"
        experiments = chosen_experiments(report, EXPERIMENTS, opts.experiments)
        try:
            lanes.append(await _open_lane(ctx, procs, receiver, hook_url, "falrelay"))
            for label, variants, settings in experiments:
                lanes.append(
                    await _open_lane(ctx, procs, receiver, hook_url, label, variants, settings)
                )
            main = lanes[0]
            now = datetime.now(UTC)
            payload = succeeded_event("job_" + uuid.uuid4().hex, now.isoformat())
            # The bytes the worker sends: the event's JSON as Postgres renders it (its claim
            # returns the payload as text, migration 0028).
            body = (
                await main.conn.fetchval("SELECT $1::jsonb::text", orjson.dumps(payload).decode())
            ).encode()
            message_id = ids.encode(EVENT_ID_PREFIX, ids.uuid7())
            headers = {
                "Content-Type": "application/json",
                "User-Agent": "falrelay-webhooks/1",
                **signing.sign_headers(message_id, body, [main.secret], at=now),
            }

            def baseline(n: int, loop: str = "uvloop", client: str = "aiohttp") -> float:
                elapsed, cpu = _baseline_loop(
                    hook_url, body, headers, n, loop, client, ctx.work_dir
                )
                loop_cpu.setdefault(client, []).append(1000 * cpu / n)
                return elapsed

            if not opts.smoke:
                for lane in lanes:
                    await lane.deliver(payload, count // 20)
                await asyncio.to_thread(baseline, count // 20)
            loop_cpu.clear()  # the warm-up's
            for i in range(runs):
                steps: list[Lane | str] = [*lanes, "baseline", "asyncio", "falrelay client"]
                for step in steps if i % 2 == 0 else reversed(steps):
                    if isinstance(step, Lane):
                        step.rates.append(count / await step.deliver(payload, count))
                    elif step == "baseline":
                        base_rates.append(count / await asyncio.to_thread(baseline, count))
                    elif step == "asyncio":
                        elapsed = await asyncio.to_thread(baseline, count, "asyncio")
                        asyncio_rates.append(count / elapsed)
                    else:
                        elapsed = await asyncio.to_thread(baseline, count, "uvloop", "falrelay")
                        client_rates.append(count / elapsed)

            if opts.profile:
                profiling = await ctx.start_profile(main.worker.pid, 6, "fanout-worker")
                await main.deliver(payload, count)
                report.details["profile_worker"] = await profiling.summary()
            not_succeeded = 0
            for lane in lanes:
                not_succeeded += await lane.conn.fetchval(
                    "SELECT count(*) FROM deliveries WHERE status <> 'succeeded'"
                )
                # Every delivery succeeded at its first attempt here, so any extra attempt
                # is a delivery sent twice (a lease that ran out before its result was
                # recorded).
                extra = await lane.conn.fetchval(
                    "SELECT (SELECT count(*) FROM delivery_attempts) - "
                    "(SELECT count(*) FROM deliveries)"
                )
                report.details.setdefault("sent_twice", {})[lane.name] = extra
                if extra:
                    report.notes.append(f"{lane.name}: {extra} deliveries were sent twice")
        finally:
            for lane in lanes:
                await lane.conn.close()

    main = lanes[0]
    rate = Figure("deliveries", "deliveries/s", main.rates, base_rates)
    rate.goal = f"ratio >= {RATIO_GOAL}"
    rate.met = rate.ratio is not None and rate.ratio >= RATIO_GOAL
    report.figures = [
        rate,
        Figure("worker CPU per delivery", "ms", [c.get("worker", 0.0) for c in main.cpu]),
        Figure("Postgres CPU per delivery", "ms", [c.get("postgres", 0.0) for c in main.cpu]),
        Figure("baseline on the default asyncio loop", "deliveries/s", asyncio_rates, base_rates),
        Figure(
            "baseline loop on falrelay's HTTP client (app.http_client)",
            "deliveries/s",
            client_rates,
            base_rates,
        ),
        Figure(
            "bare loop CPU per POST: falrelay's client vs aiohttp (uvloop)",
            "ms",
            loop_cpu.get("falrelay", []),
            loop_cpu.get("aiohttp", []),
        ),
    ]
    for lane in lanes[1:]:
        report.figures.append(
            Figure(
                f"experiment: {lane.name}",
                "deliveries/s",
                lane.rates,
                base_rates,
            )
        )
    report.settings = {
        "deliveries_per_run": count,
        "runs": runs,
        "concurrency": CONCURRENCY,
        "body_bytes": len(body),
        "worker": "falrelay worker, FALRELAY_DELIVERY_CONCURRENCY=64, "
        "FALRELAY_DELIVERY_PER_ENDPOINT_CONCURRENCY=64, FALRELAY_ALLOW_PRIVATE_WEBHOOK_URLS=true",
    }
    report.details["cpu_ms_per_delivery"] = {lane.name: lane.cpu for lane in lanes}
    report.details["not_succeeded"] = not_succeeded
    if not_succeeded:
        report.notes.append(f"{not_succeeded} deliveries did not succeed")
    return report


def _baseline_loop(
    url: str, body: bytes, headers: dict[str, str], n: int, loop: str, client: str, work_dir: Path
) -> tuple[float, float]:
    """The loop's wall seconds and CPU seconds for `n` POSTs."""
    spec = {"url": url, "body": body.decode(), "headers": headers, "count": n,
            "concurrency": CONCURRENCY, "loop": loop, "client": client}  # fmt: skip
    with tempfile.NamedTemporaryFile("w", suffix=".json", dir=work_dir, delete=False) as f:
        json.dump(spec, f)
    done = subprocess.run(
        [sys.executable, "-m", "bench.baselines.fanout_loop", f.name],
        capture_output=True, text=True, timeout=max(60.0, n / 100), check=True,
    )  # fmt: skip
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["ok"] != n:
        raise RuntimeError(f"baseline: only {result['ok']} of {n} posts succeeded")
    return float(result["elapsed_s"]), float(result["cpu_s"])
