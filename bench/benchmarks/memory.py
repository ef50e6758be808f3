"""6. Memory: the peak resident memory of one `falrelay serve` taken through the work of
benchmarks 1-3 in turn: intake at 64 connections (whose jobs also run through the fake fal
and come back as webhooks: end to end), then a burst of pending deliveries (fan-out)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time

import orjson

from app.db.wakeup import CHANNEL
from bench.benchmarks.common import check_errors, connect, load_summary, wait_until
from bench.benchmarks.fanout import INSERT_PENDING
from bench.benchmarks.stack import start_stack
from bench.context import Context
from bench.load import LoadSpec
from bench.processes import Process
from bench.report import Figure, Report
from bench.workload import job_request_json, succeeded_event

GOAL_MIB = 200.0


async def run(ctx: Context) -> Report:
    opts = ctx.options
    report = ctx.report(
        "memory",
        "peak RSS of one `falrelay serve` through intake, end to end and fan-out",
        baseline="none",
        goal=f"< {GOAL_MIB:.0f} MiB",
    )
    duration = 1.0 if opts.smoke else opts.duration_s
    deliveries = 300 if opts.smoke else 20_000
    database_url = await ctx.postgres.create_database("memory")
    samples: list[tuple[float, float]] = []

    with ctx.processes("memory") as procs:
        # wrk's 64 connections create jobs faster than one serve submits them: the queued-jobs
        # cap would answer the excess 409, lighter than a 201. Lifted, the backlog (and the
        # memory it takes) is what the load makes it.
        stack = await start_stack(procs, database_url, default_max_queued_jobs="unlimited")
        started_rss = stack.serve.rss_mib() or 0.0
        sampler = asyncio.create_task(_sample(stack.serve, samples))
        try:
            result = await ctx.load(
                LoadSpec(
                    base_url=stack.serve_url,
                    paths=["/v1/jobs"],
                    method="POST",
                    headers=stack.headers,
                    body=job_request_json(),
                    idempotency_prefix=f"{secrets.token_hex(3)}-",
                    connections=8 if opts.smoke else 64,
                    duration_s=duration,
                    max_requests=150 if opts.smoke else 1_000_000,
                )
            )
            check_errors(result, "intake", report.notes)
            report.details["intake"] = load_summary(result)
            await stack.wait_delivered(result.ok, within=120)
            after_e2e = stack.serve.peak_rss_mib()

            conn = await connect(database_url)
            try:
                payload = succeeded_event("job_bench", "2026-01-01T00:00:00Z")
                await conn.execute(
                    INSERT_PENDING,
                    stack.client_id,
                    orjson.dumps(payload).decode(),
                    deliveries,
                    stack.endpoint_id,
                )
                await conn.execute("SELECT pg_notify($1, 'deliver')", CHANNEL)

                async def drained() -> bool:
                    pending = await conn.fetchval("SELECT EXISTS (SELECT FROM delivery_queue)")
                    return not pending

                await wait_until(drained, within=120, interval=0.1)
            finally:
                await conn.close()
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
        peak = stack.serve.peak_rss_mib() or 0.0
        end_rss = stack.serve.rss_mib() or 0.0

    figure = Figure("peak RSS of falrelay serve", "MiB", [peak], goal=f"< {GOAL_MIB:.0f} MiB")
    figure.met = peak < GOAL_MIB
    report.figures = [
        figure,
        Figure("RSS when ready", "MiB", [started_rss]),
        Figure("peak RSS after intake + end to end", "MiB", [after_e2e or 0.0]),
        Figure("RSS at the end", "MiB", [end_rss]),
    ]
    report.settings = {
        "intake_seconds": duration,
        "deliveries": deliveries,
        "connections": 64,
        "falrelay": "falrelay serve, defaults but FALRELAY_DEFAULT_MAX_QUEUED_JOBS=unlimited",
    }
    report.details["rss_samples_mib"] = samples[:: max(1, len(samples) // 200)]
    return report


async def _sample(process: Process, into: list[tuple[float, float]]) -> None:
    started = time.monotonic()
    while True:
        rss = process.rss_mib()
        if rss is not None:
            into.append((round(time.monotonic() - started, 1), round(rss, 1)))
        await asyncio.sleep(0.25)
