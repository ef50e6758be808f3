"""4. Queue: submissions a second through one `falrelay worker` (claim, a real HTTP submit to
the fake fal, record the answer and its `job.submitted` event), against procrastinate running
a no-op task on the same Postgres with the same job count.

Every worker is started first and idles; the clock starts when its batch of jobs commits
(falrelay: one INSERT of queued rows and a NOTIFY; procrastinate: `batch_defer_async`) and
stops when none is left to do. With --experiments, workers with proposed changes run too, each
on a database of its own.
"""

from __future__ import annotations

import asyncio
import importlib.util
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from app.db.pool import asyncpg_dsn
from app.db.wakeup import CHANNEL
from bench.benchmarks.common import chosen_experiments, connect, wait_until
from bench.benchmarks.rows import insert_queued_jobs
from bench.context import Context, CpuMeter, create_api_key, start_fakefal, start_worker
from bench.processes import Process, Processes, python_argv
from bench.report import Figure, Report

RATIO_GOAL = 5.0
PROCRASTINATE_CONCURRENCY = 10
MISSING = "procrastinate is not installed (pip install -e '.[bench]'): baseline skipped"
# (label, bench/variants.py variants, FALRELAY_* settings)
EXPERIMENTS: list[tuple[str, str, dict[str, Any]]] = [
    # The default before it became 128: a loop's rate is its concurrency over a step's wait.
    ("FALRELAY_WORKER_CONCURRENCY=32", "", {"worker_concurrency": 32}),
]


def procrastinate_available() -> bool:
    return importlib.util.find_spec("procrastinate") is not None


@dataclass
class Lane:
    name: str
    worker: Process
    conn: asyncpg.Connection[Any]
    client_id: uuid.UUID
    meter: CpuMeter
    rates: list[float] = field(default_factory=list)
    cpu: list[dict[str, float]] = field(default_factory=list)

    async def submit(self, n: int) -> float:
        await insert_queued_jobs(self.conn, self.client_id, n)
        self.meter.start()
        started = time.perf_counter()
        await self.conn.execute("SELECT pg_notify($1, 'submit')", CHANNEL)

        async def drained() -> bool:
            queued = await self.conn.fetchval("SELECT count(*) FROM jobs WHERE status = 'queued'")
            return bool(queued == 0)

        await wait_until(drained, within=max(60.0, n / 50), interval=0.02)
        elapsed = time.perf_counter() - started
        self.cpu.append(self.meter.per_unit(n))
        return elapsed


@dataclass
class Procrastinate:
    dsn: str
    worker: Process
    meter: CpuMeter
    rates: list[float] = field(default_factory=list)
    cpu: list[dict[str, float]] = field(default_factory=list)

    async def submit(self, n: int) -> float:
        from bench.baselines import procrastinate_queue

        await procrastinate_queue.defer(self.dsn, n)
        self.meter.start()
        started = time.perf_counter()
        conn = await asyncpg.connect(self.dsn)
        try:

            async def drained() -> bool:
                left = await conn.fetchval(
                    "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"
                )
                return bool(left == 0)

            await wait_until(drained, within=max(60.0, n / 50), interval=0.02)
        finally:
            await conn.close()
        elapsed = time.perf_counter() - started
        self.cpu.append(self.meter.per_unit(n))
        return elapsed


async def _open_lane(
    ctx: Context,
    procs: Processes,
    fakefal: Process,
    fal_url: str,
    name: str,
    variants: str,
    settings: dict[str, Any],
) -> Lane:
    database_url = await ctx.postgres.create_database("queue")
    client_id, _ = await create_api_key(database_url)
    worker = await start_worker(
        procs,
        database_url,
        name="falrelay-worker" if name == "falrelay" else f"falrelay-worker-{name}",
        variants=variants,
        fal_queue_url=fal_url,
        # Poll mode (no PUBLIC_BASE_URL), first status poll an hour away: the reconciler
        # stays out of the measurement.
        poll_interval_seconds=3600,
        # Nothing finishes at fal here (no webhook, no poll), so the account-wide cap would
        # stop the run at 40 jobs: lift it past the batch. The fair claim (its advisory lock
        # and per-client counts) is still what every submission goes through.
        fal_max_in_flight=1_000_000,
        **settings,
    )
    meter = ctx.cpu_meter(worker=worker, fakefal=fakefal)
    return Lane(name, worker, await connect(database_url), client_id, meter)


async def _start_procrastinate(ctx: Context, procs: Processes, settle: float) -> Procrastinate:
    from bench.baselines import procrastinate_queue

    dsn = asyncpg_dsn(await ctx.postgres.create_database("procrastinate", migrated=False))
    await procrastinate_queue.apply_schema(dsn)
    argv = python_argv(
        "-m", "bench.baselines.procrastinate_queue", dsn, str(PROCRASTINATE_CONCURRENCY)
    )
    worker = procs.start("procrastinate-worker", argv)
    await worker.wait_log("procrastinate worker ready")
    await asyncio.sleep(settle)  # its LISTEN and first poll come after the line is printed
    return Procrastinate(dsn, worker, ctx.cpu_meter(worker=worker))


async def run(ctx: Context) -> Report:
    opts = ctx.options
    report = ctx.report(
        "queue",
        "submission claims/s: claim, submit to the fake fal, record (one `falrelay worker`)",
        baseline=f"procrastinate worker (concurrency {PROCRASTINATE_CONCURRENCY}) running a "
        "no-op task on the same Postgres, the same number of jobs",
        goal=f"ratio >= {RATIO_GOAL:.0f}",
    )
    count = 200 if opts.smoke else 5_000
    runs = 1 if opts.smoke else opts.runs
    baseline: Procrastinate | None = None
    if not procrastinate_available():
        report.notes.append(MISSING)
    experiments = chosen_experiments(report, EXPERIMENTS, opts.experiments)

    lanes: list[Lane] = []
    with ctx.processes("queue") as procs:
        fakefal, fal_url = await start_fakefal(procs)
        try:
            for name, variants, settings in [("falrelay", "", {}), *experiments]:
                lanes.append(
                    await _open_lane(ctx, procs, fakefal, fal_url, name, variants, settings)
                )
            if procrastinate_available():
                baseline = await _start_procrastinate(ctx, procs, 0.2 if opts.smoke else 1.0)
            if not opts.smoke:
                for lane in lanes:
                    await lane.submit(count // 10)
                if baseline is not None:
                    await baseline.submit(count // 10)
            for i in range(runs):
                steps: list[Lane | Procrastinate] = [*lanes, *([baseline] if baseline else [])]
                for step in steps if i % 2 == 0 else reversed(steps):
                    step.rates.append(count / await step.submit(count))
            main = lanes[0]
            if opts.profile:
                profiling = await ctx.start_profile(main.worker.pid, 4, "queue-worker")
                await main.submit(count)
                report.details["profile_worker"] = await profiling.summary()
            statuses = dict(
                await main.conn.fetch("SELECT status, count(*) FROM jobs GROUP BY status")
            )
        finally:
            for lane in lanes:
                await lane.conn.close()

    main = lanes[0]
    base_rates = baseline.rates if baseline else []
    base_cpu = baseline.cpu if baseline else []
    rate = Figure(
        "submissions", "jobs/s", main.rates, base_rates, goal=f"ratio >= {RATIO_GOAL:.0f}"
    )
    rate.met = None if baseline is None else (rate.ratio or 0) >= RATIO_GOAL
    report.figures = [
        rate,
        Figure(
            "worker CPU per job",
            "ms",
            [c.get("worker", 0.0) for c in main.cpu],
            [c.get("worker", 0.0) for c in base_cpu],
        ),
        Figure(
            "Postgres CPU per job",
            "ms",
            [c.get("postgres", 0.0) for c in main.cpu],
            [c.get("postgres", 0.0) for c in base_cpu],
        ),
        Figure("fake fal CPU per job", "ms", [c.get("fakefal", 0.0) for c in main.cpu]),
    ]
    for lane in lanes[1:]:
        report.figures.append(Figure(f"experiment: {lane.name}", "jobs/s", lane.rates, base_rates))
    report.settings = {
        "jobs_per_run": count,
        "runs": runs,
        "falrelay": "falrelay worker, defaults (FALRELAY_WORKER_CONCURRENCY=128), poll mode",
        "procrastinate_concurrency": PROCRASTINATE_CONCURRENCY,
    }
    report.details["job_statuses"] = statuses
    report.details["cpu_ms_per_job"] = {lane.name: lane.cpu for lane in lanes}
    report.details["cpu_ms_per_job"]["procrastinate"] = base_cpu
    if statuses.get("queued"):
        report.notes.append(f"{statuses['queued']} jobs were never submitted")
    return report
