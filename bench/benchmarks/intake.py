"""1. Intake: `POST /v1/jobs` throughput and latency at 64 connections on one `falrelay api`.

Baseline in the same run: bench/baselines/intake_app.py (FastAPI + asyncpg, same body, one
INSERT). The two servers run side by side on the same database; the load alternates between
them (ABBA order) so drift on this shared machine falls on both.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

from app.db.pool import asyncpg_dsn
from bench.baselines import intake_app
from bench.benchmarks.common import check_errors, chosen_experiments, connect, load_summary
from bench.context import Context, create_api_key, start_falrelay
from bench.load import LoadResult, LoadSpec
from bench.processes import HOST, free_port, python_argv
from bench.report import Figure, Report
from bench.workload import job_request_json

CONNECTIONS = 64
P99_GOAL_MS = 50.0
# A cap no run reaches: the capped process does the cap's work (grants to shards) and never refuses.
CAP_OUT_OF_REACH = 100_000_000
# (label, bench/variants.py variants, FALRELAY_* settings)
EXPERIMENTS: list[tuple[str, str, dict[str, Any]]] = [
    ("FALRELAY_ACCESS_LOG=false", "", {"access_log": False}),
]


async def run(ctx: Context) -> Report:
    opts = ctx.options
    report = ctx.report(
        "intake",
        f"POST /v1/jobs, {CONNECTIONS} connections, one `falrelay api` process",
        baseline="bench/baselines/intake_app.py: FastAPI + asyncpg pool (defaults), the same "
        "body validated by a pydantic model, one INSERT; uvicorn, one process",
        goal=f"req/s ratio >= 1.0 and p99 < {P99_GOAL_MS:.0f} ms",
    )
    database_url = await ctx.postgres.create_database("intake")
    _, key = await create_api_key(database_url)
    conn = await connect(database_url)
    try:
        await conn.execute(intake_app.SCHEMA)
    finally:
        await conn.close()

    body = job_request_json()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    duration = 1.0 if opts.smoke else opts.duration_s
    runs = 1 if opts.smoke else opts.runs
    token = secrets.token_hex(3)

    with ctx.processes("intake") as procs:
        port = free_port()
        baseline_url = f"http://{HOST}:{port}"
        baseline = procs.start(
            "baseline-intake",
            python_argv("-m", "uvicorn", "bench.baselines.intake_app:app", *_listen(port)),
            {intake_app.DSN_VARIABLE: asyncpg_dsn(database_url)},
        )
        (api, api_url), (capped, capped_url), _ = await asyncio.gather(
            # Every job stays queued (no worker runs): the queued-jobs cap would turn a fast
            # run into 409s, so it is lifted here as the baseline has none.
            start_falrelay(procs, "api", database_url, default_max_queued_jobs="unlimited"),
            # ...and set out of reach in a second process, which still does the cap's work.
            start_falrelay(
                procs,
                "api",
                database_url,
                name="falrelay-api-capped",
                default_max_queued_jobs=str(CAP_OUT_OF_REACH),
            ),
            baseline.wait_http(f"{baseline_url}/healthz"),
        )

        def spec(url: str, label: str, *, idempotent: bool, seconds: float) -> LoadSpec:
            return LoadSpec(
                base_url=url,
                paths=["/v1/jobs"],
                method="POST",
                headers=headers,
                body=body,
                idempotency_prefix=f"{token}-{label}-" if idempotent else None,
                connections=CONNECTIONS,
                duration_s=seconds,
            )

        # name -> (URL, send Idempotency-Key, the server process)
        targets = {
            "falrelay": (api_url, True, api),
            "falrelay, no Idempotency-Key": (api_url, False, api),
            "falrelay, queued-jobs cap": (capped_url, True, capped),
            "baseline": (baseline_url, True, baseline),
        }
        experiments = chosen_experiments(report, EXPERIMENTS, opts.experiments)
        for label, variants, settings in experiments:
            process, url = await start_falrelay(
                procs,
                "api",
                database_url,
                name=f"falrelay-api-{label}",
                variants=variants,
                **{"default_max_queued_jobs": "unlimited", **settings},
            )
            targets[f"falrelay with {label}"] = (url, True, process)
        api_urls = {url for url, _, p in targets.values() if p is not baseline}
        cpu: dict[str, list[dict[str, float]]] = {name: [] for name in targets}
        answered = 0  # 201s from falrelay, warm-up and profile runs included

        # Warm-up: connection pools, prepared statements, the key cache.
        for name, (url, idem, _) in targets.items() if not opts.smoke else ():
            warm = await ctx.load(
                spec(url, f"warm{name[:3]}{len(name)}", idempotent=idem, seconds=opts.warmup_s)
            )
            answered += warm.ok if url in api_urls else 0

        results: dict[str, list[LoadResult]] = {name: [] for name in targets}
        for i in range(runs):
            order = list(targets) if i % 2 == 0 else list(reversed(targets))
            for name in order:
                url, idem, process = targets[name]
                label = f"r{i}{name[:3]}{len(name)}"
                meter = ctx.cpu_meter(server=process)
                meter.start()
                result = await ctx.load(spec(url, label, idempotent=idem, seconds=duration))
                cpu[name].append(meter.per_unit(result.ok))
                check_errors(result, f"{name} run {i + 1}", report.notes)
                results[name].append(result)
                answered += result.ok if url in api_urls else 0

        if opts.profile:
            profiling = await ctx.start_profile(api.pid, duration, "intake-falrelay")
            extra = await ctx.load(spec(api_url, "profile", idempotent=True, seconds=duration))
            answered += extra.ok
            report.details["profile_falrelay"] = await profiling.summary()
            profiling = await ctx.start_profile(baseline.pid, duration, "intake-baseline")
            await ctx.load(spec(baseline_url, "profile-b", idempotent=True, seconds=duration))
            report.details["profile_baseline"] = await profiling.summary()

    # Every 201 must describe a committed row, so rows >= 201s; wrk stops with up to one
    # request per connection in flight, which may commit unanswered, so rows <= 201s + 64/run.
    conn = await connect(database_url)
    try:
        stored = await conn.fetchval("SELECT count(*) FROM jobs")
    finally:
        await conn.close()
    report.details["jobs_stored"] = stored
    report.details["jobs_answered_201"] = answered
    if stored < answered:
        report.notes.append(f"{answered} answers of 201 but only {stored} rows stored")

    fal, base = results["falrelay"], results["baseline"]
    plain = results["falrelay, no Idempotency-Key"]
    rps = Figure(
        "POST /v1/jobs", "req/s", [r.rps for r in fal], [r.rps for r in base], goal="ratio >= 1.0"
    )
    rps.met = _at_least(rps.ratio, 1.0)
    p50 = Figure("p50 latency", "ms", _ms(fal, "p50_ms"), _ms(base, "p50_ms"))
    p99 = Figure(
        "p99 latency", "ms", _ms(fal, "p99_ms"), _ms(base, "p99_ms"), goal=f"< {P99_GOAL_MS:.0f} ms"
    )
    p99.met = p99.value is not None and p99.value < P99_GOAL_MS
    no_key = Figure(
        "POST /v1/jobs without Idempotency-Key",
        "req/s",
        [r.rps for r in plain],
        [r.rps for r in base],
    )
    no_key_p99 = Figure(
        "p99 without Idempotency-Key", "ms", _ms(plain, "p99_ms"), _ms(base, "p99_ms")
    )
    server_cpu = Figure(
        "server CPU per request",
        "ms",
        [c.get("server", 0.0) for c in cpu["falrelay"]],
        [c.get("server", 0.0) for c in cpu["baseline"]],
    )
    postgres_cpu = Figure(
        "Postgres CPU per request",
        "ms",
        [c.get("postgres", 0.0) for c in cpu["falrelay"]],
        [c.get("postgres", 0.0) for c in cpu["baseline"]],
    )
    capped_rs = results["falrelay, queued-jobs cap"]
    with_cap = Figure(
        "POST /v1/jobs with a queued-jobs cap",
        "req/s",
        [r.rps for r in capped_rs],
        [r.rps for r in base],
    )
    with_cap_p99 = Figure(
        "p99 with a queued-jobs cap", "ms", _ms(capped_rs, "p99_ms"), _ms(base, "p99_ms")
    )
    with_cap_postgres = Figure(
        "Postgres CPU per request with a queued-jobs cap",
        "ms",
        [c.get("postgres", 0.0) for c in cpu["falrelay, queued-jobs cap"]],
        [c.get("postgres", 0.0) for c in cpu["baseline"]],
    )
    report.figures = [
        rps,
        p50,
        p99,
        server_cpu,
        postgres_cpu,
        no_key,
        no_key_p99,
        with_cap,
        with_cap_p99,
        with_cap_postgres,
    ]
    for variant, _, _ in experiments:
        rs = results[f"falrelay with {variant}"]
        report.figures += [
            Figure(f"experiment: {variant}", "req/s", [r.rps for r in rs], [r.rps for r in base]),
            Figure(f"experiment: {variant} p99", "ms", _ms(rs, "p99_ms"), _ms(base, "p99_ms")),
        ]
    report.settings = {
        "connections": CONNECTIONS,
        "duration_s": duration,
        "runs": runs,
        "body_bytes": len(body),
        "driver": fal[0].driver if fal else None,
        "falrelay": (
            "falrelay api, default settings (pool 2..20, access log on) but "
            "FALRELAY_DEFAULT_MAX_QUEUED_JOBS=unlimited; the cap's figures: a second process "
            f"with FALRELAY_DEFAULT_MAX_QUEUED_JOBS={CAP_OUT_OF_REACH}"
        ),
    }
    report.details["cpu_ms_per_request"] = cpu
    report.details["runs"] = {name: [load_summary(r) for r in rs] for name, rs in results.items()}
    return report


def _ms(results: list[LoadResult], attr: str) -> list[float]:
    values: list[Any] = [getattr(r, attr) for r in results]
    return [float(v) for v in values if v is not None]


def _at_least(value: float | None, bound: float) -> bool | None:
    return None if value is None else value >= bound


def _listen(port: int) -> list[str]:
    return ["--host", HOST, "--port", str(port)]
