"""What open event streams and `Prefer: wait` requests cost Postgres (issue 17, row 8).

One `falrelay serve` holds 2,000 open `GET /v1/jobs/{id}/events` streams and 500
`POST /v1/jobs` with `Prefer: wait` (each with its own `Idempotency-Key`, re-issued with
`wait=60` as it times out: a replay of its job), all on jobs that stay unfinished (the fake fal
runs each for an hour), from a separate load process (`bench/watchers.py`). Postgres counts
statements (bench/pgstats.py). The figure is the statements per second with the streams and
waits open, less the same jobs' idle rate with none open (a window of the same length, before
they open): what they cost, per process. The first waits time out spread over a minute, so the
re-issues during the window come at their steady rate (500 / 60 a second).

Then, streams and waits still open, a few more jobs run for 1 s at the fake fal: one followed
by a new event stream, one by a `Prefer: wait` POST. Wake-up latency: for the stream, from the
`job.succeeded` event's timestamp (stamped in the transaction that applied fal's callback) to
its frame's arrival; for the wait, from the job's `completed_at` (the same transaction) to the
answer's arrival.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import resource
import secrets
import time
from datetime import datetime
from typing import Any

import httpx

from bench import pgstats, stats
from bench.benchmarks import statements
from bench.benchmarks.common import HARNESS_TIMEOUT, wait_until
from bench.benchmarks.stack import Stack, start_stack
from bench.context import Context
from bench.processes import Process, python_argv
from bench.report import Figure, Report
from bench.watchers import REISSUE_WAIT_S
from bench.workload import job_request_json

STREAMS = 2000
WAITS = 500
WINDOW_S = 20.0
WAKE_JOBS = 10
GOAL_PER_S = 20.0
HOLD_S = 3600.0  # the fake fal's run time for the jobs watched: they stay unfinished
WAKE_RUN_S = 1.0  # ... and for the jobs that finish during the wake-up phase
WAKE_WAIT_S = 30
STATS_FLUSH_S = 11.0

WATCH_PHASES: list[tuple[str, str]] = [
    ("job watcher's poll", r"^select id, (status, )?updated_at from jobs where id = any"),
    ("stream reads", r"^select id, type, payload, created_at from events where job_id"),
    ("stream opens", r"^select status from jobs where id = \$1 and client_id = \$2$"),
    ("waits' reads of their job", r"^select .* from jobs where id = \$1 and client_id = \$2$"),
]


def phase_of(query: str) -> str:
    text = query.lower()
    for phase, pattern in WATCH_PHASES:
        if re.search(pattern, text):
            return phase
    phase = statements.phase_of(query)
    return "waits' re-issues (intake replays)" if phase == "intake" else phase


async def _create_jobs(stack: Stack, n: int, keys: list[str | None]) -> list[str]:
    """`n` jobs through the API, 32 at a time; their public ids, in order."""
    ids: list[str] = [""] * n
    body = job_request_json()
    queue = iter(range(n))
    async with httpx.AsyncClient(
        base_url=stack.serve_url, trust_env=False, timeout=HARNESS_TIMEOUT
    ) as api:

        async def worker() -> None:
            for i in queue:
                headers = dict(stack.headers)
                if keys[i] is not None:
                    headers["Idempotency-Key"] = str(keys[i])
                answer = await api.post("/v1/jobs", content=body, headers=headers)
                answer.raise_for_status()
                ids[i] = answer.json()["id"]

        await asyncio.gather(*(worker() for _ in range(32)))
    return ids


async def _status(path: Any) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
        return data
    except (OSError, ValueError):
        return {}


def _stamp(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


async def _wake_by_stream(stack: Stack, api: httpx.AsyncClient) -> float:
    answer = await api.post("/v1/jobs", content=job_request_json(), headers=stack.headers)
    answer.raise_for_status()
    job_id = answer.json()["id"]
    event = ""
    async with api.stream("GET", f"/v1/jobs/{job_id}/events", headers=stack.headers) as stream:
        async for line in stream.aiter_lines():
            if line.startswith("event: "):
                event = line[len("event: ") :]
            elif line.startswith("data: ") and event == "job.succeeded":
                arrived = time.time()
                return 1000 * (arrived - _stamp(json.loads(line[len("data: ") :])["timestamp"]))
    raise RuntimeError(f"the stream of {job_id} ended without job.succeeded")


async def _wake_by_wait(stack: Stack, api: httpx.AsyncClient) -> float:
    headers = {**stack.headers, "Prefer": f"wait={WAKE_WAIT_S}"}
    answer = await api.post("/v1/jobs", content=job_request_json(), headers=headers)
    arrived = time.time()
    answer.raise_for_status()
    job = answer.json()
    if job["status"] != "succeeded":
        raise RuntimeError(f"a Prefer: wait answer came back {job['status']}")
    return 1000 * (arrived - _stamp(job["completed_at"]))


async def _wake_ups(stack: Stack, n: int) -> tuple[list[float], list[float]]:
    async with httpx.AsyncClient(
        base_url=stack.serve_url, trust_env=False, timeout=HARNESS_TIMEOUT
    ) as api:

        async def one(i: int) -> tuple[float, float]:
            # Staggered by an amount prime to the watcher's 250 ms: wake-ups at every phase.
            await asyncio.sleep(i * 0.37)
            by_stream, by_wait = await asyncio.gather(
                _wake_by_stream(stack, api), _wake_by_wait(stack, api)
            )
            return by_stream, by_wait

        pairs = await asyncio.gather(*(one(i) for i in range(n)))
    return [p[0] for p in pairs], [p[1] for p in pairs]


async def _settle(counter: pgstats.StatementCounter, waits: int, flush_s: float) -> float:
    """Until the waits' first requests are through intake: sent at once, they queue in the
    server (one client's creates take turns on its `clients` row), and the window must hold
    their steady re-issues only. Watched through the rate of `INSERT INTO jobs`; without
    pg_stat_statements, a fixed pause."""
    started = time.monotonic()
    await asyncio.sleep(3.0)  # the streams' first reads
    steady = 2 * waits / REISSUE_WAIT_S + 2  # in 2 s: twice the steady rate, and some

    async def settled() -> bool:
        first = await counter.calls_so_far("INSERT INTO jobs")
        await asyncio.sleep(2.0)
        then = await counter.calls_so_far("INSERT INTO jobs")
        return first is None or then is None or then - first <= 2 * steady

    await wait_until(settled, within=300, interval=0.0)
    # Backends report their transactions to pg_stat_database up to 10 s late
    # (PGSTAT_IDLE_INTERVAL): the burst's must not land in the window.
    await asyncio.sleep(flush_s)
    return time.monotonic() - started


def _raise_open_files() -> None:
    # falrelay serve (started after this) inherits it: 2,500 client sockets and its pool.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def run(ctx: Context) -> Report:
    opts = ctx.options
    streams, waits, window = (20, 5, 3.0) if opts.smoke else (STREAMS, WAITS, WINDOW_S)
    wake = 2 if opts.smoke else WAKE_JOBS
    report = ctx.report(
        "watch",
        f"{streams} open event streams and {waits} `Prefer: wait` requests on unfinished "
        "jobs, one `falrelay serve`: the Postgres statements per second they cost",
        baseline="the same process and jobs with no stream or wait open (a window before)",
        goal=f"<= {GOAL_PER_S:.0f} statements/s in total, per process",
    )
    _raise_open_files()
    async with pgstats.stats_postgres() as server:
        report.notes += server.notes
        report.machine["postgres"] = server.version  # this server, not the embedded one
        database_url = await server.postgres.create_database("watch")
        counter = await server.counter(database_url)
        with ctx.processes("watch") as procs:
            stack = await start_stack(
                procs,
                database_url,
                # Every job goes to fal at once and stays there; no reconcile poll of fal
                # while it runs (it would be the same in every window, but lumpy).
                fal_max_in_flight=1_000_000,
                reconcile_after_seconds=HOLD_S,
                http_max_connections=streams + waits + 512,
                # Its waits outlive the load process (a wait whose client left is not noticed
                # until it times out): do not drain them for 20 s at the end.
                shutdown_timeout_seconds=2,
            )
            async with httpx.AsyncClient(trust_env=False, timeout=HARNESS_TIMEOUT) as http:
                patched = await http.patch(
                    f"{stack.fakefal_url}/_fake/config", json={"run_latency": HOLD_S}
                )
                patched.raise_for_status()
            token = secrets.token_hex(3)
            wait_keys = [f"wait-{token}-{i}" for i in range(waits)]
            keys: list[str | None] = [None] * streams
            keys += wait_keys
            created_at = time.monotonic()
            ids = await _create_jobs(stack, streams + waits, keys)
            create_s = time.monotonic() - created_at

            async def all_at_fal() -> bool:
                queued: int = await counter.harness_fetchval(
                    "SELECT count(*) FROM jobs WHERE status = 'queued'"
                )
                return queued == 0

            await wait_until(all_at_fal, within=300, interval=0.5)
            await asyncio.sleep(2.0)

            await counter.reset()
            await asyncio.sleep(window)
            before = await counter.read()

            spec_path = ctx.work_dir / "watchers-spec.json"
            status_path = ctx.work_dir / f"watchers-status-{token}.json"
            # The first waits time out spread over the re-issue period: a steady re-issue rate.
            period = REISSUE_WAIT_S
            waiters = [[key, round(3 + (period - 3) * i / max(1, waits), 2)] for i, key in
                       enumerate(wait_keys)]  # fmt: skip
            spec_path.write_text(
                json.dumps(
                    {
                        "base_url": stack.serve_url,
                        "key": stack.key,
                        "stream_jobs": ids[:streams],
                        "waiters": waiters,
                        "body": job_request_json(),
                    }
                )
            )
            watchers: Process = procs.start(
                "watchers", python_argv("-m", "bench.watchers", str(spec_path), str(status_path))
            )

            async def all_open() -> bool:
                watchers.check_alive()
                s = await _status(status_path)
                return s.get("streams_open") == streams and s.get("waits_in_flight") == waits

            open_s = await wait_until(all_open, within=180, interval=0.25)
            settle_s = await _settle(counter, waits, 1.0 if opts.smoke else STATS_FLUSH_S)
            status_before = await _status(status_path)
            await counter.reset()
            await asyncio.sleep(window)
            held = await counter.read()
            status_after = await _status(status_path)

            async with httpx.AsyncClient(trust_env=False, timeout=HARNESS_TIMEOUT) as http:
                patched = await http.patch(
                    f"{stack.fakefal_url}/_fake/config", json={"run_latency": WAKE_RUN_S}
                )
                patched.raise_for_status()
            by_stream, by_wait = await _wake_ups(stack, wake)
            status_end = await _status(status_path)
            watchers.stop()

    # The baseline is the window before: after the load process goes, a `Prefer: wait` whose
    # client left is still watched until it times out (up to 60 s), so a window after would
    # hold part of what is measured.
    idle = before
    rows = statements.net_rows(held, idle, classify=phase_of)
    top = [r for r in rows if r.toplevel]
    seconds = held.seconds
    idle_rate = idle.calls / idle.seconds
    cost = sum(r.net_calls for r in top) / seconds
    phases: dict[str, float] = {}
    for r in top:
        phases[r.phase] = phases.get(r.phase, 0.0) + r.net_calls / seconds
    xact_cost = (held.xact_commit - idle.xact_commit * seconds / idle.seconds) / seconds
    headline = Figure(
        "statements/s the streams and waits cost Postgres, one process",
        "statements/s",
        [round(cost, 2)],
        goal=f"<= {GOAL_PER_S:.0f}",
        met=cost <= GOAL_PER_S,
    )
    report.figures += [
        headline,
        Figure(
            "statements/s with them open (against none open)",
            "statements/s",
            [round(held.calls / seconds, 2)],
            baseline_runs=[round(idle_rate, 2)],
        ),
        Figure("transactions/s they cost (xact_commit)", "transactions/s", [round(xact_cost, 2)]),
    ]
    for phase, value in sorted(phases.items(), key=lambda kv: -kv[1]):
        if abs(value) >= 0.005:
            report.figures.append(Figure(f"of which {phase}", "statements/s", [round(value, 2)]))
    for what, values in (
        ("event on the stream", by_stream),
        ("Prefer: wait answered", by_wait),
    ):
        for q in (50, 99):
            value = stats.percentile(values, q) or 0.0
            report.figures.append(Figure(f"wake-up, callback -> {what}, p{q}", "ms", [value]))
    if status_after.get("stream_errors") or status_after.get("streams_ended"):
        report.notes.append(f"streams ended or failed during the window: {status_after}")
    report.appendix.append(statements.appendix(rows, seconds, unit="calls/s"))
    report.settings = {
        "streams": streams,
        "waits": waits,
        "window_s": window,
        "wake_up_jobs": wake,
        "statistics": server.method,
        "postgres": server.description,
        "postgres_version": server.version,
        "falrelay": "falrelay serve, defaults but FALRELAY_FAL_MAX_IN_FLIGHT=1000000, "
        f"FALRELAY_RECONCILE_AFTER_SECONDS={HOLD_S:.0f}, FALRELAY_HTTP_MAX_CONNECTIONS="
        f"{streams + waits + 512}, FALRELAY_SHUTDOWN_TIMEOUT_SECONDS=2, "
        "FALRELAY_ALLOW_PRIVATE_WEBHOOK_URLS=true",
        "fakefal_run_latency_s": {"held": HOLD_S, "wake_up": WAKE_RUN_S},
        "wait_timeouts": f"Prefer: wait, first timeouts spread over 3-{period:.0f} s, then wait=60",
    }
    report.details = {
        "jobs_created": len(ids),
        "create_s": round(create_s, 1),
        "open_all_s": round(open_s, 1),
        # From all open to the waits' first requests through intake (window B starts then).
        "settle_s": round(settle_s, 1),
        "window_s": {"before": before.seconds, "held": held.seconds},
        "statements": {"before": before.calls, "held": held.calls},
        "xact_commit": {"before": before.xact_commit, "held": held.xact_commit},
        "watchers": {"before": status_before, "after": status_after, "end": status_end},
        "wake_up_ms": {"stream": by_stream, "wait": by_wait},
        "phases_per_s": {k: round(v, 3) for k, v in phases.items()},
        "statements_held": [
            {
                "phase": r.phase,
                "toplevel": r.toplevel,
                "query": r.query,
                "calls": r.calls,
                "idle_calls_scaled": round(r.idle_calls, 2),
                "net_calls_per_s": round(r.net_calls / seconds, 3),
                "rows": r.rows,
            }
            for r in rows
        ],
    }
    return report
