"""Purge under load: `POST /v1/jobs` p99 while `falrelay purge` deletes 1,000,000 old jobs,
against the p99 with no purge, in one run (issue 15).

The old jobs are shaped like falrelay's own (a 1 KB input, fal's output and URLs, a mirrored
file and its thumbnail, an idempotency key), each with its three events (full webhook bodies,
about 1.5 KB), a delivery of each to an endpoint and an attempt of each delivery: ten rows a
job, loaded with `INSERT ... SELECT generate_series` 50,000 jobs at a time, then vacuumed and
analysed as old data would be. Their on-disk size (`pg_total_relation_size`, indexes and TOAST
included) is the README's storage estimate.

One `falrelay api` takes the load (64 connections, as `intake`), in windows of `--duration`
seconds. The million is purged by ten runs of `falrelay purge --older-than AGE` as separate
processes with a file store (the real path: rows, outbox, store delete), each taking the
oldest tenth left (the last: everything past 30 days), in its default batches and rests.
Windows run back to back: three with no purge, then during each run, one with no purge after
each run, and one more at the end. Windows with and without the purge thus alternate, so the
drift of this shared machine falls on both. A window belongs to the purge when a run was
going at its start and at its end; one in which a run ended is "mixed" and counts for neither.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg

from app.lifecycle.retention import REST
from bench.benchmarks.common import check_errors, connect, load_summary
from bench.benchmarks.rows import uuid7_sql
from bench.context import Context, create_api_key, falrelay_env, start_falrelay
from bench.load import LoadResult, LoadSpec
from bench.processes import Process, falrelay_argv
from bench.report import Figure, Report
from bench.workload import job_request, job_request_json, succeeded_event

OLD_JOBS = 1_000_000
SMOKE_OLD_JOBS = 3_000
# `falrelay purge` runs, each taking the oldest slice left, a window with no purge after each:
# windows with and without the purge alternate, so drift on this shared machine falls on both.
CHUNKS = 10
SMOKE_CHUNKS = 2
CHUNK = 50_000
CONNECTIONS = 64
GOAL_RATIO = 1.5
TABLES = ("jobs", "events", "deliveries", "delivery_attempts")
EVENT_TYPES = ("job.submitted", "job.running")

_REPORT_LINE = re.compile(r"^\s+(\w+)\s+([\d,]+)", re.MULTILINE)


async def run(ctx: Context) -> Report:
    opts = ctx.options
    old_jobs = SMOKE_OLD_JOBS if opts.smoke else OLD_JOBS
    report = ctx.report(
        "purge",
        f"POST /v1/jobs p99 while `falrelay purge` deletes {old_jobs:,} old jobs",
        baseline="the same falrelay api, same load, with no purge running (windows before and "
        "after the purge, in the same run)",
        goal=f"p99 during the purge <= {GOAL_RATIO}x p99 without",
    )
    database_url = await ctx.postgres.create_database("purge")
    client_id, key = await create_api_key(database_url)
    conn = await connect(database_url)
    try:
        started = time.monotonic()
        await load_old_jobs(conn, client_id, old_jobs)
        report.details["load_seconds"] = round(time.monotonic() - started, 1)
        started = time.monotonic()
        for table in TABLES:
            await conn.execute(f"VACUUM (ANALYZE) {table}")
        report.details["vacuum_seconds"] = round(time.monotonic() - started, 1)
        sizes = await table_sizes(conn)
    finally:
        await conn.close()
    report.details["on_disk_bytes"] = sizes
    per_job = {table: sizes[table] / old_jobs for table in TABLES}
    report.details["bytes_per_job"] = {t: round(v) for t, v in per_job.items()}

    duration = 1.0 if opts.smoke else opts.duration_s
    before_runs = 1 if opts.smoke else opts.runs
    body = job_request_json()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    token = secrets.token_hex(3)
    windows: list[tuple[str, LoadResult]] = []
    store_dir = ctx.work_dir / "purge-store"
    removed: dict[str, int] = {}
    outputs: list[list[str]] = []
    purge_seconds: list[float] = []

    with ctx.processes("purge") as procs:
        api, api_url = await start_falrelay(
            procs, "api", database_url, default_max_queued_jobs="unlimited"
        )

        async def window(label: str, seconds: float) -> LoadResult:
            spec = LoadSpec(
                base_url=api_url,
                paths=["/v1/jobs"],
                method="POST",
                headers=headers,
                body=body,
                idempotency_prefix=f"{token}-{len(windows)}-",
                connections=CONNECTIONS,
                duration_s=seconds,
            )
            result = await ctx.load(spec)
            check_errors(result, f"{label} window {len(windows) + 1}", report.notes)
            windows.append((label, result))
            return result

        if not opts.smoke:
            await ctx.load(
                LoadSpec(
                    base_url=api_url,
                    paths=["/v1/jobs"],
                    method="POST",
                    headers=headers,
                    body=body,
                    idempotency_prefix=f"{token}-warm-",
                    connections=CONNECTIONS,
                    duration_s=opts.warmup_s,
                )
            )
        for _ in range(before_runs):
            await window("no purge", duration)

        chunks = SMOKE_CHUNKS if opts.smoke else CHUNKS
        for chunk in range(1, chunks + 1):
            # The jobs finished 60 days and 0..n seconds ago: each run takes the oldest slice
            # left (the last one everything past 30 days), then a window with no purge.
            older_than = (
                f"{60 * 86400 + old_jobs * (chunks - chunk) // chunks}s"
                if chunk < chunks
                else "30d"
            )
            purge_args = ["purge", "--older-than", older_than]
            if opts.smoke:
                purge_args += ["--batch-size", "50"]  # a few batches even at smoke sizes
            purging = procs.start(
                f"falrelay-purge-{chunk}",
                falrelay_argv(*purge_args),
                falrelay_env(database_url, storage_url=store_dir.as_uri()),
            )
            started = time.monotonic()
            ended = asyncio.create_task(_ended(purging))
            while not ended.done():
                result = await window("purge", duration)
                if ended.done():  # it ended during this window: neither phase's
                    windows[-1] = ("mixed", result)
            purge_seconds.append(await ended - started)
            code = purging.stop()
            output = purging.log()
            outputs.append(output.strip().splitlines()[-8:])
            if code != 0:
                report.notes.append(f"falrelay purge exited {code}: {output[-2000:]}")
            for name, value in _REPORT_LINE.findall(output):
                if name != "files_pending":  # the outbox as it stood, not what this run did
                    removed[name] = removed.get(name, 0) + int(value.replace(",", ""))
            await window("no purge", duration)
        for _ in range(0 if opts.smoke else 1):
            await window("no purge", duration)
        api.check_alive()

    conn = await connect(database_url)
    try:
        left = await conn.fetchval(
            "SELECT count(*) FROM jobs WHERE completed_at < now() - interval '30 days'"
        )
        outbox = await conn.fetchval("SELECT count(*) FROM file_deletions")
        stored = await conn.fetchval("SELECT count(*) FROM jobs")
    finally:
        await conn.close()
    answered = sum(result.ok for _, result in windows)
    report.details |= {
        "purge_outputs": outputs,
        "removed": removed,
        "old_jobs_left": left,
        "outbox_left": outbox,
        "jobs_stored_by_intake": stored,
        "intake_201s_measured": answered,
        "purge_seconds": [round(seconds, 1) for seconds in purge_seconds],
        "windows": [{"phase": label, **load_summary(r)} for label, r in windows],
    }
    if removed.get("jobs") != old_jobs or left:
        report.notes.append(f"the purge removed {removed.get('jobs')} jobs; {left} old ones left")

    during = [r for label, r in windows if label == "purge"]
    quiet = [r for label, r in windows if label == "no purge"]
    if not during:  # smoke sizes: every purge run ended within its first window
        during = [r for label, r in windows if label == "mixed"]
        report.notes.append("no window had the purge running throughout: mixed windows used")
    p99 = Figure(
        "p99 during the purge",
        "ms",
        _ms(during, "p99_ms"),
        _ms(quiet, "p99_ms"),
        goal=f"ratio <= {GOAL_RATIO}",
    )
    p99.met = p99.ratio is not None and p99.ratio <= GOAL_RATIO
    report.figures = [
        p99,
        Figure("worst window's p99 during the purge", "ms", [max(_ms(during, "p99_ms"))]),
        Figure("p50 during the purge", "ms", _ms(during, "p50_ms"), _ms(quiet, "p50_ms")),
        Figure(
            "POST /v1/jobs during the purge",
            "req/s",
            [r.rps for r in during],
            [r.rps for r in quiet],
        ),
        Figure("purge rate under load", "jobs/s", [old_jobs / sum(purge_seconds)]),
        Figure("purge duration, all runs", "s", [sum(purge_seconds)]),
        Figure(
            "on disk per job (job, 3 events, 3 deliveries, 3 attempts)",
            "bytes",
            [sum(per_job.values())],
        ),
        Figure("on disk per 1,000,000 jobs", "GB", [sum(per_job.values()) * 1e6 / 1e9]),
    ]
    report.settings = {
        "old_jobs": old_jobs,
        "rows_per_job": "1 job, 3 events, 3 deliveries, 3 delivery attempts",
        "connections": CONNECTIONS,
        "window_s": duration,
        "windows_before": before_runs,
        "driver": windows[0][1].driver if windows else None,
        "purge": "falrelay purge --older-than 30d"
        + (" --batch-size 50" if opts.smoke else "")
        + f" (batches of FALRELAY_RETENTION_BATCH_SIZE, 500; after each, a rest {REST:g} times"
        " as long as it took), a file:// store",
        "falrelay": "falrelay api, default settings but FALRELAY_DEFAULT_MAX_QUEUED_JOBS=unlimited",
    }
    return report


async def load_old_jobs(conn: asyncpg.Connection[Any], client_id: uuid.UUID, n: int) -> None:
    """n jobs that finished 60 days ago and more, 1 s apart, with their events, deliveries and
    attempts: every id derived from the job's number, so each table is one statement a chunk."""
    salt = secrets.token_hex(4)
    base = datetime.now(UTC)
    endpoint_id = uuid.uuid4()
    await conn.execute(
        "INSERT INTO webhook_endpoints (id, client_id, url, event_types, secrets) VALUES "
        "($1, $2, 'https://receiver.example/hooks', $3, '[]'::jsonb)",
        endpoint_id,
        client_id,
        [*EVENT_TYPES, "job.succeeded", "job.failed", "job.canceled"],
    )
    request = job_request()
    payload = succeeded_event("job_" + "0" * 32, base.isoformat())
    output = payload["data"]["output"]
    queue_url = "https://queue.fal.run/imagineart/imagineart-2.0-preview/requests/"
    # The job's number g and its time: 60 days and (n - g) seconds before `base`.
    at = "($1::timestamptz - interval '60 days' - ($2::int - g) * interval '1 second')"
    job_id = uuid7_sql(at, "g", salt)

    def uid(kind: str) -> str:
        return f"md5(g::text || '{kind}' || k::text || '{salt}')::uuid"

    status = (
        "CASE WHEN g % 50 = 0 THEN 'failed' WHEN g % 97 = 0 THEN 'canceled' ELSE 'succeeded' END"
    )
    for start in range(1, n + 1, CHUNK):
        stop = min(n, start + CHUNK - 1)
        series = f"generate_series({start}, {stop}) AS g"
        await conn.execute(
            f"""
            INSERT INTO jobs (id, client_id, model, status, input, metadata, output, error,
                fal_request_id, fal_status_url, fal_response_url, fal_cancel_url, attempts,
                idempotency_key, request_fingerprint, estimated_cost_usd, cost_usd,
                unit_price_usd, files, created_at, submitted_at, started_at, completed_at,
                updated_at, next_attempt_at)
            SELECT {job_id}, $3, $4, s.status, $5::jsonb, $6::jsonb,
                CASE WHEN s.status = 'succeeded' THEN $7::jsonb END,
                CASE WHEN s.status = 'failed'
                     THEN '{{"type": "model_error", "message": "the model failed"}}'::jsonb END,
                r.id, $8 || r.id || '/status', $8 || r.id, $8 || r.id || '/cancel', 1,
                r.id, decode(r.id || r.id, 'hex'), 0.05, 0.05, 0.05,
                CASE WHEN s.status = 'succeeded' THEN jsonb_build_array(jsonb_build_object(
                    'key', 'jobs/' || {job_id} || '/0-' || r.id || '.png',
                    'thumbnail_key', 'jobs/' || {job_id} || '/0-' || r.id || '.png.thumb.webp',
                    'size', 1482391, 'sha256', r.id || r.id, 'content_type', 'image/png',
                    'error', NULL, 'attempts', 1)) END,
                {at} - interval '9 s', {at} - interval '8 s', {at} - interval '7 s', {at},
                {at}, NULL
            FROM {series}
            CROSS JOIN LATERAL (SELECT md5(g::text || '{salt}') AS id) AS r
            CROSS JOIN LATERAL (SELECT {status} AS status) AS s
            """,
            base,
            n,
            client_id,
            request["model"],
            json.dumps({**request["input"], "reasoning": "low"}),
            json.dumps(request["metadata"]),
            json.dumps(output),
            queue_url,
        )
        event_type = (
            f"CASE k WHEN 1 THEN 'job.submitted' WHEN 2 THEN 'job.running' "
            f"ELSE 'job.' || {status} END"
        )
        await conn.execute(
            f"""
            INSERT INTO events (id, client_id, job_id, type, payload, created_at)
            SELECT {uid("e")}, $3, {job_id}, {event_type}, $4::jsonb,
                   {at} - (3 - k) * interval '1 s'
            FROM {series} CROSS JOIN generate_series(1, 3) AS k
            """,
            base,
            n,
            client_id,
            json.dumps(payload),
        )
        await conn.execute(
            f"""
            INSERT INTO deliveries (id, client_id, event_id, job_id, endpoint_id, status,
                attempt_count, next_attempt_at, last_status_code, succeeded_at, created_at,
                updated_at)
            SELECT {uid("d")}, $3, {uid("e")}, {job_id}, $4, 'succeeded', 1, NULL, 200,
                   {at}, {at}, {at}
            FROM {series} CROSS JOIN generate_series(1, 3) AS k
            """,
            base,
            n,
            client_id,
            endpoint_id,
        )
        await conn.execute(
            f"""
            INSERT INTO delivery_attempts (id, delivery_id, attempted_at, duration_ms,
                status_code, response_body)
            SELECT {uid("a")}, {uid("d")}, {at}, 25, 200, 'ok'
            FROM {series} CROSS JOIN generate_series(1, 3) AS k
            """,
            base,
            n,
        )


async def table_sizes(conn: asyncpg.Connection[Any]) -> dict[str, int]:
    """Each table's bytes on disk: heap, TOAST and every index."""
    return {
        table: await conn.fetchval("SELECT pg_total_relation_size($1::regclass)", table)
        for table in TABLES
    }


def _ms(results: list[LoadResult], attr: str) -> list[float]:
    values: list[Any] = [getattr(r, attr) for r in results]
    return [float(v) for v in values if v is not None]


async def _ended(process: Process) -> float:
    """When the process exited (it is waited for in a thread, beside the load)."""
    await asyncio.to_thread(process.popen.wait)
    return time.monotonic()
