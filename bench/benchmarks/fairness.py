"""Submission fairness: client B's jobs while client A's backlog of 1,000 waits for fal.

One `falrelay serve` per variant, each on a database of its own, with
`FALRELAY_FAL_MAX_IN_FLIGHT=10`, and the fake fal taking 1 s to run each request. Client A
queues `A_JOBS` jobs; once they are all stored, client B posts `B_JOBS`. B's latency is its
job's `completed_at` (Postgres's clock) minus the moment just before its POST was sent (the same
machine's clock). Variants: falrelay as it is (fair share), and the baseline,
`FALRELAY_FAIR_SHARE=false` (the old claim: first due, first sent, across clients). Each variant
stops once B's jobs are done: A's backlog is not drained (at 10 in flight and 1 s a job, that
is ~100 s more per variant and measures nothing about B).
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

import httpx

from bench import stats
from bench.benchmarks.common import HARNESS_TIMEOUT, connect, wait_until
from bench.context import Context, create_api_key, start_fakefal, start_falrelay
from bench.processes import HOST, Processes, free_port
from bench.report import Figure, Report

A_JOBS = 1_000
B_JOBS = 10
MAX_IN_FLIGHT = 10
RUN_LATENCY_S = 1.0
GOAL_S = 5.0
BODY = {"input": {"prompt": "a red fox in snow", "resolution": "1K"}}


async def _post_many(api: httpx.AsyncClient, n: int, parallel: int = 16) -> list[str]:
    ids: list[str] = []
    gate = asyncio.Semaphore(parallel)

    async def one() -> None:
        async with gate:
            response = await api.post("/v1/jobs", json=BODY)
            response.raise_for_status()
            ids.append(response.json()["id"])

    await asyncio.gather(*(one() for _ in range(n)))
    return ids


async def _variant(
    ctx: Context, procs: Processes, fal_url: str, name: str, fair: bool, a_jobs: int, b_jobs: int
) -> dict[str, Any]:
    database_url = await ctx.postgres.create_database("fairness")
    _, a_key = await create_api_key(database_url, "tenant-a")
    _, b_key = await create_api_key(database_url, "tenant-b")
    port = free_port()
    serve_url = f"http://{HOST}:{port}"
    await start_falrelay(
        procs,
        "serve",
        database_url,
        name=f"falrelay-serve-{name}",
        port=port,
        fal_queue_url=fal_url,
        fal_jwks_url=f"{fal_url}/.well-known/jwks.json",
        public_base_url=serve_url,
        fal_max_in_flight=MAX_IN_FLIGHT,
        fair_share=fair,
        # Intake of A's backlog must not be what is measured: no queued-jobs cap.
        default_max_queued_jobs="unlimited",
        # Stopped with A's backlog at fal: a drain would only wait out its bound.
        shutdown_timeout_seconds=2,
    )

    def client(key: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=serve_url,
            trust_env=False,
            headers={"Authorization": f"Bearer {key}"},
            timeout=HARNESS_TIMEOUT,
        )

    conn = await connect(database_url)
    try:
        async with client(a_key) as a, client(b_key) as b:
            a_started = time.time()
            await _post_many(a, a_jobs)
            a_stored = time.time()
            sent_at: dict[str, float] = {}

            async def post_b() -> None:
                at = time.time()
                response = await b.post("/v1/jobs", json=BODY)
                response.raise_for_status()
                sent_at[response.json()["id"]] = at

            await asyncio.gather(*(post_b() for _ in range(b_jobs)))

            async def b_done() -> bool:
                jobs = [(await b.get(f"/v1/jobs/{job_id}")).json() for job_id in sent_at]
                return all(job["status"] in ("succeeded", "failed") for job in jobs)

            await wait_until(b_done, within=a_jobs * RUN_LATENCY_S / MAX_IN_FLIGHT + 120)
            b_jobs_seen = [(await b.get(f"/v1/jobs/{job_id}")).json() for job_id in sent_at]
        ended = time.time()
        latencies = [
            datetime.fromisoformat(job["completed_at"]).timestamp() - sent_at[job["id"]]
            for job in b_jobs_seen
        ]
        a_done = await conn.fetchval(
            "SELECT count(*) FROM jobs j JOIN clients c ON c.id = j.client_id "
            "WHERE c.name = 'tenant-a' AND j.status = 'succeeded'"
        )
        return {
            "b_latency_s": latencies,
            "b_failed": sum(1 for job in b_jobs_seen if job["status"] != "succeeded"),
            "a_intake_s": a_stored - a_started,
            "a_succeeded": a_done,
            "a_jobs_per_s": a_done / (ended - a_started),
            "seconds": ended - a_started,
        }
    finally:
        await conn.close()


async def run(ctx: Context) -> Report:
    opts = ctx.options
    a_jobs = 30 if opts.smoke else A_JOBS
    b_jobs = 3 if opts.smoke else B_JOBS
    report = ctx.report(
        "fairness",
        f"client B's {b_jobs} jobs (POST to succeeded) behind client A's backlog of {a_jobs}, "
        f"FALRELAY_FAL_MAX_IN_FLIGHT={MAX_IN_FLIGHT}, fal run latency {RUN_LATENCY_S:g} s",
        baseline="the same build with FALRELAY_FAIR_SHARE=false (the old claim: first due, "
        "first sent, across clients)",
        goal=f"B's p100 < {GOAL_S:g} s with fair share",
    )
    results: dict[str, dict[str, Any]] = {}
    with ctx.processes("fairness") as procs:
        _, fal_url = await start_fakefal(procs)
        async with httpx.AsyncClient(trust_env=False, timeout=HARNESS_TIMEOUT) as http:
            response = await http.patch(
                f"{fal_url}/_fake/config", json={"run_latency": RUN_LATENCY_S}
            )
            response.raise_for_status()
        results["fair"] = await _variant(ctx, procs, fal_url, "fair", True, a_jobs, b_jobs)
        results["fifo"] = await _variant(ctx, procs, fal_url, "fifo", False, a_jobs, b_jobs)
    fair, fifo = results["fair"], results["fifo"]
    p50 = Figure(
        "B POST→succeeded p50",
        "s",
        [stats.percentile(fair["b_latency_s"], 50) or 0.0],
        [stats.percentile(fifo["b_latency_s"], 50) or 0.0],
    )
    p100 = Figure(
        "B POST→succeeded p100", "s", [max(fair["b_latency_s"])], [max(fifo["b_latency_s"])]
    )
    p100.goal = f"< {GOAL_S:g} s"
    p100.met = max(fair["b_latency_s"]) < GOAL_S
    throughput = Figure("A jobs/s meanwhile", "jobs/s", [fair["a_jobs_per_s"]],
                        [fifo["a_jobs_per_s"]])  # fmt: skip
    report.figures = [p50, p100, throughput]
    report.settings = {
        "a_jobs": a_jobs,
        "b_jobs": b_jobs,
        "fal_max_in_flight": MAX_IN_FLIGHT,
        "fakefal_run_latency_s": RUN_LATENCY_S,
        "serve": "falrelay serve, webhooks from the fake fal, defaults otherwise",
    }
    report.details = results
    if fair["b_failed"] or fifo["b_failed"]:
        report.notes.append(f"B jobs failed: fair {fair['b_failed']}, fifo {fifo['b_failed']}")
    report.notes.append(
        "each variant stops when B's jobs are done; A's backlog is not drained "
        "(A jobs/s is over the variant's whole time, A's intake included)"
    )
    return report
