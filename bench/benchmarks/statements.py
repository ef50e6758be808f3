"""Postgres statements per job (issue 17, row 7): create → submitted → callback → delivered →
recorded, one endpoint.

One `falrelay serve`, the fake fal (zero latency) and a receiver with one endpoint subscribed
to `job.succeeded`, on a Postgres of the benchmark's own that counts statements
(bench/pgstats.py: `pg_stat_statements` where it can be had). N jobs are posted at a fixed rate
(each with an `Idempotency-Key`), and the window ends when every job's webhook has arrived and
its delivery is recorded as succeeded. Before the jobs the statistics are reset; after, each
statement's calls, rows and time are read. The loops that run anyway (gauges, catalog
refresh, queue scans, reconcile and retention sweeps) are measured the same way over an idle
window first and subtracted at their idle rate, so the per-job figure is what jobs cost.
Transactions are `xact_commit` of `pg_stat_database` for the database, net of idle the same way.

No baseline: the issue asks to measure, then halve. The statement table (in the printed
appendix and `details.statements`) is what the levers work from.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from bench import pgstats
from bench.benchmarks.common import HARNESS_TIMEOUT, check_errors, load_summary, wait_until
from bench.benchmarks.stack import start_stack
from bench.context import Context
from bench.load import LoadSpec
from bench.report import Figure, Report
from bench.workload import job_request_json

RATE = 100.0  # jobs/s offered: a moderate load (batches form, as they would in production)
JOBS = 500
IDLE_S = 20.0
WARM_JOBS = 20


@dataclass(frozen=True)
class Pass:
    label: str
    rate: float
    jobs: int
    fal_run_s: float


# Further passes (full runs only), after the zero-latency one. With zero latency fal's webhook
# often arrives while the submit is being recorded, and the callback adopts the request itself
# (`app/fal/callbacks.py`): with real fal, whose runs take seconds, the submit is recorded
# first. And at a low rate nothing batches: what one job costs on its own.
EXTRA_PASSES = [
    Pass("fal taking 0.2 s, 100 jobs/s", 100.0, 500, 0.2),
    Pass("10 jobs/s, fal taking 0.2 s (nothing batches)", 10.0, 100, 0.2),
]
# After the last delivery is recorded: a backend reports its transactions to pg_stat_database
# when it goes idle, at most once a second, or 10 s later (PGSTAT_IDLE_INTERVAL); statement
# counts (pg_stat_statements) are immediate.
SETTLE_S = 11.0

# Phases a statement belongs to, told by its text: the first pattern that matches wins.
# Patterns are matched against the normalised text, lower-cased.
PHASES: list[tuple[str, str]] = [
    ("transaction control", r"^(begin|commit|rollback)\b"),
    # The intake statement counts the job itself (its first step is the queued-jobs increment).
    ("intake", r"^with counted as \( update clients set queued_jobs"),
    ("triggers and foreign keys", r"for key share of x|queued_jobs = queued_jobs"),
    # The delivery queue's calls before the patterns below: each says set_config (it commits
    # asynchronously) and the recording deletes from the queue.
    (
        "delivery: claim",
        r"^with flight as \( select f\.client_id, f\.n from unnest|claim_deliveries\(|"
        r"claim_queued_deliveries\(",
    ),
    (
        "recording",
        r"insert into delivery_attempts|update deliveries as d set status|"
        r"update webhook_endpoints set failing_since|record_delivery_results\(",
    ),
    # asyncpg's type introspection on a new connection (it turns JIT off around it).
    (
        "asyncpg: new connections",
        r"typeinfo_tree|current_setting\(|set_config\(\$2, \$1, \$3\)|set_config\('jit'",
    ),
    # Loops that run whether or not jobs come: queue and sweep scans, gauges, the catalog.
    ("loops: reconcile scan", r"polls = polls \+ (1|\$\d+)"),
    ("loops: mirror retry scan", r"set mirror_retry_at = now\(\)"),
    ("loops: finish scan", r"output is not null and next_attempt_at <= now\(\)"),
    (
        "loops: gauges, catalog, retention",
        r"group by status|model_catalog|retention|"
        r"delete from|pg_database_size|count\(\*\) from jobs where status",
    ),
    (
        "claim/submit",
        r"^with flight as \( select client_id, count\(\*\)|pg_advisory_xact_lock|"
        r"claim_submissions\(|set_config\(|set status = ('submitted'|\$\d+), fal_request_id = \$2|"
        r"set status = ('submitted'|\$\d+), fal_request_id = u\.request_id|"
        r"update jobs set fal_request_id = coalesce",
    ),
    ("events and fan-out", r"insert into events|insert into deliveries"),
    ("notify", r"pg_notify"),
    (
        "callback",
        r"set status = ('succeeded'|\$\d+), output = \$2|spent_usd = s\.spent_usd|"
        r"^select status, fal_request_id, model, trace_context from jobs",
    ),
    (
        "intake",
        r"insert into jobs|from clients where id = \$1 for no key update|"
        r"monthly_budget_usd|reserved_usd\) select|api_keys|idempotency_key =",
    ),
]


def phase_of(query: str) -> str:
    text = query.lower()
    for phase, pattern in PHASES:
        if re.search(pattern, text):
            return phase
    return "other"


@dataclass
class Row:
    """One statement, net of the idle loops: what N jobs cost."""

    query: str
    phase: str
    toplevel: bool
    calls: int  # in the jobs' window
    idle_calls: float  # the idle rate over the same length of time
    rows: int | None
    total_ms: float | None

    @property
    def net_calls(self) -> float:
        return self.calls - self.idle_calls

    @property
    def background(self) -> bool:
        return self.idle_calls > 0


async def _post_jobs(ctx: Context, url: str, headers: dict[str, str], rate: float, n: int) -> Any:
    return await ctx.load(
        LoadSpec(
            base_url=url,
            paths=["/v1/jobs"],
            method="POST",
            headers=headers,
            body=job_request_json(),
            idempotency_prefix=f"{secrets.token_hex(4)}-",
            connections=64,
            duration_s=n / rate,
            rate=rate,
        )
    )


async def _fakefal_stats(url: str) -> dict[str, Any]:
    """What the fake fal counted: its submissions against the jobs."""
    async with httpx.AsyncClient(trust_env=False, timeout=HARNESS_TIMEOUT) as http:
        answer = await http.get(f"{url}/_fake/stats")
        answer.raise_for_status()
        data: dict[str, Any] = answer.json()
        return data


def _as_json(r: Row, jobs: int) -> dict[str, Any]:
    return {
        "phase": r.phase,
        "toplevel": r.toplevel,
        "query": r.query,
        "calls": r.calls,
        "idle_calls_scaled": round(r.idle_calls, 2),
        "calls_per_job": round(r.net_calls / jobs, 4),
        "rows": r.rows,
        "mean_ms": None if r.total_ms is None or not r.calls else r.total_ms / r.calls,
        "background": r.background,
    }


async def _fal_run_latency(url: str, seconds: float) -> None:
    async with httpx.AsyncClient(trust_env=False, timeout=HARNESS_TIMEOUT) as http:
        answer = await http.patch(f"{url}/_fake/config", json={"run_latency": seconds})
        answer.raise_for_status()


def net_rows(
    jobs: pgstats.Snapshot,
    idle: pgstats.Snapshot,
    classify: Callable[[str], str] = phase_of,
) -> list[Row]:
    """Each statement of `jobs`, less what `idle` did over the same length of time."""
    scale = jobs.seconds / idle.seconds if idle.seconds else 0.0
    idle_by_key = {(s.key, s.toplevel): s for s in idle.statements}
    by_key = {(s.key, s.toplevel): s for s in jobs.statements}
    rows = []
    for key in by_key.keys() | idle_by_key.keys():
        measured = by_key.get(key)
        idle_one = idle_by_key.get(key)
        query = (measured or idle_one).query  # type: ignore[union-attr]
        rows.append(
            Row(
                query=query,
                phase=classify(query),
                toplevel=key[1],
                calls=measured.calls if measured else 0,
                idle_calls=(idle_one.calls * scale) if idle_one else 0.0,
                rows=measured.rows if measured else None,
                total_ms=measured.total_ms if measured else None,
            )
        )
    # Statements of the same text under several query ids (parameters typed differently by
    # two call sites) read as one.
    merged: dict[tuple[str, bool], Row] = {}
    for r in rows:
        m = merged.get((r.query, r.toplevel))
        if m is None:
            merged[(r.query, r.toplevel)] = r
            continue
        m.calls += r.calls
        m.idle_calls += r.idle_calls
        if r.rows is not None:
            m.rows = (m.rows or 0) + r.rows
        if r.total_ms is not None:
            m.total_ms = (m.total_ms or 0.0) + r.total_ms
    rows = sorted(merged.values(), key=lambda r: (not r.toplevel, -r.net_calls))
    return rows


def appendix(rows: list[Row], per: float, unit: str = "calls/job") -> str:
    """The statement table: calls per `per` (jobs, or seconds), net of idle."""
    head = ["phase", unit, "idle", "rows/call", "mean ms", "statement"]
    lines = [head]
    for r in rows:
        if r.calls == 0 and not r.idle_calls:
            continue
        rows_per_call = "-" if r.rows is None or not r.calls else f"{r.rows / r.calls:.1f}"
        mean = "-" if r.total_ms is None or not r.calls else f"{r.total_ms / r.calls:.3f}"
        where = "" if r.toplevel else "(nested) "
        lines.append(
            [
                r.phase,
                f"{r.net_calls / per:.3f}",
                f"{r.idle_calls:.1f}" if r.idle_calls else "",
                rows_per_call,
                mean,
                where + (r.query if len(r.query) <= 110 else r.query[:107] + "..."),
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head) - 1)]
    out = ["statements, net of the idle loops (idle: their calls over the window at the idle rate)"]
    for i, line in enumerate(lines):
        cells = [c.ljust(w) for c, w in zip(line[:-1], widths, strict=True)]
        out.append("  ".join([*cells, line[-1]]))
        if i == 0:
            out.append("  ".join(["-" * w for w in widths] + ["-" * 9]))
    return "\n".join(out)


async def run(ctx: Context) -> Report:
    opts = ctx.options
    rate, n = (10.0, 10) if opts.smoke else (RATE, JOBS)
    idle_s = 2.0 if opts.smoke else IDLE_S
    settle_s = 1.0 if opts.smoke else SETTLE_S
    report = ctx.report(
        "statements",
        f"Postgres statements per job: create -> submitted -> callback -> delivered -> "
        f"recorded, one endpoint, {n} jobs at {rate:.0f} jobs/s through one `falrelay serve`",
        baseline="none: the first measurement (the issue: measure it, then halve it)",
        goal="measured, per statement; the levers then halve statements per job",
    )
    async with pgstats.stats_postgres() as server:
        report.notes += server.notes
        report.machine["postgres"] = server.version  # this server, not the embedded one
        database_url = await server.postgres.create_database("statements")
        counter = await server.counter(database_url)
        with ctx.processes("statements") as procs:
            stack = await start_stack(procs, database_url)

            async def recorded() -> int:
                count: int = await counter.harness_fetchval(
                    "SELECT count(*) FROM deliveries WHERE status = 'succeeded'"
                )
                return count

            async def through(count: int, within: float) -> None:
                async def done() -> bool:
                    return await recorded() >= count

                await wait_until(done, within=within, interval=0.1)

            # Warm: every connection of the pool has prepared its statements, the catalog
            # and the key caches are filled, before anything is counted.
            warm = await _post_jobs(ctx, stack.serve_url, stack.headers, 20.0, WARM_JOBS)
            await through(warm.ok, within=60)
            await asyncio.sleep(1.0)

            await counter.reset()
            await asyncio.sleep(idle_s)
            idle = await counter.read()

            before = await recorded()
            await stack.reset_receiver()
            await counter.reset()
            result = await _post_jobs(ctx, stack.serve_url, stack.headers, rate, n)
            check_errors(result, "posting the jobs", report.notes)
            await through(before + result.ok, within=120)
            await asyncio.sleep(settle_s)
            jobs = await counter.read()
            received = await stack.receiver_stats()
            fal_stats = await _fakefal_stats(stack.fakefal_url)

            extra: list[tuple[Pass, Any, pgstats.Snapshot]] = []
            for one in [] if opts.smoke else EXTRA_PASSES:
                await _fal_run_latency(stack.fakefal_url, one.fal_run_s)
                before = await recorded()
                await counter.reset()
                posted = await _post_jobs(ctx, stack.serve_url, stack.headers, one.rate, one.jobs)
                check_errors(posted, f"posting the jobs, {one.label}", report.notes)
                await through(before + posted.ok, within=120)
                await asyncio.sleep(settle_s)
                extra.append((one, posted, await counter.read()))

    done = result.ok
    rows = net_rows(jobs, idle)
    top = [r for r in rows if r.toplevel]
    nested = [r for r in rows if not r.toplevel]
    per_job = sum(r.net_calls for r in top) / done
    scale = jobs.seconds / idle.seconds
    xact_per_job = (jobs.xact_commit - idle.xact_commit * scale) / done
    with_loops = sum(r.calls for r in top) / done
    ms_per_job = sum((r.total_ms or 0.0) for r in top) / done
    report.figures += [
        Figure("statements per job, net of idle loops", "statements", [round(per_job, 2)]),
        Figure(
            "transactions per job (xact_commit), net of idle loops",
            "transactions",
            [round(xact_per_job, 2)],
        ),
        Figure("statements per job, idle loops included", "statements", [round(with_loops, 2)]),
        Figure(
            "nested statements per job (in functions and triggers)",
            "statements",
            [round(sum(r.net_calls for r in nested) / done, 2)],
        ),
        Figure(
            "idle loops: statements per second, no jobs",
            "statements/s",
            [round(idle.calls / idle.seconds, 2)],
        ),
    ]
    for one, posted, snapshot in extra:
        one_rows = net_rows(snapshot, idle)
        one_scale = snapshot.seconds / idle.seconds
        report.figures += [
            Figure(
                f"{one.label}: statements per job, net",
                "statements",
                [round(sum(r.net_calls for r in one_rows if r.toplevel) / posted.ok, 2)],
            ),
            Figure(
                f"{one.label}: transactions per job, net",
                "transactions",
                [round((snapshot.xact_commit - idle.xact_commit * one_scale) / posted.ok, 2)],
            ),
        ]
        report.appendix.append(f"{one.label}:\n" + appendix(one_rows, posted.ok))
        report.details.setdefault("passes", []).append(
            {
                "label": one.label,
                "rate": one.rate,
                "fal_run_s": one.fal_run_s,
                "jobs_done": posted.ok,
                "window_s": round(snapshot.seconds, 2),
                "xact_commit": snapshot.xact_commit,
                "load": load_summary(posted),
                "statements": [_as_json(r, posted.ok) for r in one_rows],
            }
        )
    if server.method == pgstats.PG_STAT_STATEMENTS:
        report.figures.append(
            Figure("Postgres execution time per job (top level)", "ms", [round(ms_per_job, 3)])
        )
    phases: dict[str, float] = {}
    for r in top:
        phases[r.phase] = phases.get(r.phase, 0.0) + r.net_calls / done
    for phase, value in sorted(phases.items(), key=lambda kv: -kv[1]):
        figure = Figure(f"statements per job: {phase}", "statements", [round(value, 3)])
        report.figures.append(figure)
    if received["jobs"] < done:
        report.notes.append(f"only {received['jobs']} of {done} jobs' webhooks arrived")
    report.appendix.insert(0, appendix(rows, done))
    report.settings = {
        "jobs": n,
        "rate": rate,
        "idle_window_s": idle_s,
        "further_passes": [] if opts.smoke else [vars(p) for p in EXTRA_PASSES],
        "statistics": server.method,
        "postgres": server.description,
        "postgres_version": server.version,
        "falrelay": "falrelay serve, defaults; FALRELAY_ALLOW_PRIVATE_WEBHOOK_URLS=true; one "
        "endpoint subscribed to job.succeeded; every POST with an Idempotency-Key",
    }
    report.details |= {
        "jobs_done": done,
        # Since the fake started: the warm-up's jobs and both passes.
        "fakefal_stats": fal_stats,
        "webhooks_received": received["jobs"],
        "window_s": round(jobs.seconds, 2),
        "idle_window_s": round(idle.seconds, 2),
        "xact_commit": {"jobs": jobs.xact_commit, "idle": idle.xact_commit},
        "xact_rollback": {"jobs": jobs.xact_rollback, "idle": idle.xact_rollback},
        "load": load_summary(result),
        "phases_per_job": {k: round(v, 3) for k, v in phases.items()},
        "statements": [_as_json(r, done) for r in rows],
    }
    return report
