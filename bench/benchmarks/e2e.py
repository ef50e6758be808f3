"""2. End to end: jobs posted at a fixed rate to one `falrelay serve`, through the fake fal
(zero latency), until the client's receiver has each job's `job.succeeded` webhook.

No baseline (the issue names none). What falrelay adds is measured at the receiver: the time
from the event (stamped by Postgres in the transaction that applied fal's callback) to the
delivery's arrival, per job. Load is open-loop (the asyncio driver: wrk cannot hold a rate).
With --experiments a second stack runs `falrelay serve` with every proposed change of
bench/variants.py at once (if there is any), on a database of its own, the runs alternating
with the first.
"""

from __future__ import annotations

import secrets
from typing import Any

from bench import stats
from bench.benchmarks.common import check_errors, chosen_experiments, load_summary
from bench.benchmarks.stack import Stack, start_stack
from bench.context import Context, CpuMeter
from bench.load import LoadSpec
from bench.report import Figure, Report
from bench.variants import VARIANTS
from bench.workload import job_request_json

SUSTAINED_RATE = 500.0
LATENCY_RATE = 200.0
ADDED_P99_GOAL_MS = 25.0
# Open loop: at most this many requests in flight before the driver itself queues them.
IN_FLIGHT = 512
# Every lever of bench/variants.py at once, as one experiment.
EXPERIMENTS = [",".join(VARIANTS)] if VARIANTS else []


class Runner:
    def __init__(self, ctx: Context, stack: Stack, report: Report) -> None:
        self.ctx = ctx
        self.stack = stack
        self.report = report
        self.meter: CpuMeter = ctx.cpu_meter(
            serve=stack.serve, fakefal=stack.fakefal, receiver=stack.receiver
        )
        self.body = job_request_json()
        self.token = secrets.token_hex(3)

    async def run(self, rate: float, seconds: float, label: str) -> dict[str, Any]:
        stack = self.stack
        await stack.reset_receiver()
        self.meter.start()
        result = await self.ctx.load(
            LoadSpec(
                base_url=stack.serve_url,
                paths=["/v1/jobs"],
                method="POST",
                headers=stack.headers,
                body=self.body,
                idempotency_prefix=f"{self.token}-{label}-",
                connections=IN_FLIGHT,
                duration_s=seconds,
                rate=rate,
            )
        )
        check_errors(result, f"{rate:.0f} jobs/s {label}", self.report.notes)
        await stack.wait_delivered(result.ok, within=seconds + 60)
        received = await stack.receiver_stats()
        load_end = result.started_at + result.duration_s
        last = received["last_at"] or load_end
        span = last - result.started_at
        return {
            "rate": rate,
            "posted": result.ok,
            "delivered": received["jobs"],
            "duplicates": received["duplicates"],
            "delivered_per_s": received["jobs"] / span if span > 0 else 0.0,
            # How long after the last POST the last webhook arrived: a backlog shows here.
            "lag_s": last - load_end,
            "added_p50_ms": stats.percentile(received["added_ms"], 50),
            "added_p99_ms": stats.percentile(received["added_ms"], 99),
            "e2e_p50_ms": stats.percentile(received["e2e_ms"], 50),
            "e2e_p99_ms": stats.percentile(received["e2e_ms"], 99),
            "cpu_ms_per_job": self.meter.per_unit(received["jobs"]),
            "load": load_summary(result),
        }


async def run(ctx: Context) -> Report:
    opts = ctx.options
    report = ctx.report(
        "e2e",
        "jobs at a fixed rate through one `falrelay serve` and the fake fal to the receiver",
        baseline="none (the issue names none): the latency falrelay adds, fal's callback "
        "applied -> the client's webhook received",
        goal=f"{SUSTAINED_RATE:.0f} jobs/s sustained; added latency p99 < "
        f"{ADDED_P99_GOAL_MS:.0f} ms at {LATENCY_RATE:.0f} jobs/s",
    )
    rates = [20.0] if opts.smoke else [LATENCY_RATE, SUSTAINED_RATE]
    duration = 1.0 if opts.smoke else opts.duration_s
    runs = 1 if opts.smoke else opts.runs
    experiments = chosen_experiments(report, EXPERIMENTS, opts.experiments)
    variants = ["", *experiments]
    measured: dict[str, dict[float, list[dict[str, Any]]]] = {
        v: {rate: [] for rate in rates} for v in variants
    }

    with ctx.processes("e2e") as procs:
        runners: dict[str, Runner] = {}
        for variant in variants:
            database_url = await ctx.postgres.create_database("e2e")
            stack = await start_stack(procs, database_url, variants=variant)
            runners[variant] = Runner(ctx, stack, report)
        if not opts.smoke:
            for runner in runners.values():
                await runner.run(LATENCY_RATE, opts.warmup_s, "warm")
        for i in range(runs):
            for rate in rates:
                for variant in variants if i % 2 == 0 else reversed(variants):
                    result = await runners[variant].run(rate, duration, f"r{i}-{rate:.0f}")
                    measured[variant][rate].append(result)
        main = runners[""]
        if opts.profile:
            profiling = await ctx.start_profile(main.stack.serve.pid, duration, "e2e-serve")
            await main.run(SUSTAINED_RATE, duration, "profile")
            report.details["profile_serve"] = await profiling.summary()
        report.details["serve_peak_rss_mib"] = main.stack.serve.peak_rss_mib()

    for variant in variants:
        report.figures += _figures(report, measured[variant], variant)
    report.settings = {
        "rates": rates,
        "duration_s": duration,
        "runs": runs,
        "falrelay": "falrelay serve, defaults; FALRELAY_ALLOW_PRIVATE_WEBHOOK_URLS=true",
        "in_flight_cap": IN_FLIGHT,
        "experiment": experiments[0] if experiments else None,
    }
    report.details["runs"] = {
        f"{variant or 'falrelay'} at {rate:.0f}": rs
        for variant, by_rate in measured.items()
        for rate, rs in by_rate.items()
    }
    return report


def _figures(
    report: Report, measured: dict[float, list[dict[str, Any]]], variant: str
) -> list[Figure]:
    prefix = f"experiment ({variant}): " if variant else ""
    figures = []
    for rate, rs in measured.items():
        at = f"at {rate:.0f} jobs/s"

        def figure(name: str, unit: str, key: str, rs: list[dict[str, Any]] = rs) -> Figure:
            return Figure(prefix + name, unit, [r[key] or 0.0 for r in rs])

        delivered = figure(f"delivered {at} offered", "jobs/s", "delivered_per_s")
        added = figure(f"added latency p99 {at}", "ms", "added_p99_ms")
        complete = all(r["delivered"] >= r["posted"] > 0 for r in rs)
        if not variant and rate == SUSTAINED_RATE:
            delivered.goal = f">= {0.95 * SUSTAINED_RATE:.0f} and every job delivered"
            delivered.met = complete and (delivered.value or 0) >= 0.95 * SUSTAINED_RATE
        if not variant and rate == LATENCY_RATE:
            added.goal = f"< {ADDED_P99_GOAL_MS:.0f} ms"
            added.met = complete and (added.value or 1e9) < ADDED_P99_GOAL_MS
        if not complete:
            pairs = [(r["posted"], r["delivered"]) for r in rs]
            report.notes.append(f"{prefix}{at}: not every job was delivered (posted, got) {pairs}")
        if any(r["duplicates"] for r in rs):
            twice = [r["duplicates"] for r in rs]
            report.notes.append(f"{prefix}{at}: webhooks received twice, per run {twice}")

        def cpu(process: str, rs: list[dict[str, Any]] = rs, at: str = at) -> Figure:
            values = [r["cpu_ms_per_job"].get(process, 0.0) for r in rs]
            return Figure(prefix + f"{process} CPU per job {at}", "ms", values)

        figures += [
            delivered,
            figure(f"lag after load {at}", "s", "lag_s"),
            figure(f"added latency p50 {at}", "ms", "added_p50_ms"),
            added,
            figure(f"POST -> webhook p99 {at}", "ms", "e2e_p99_ms"),
            # The fake fal and Postgres share the 2 cores with serve: their CPU is serve's
            # budget too (a fake that falls behind shows here first).
            cpu("serve"),
            cpu("fakefal"),
            cpu("postgres"),
        ]
    return figures
