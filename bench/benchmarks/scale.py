"""5. Scale: `GET /v1/jobs/{id}` and the first page of `GET /v1/jobs` with 1,000,000 jobs in
the table, against the same requests with 1,000.

Two databases, filled with one `INSERT ... SELECT generate_series` per 100,000 rows (one
tenant's history: finished jobs 100 ms apart), then `VACUUM ANALYZE` (what autovacuum does
soon after such a load) and a CHECKPOINT. One `falrelay api` per database; the load
alternates between them. The plans are read with `EXPLAIN` of the very SQL the service runs,
captured from `app.jobs.service`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from typing import Any

import asyncpg

from app import ids
from app.errors import NotFound
from app.ids import JOB_ID_PREFIX
from app.jobs import service
from app.pagination import encode_cursor
from bench.benchmarks.common import check_errors, connect, load_summary
from bench.benchmarks.rows import insert_finished_jobs
from bench.context import Context, create_api_key, start_falrelay
from bench.load import LoadResult, LoadSpec
from bench.report import Figure, Report

CONNECTIONS = 64
RATIO_GOAL = 1.5
SMALL = 1_000
SAMPLED_IDS = 1_000
INDEX_NODES = {"Index Scan", "Index Only Scan", "Limit", "Result"}


async def run(ctx: Context) -> Report:
    opts = ctx.options
    large = 3_000 if opts.smoke else 1_000_000
    report = ctx.report(
        "scale",
        f"GET /v1/jobs/{{id}} and GET /v1/jobs?limit=20 with {large:,} jobs in the table",
        baseline=f"the same requests with {SMALL:,} jobs in the table",
        goal=f"p99 at {large:,} <= {RATIO_GOAL}x p99 at {SMALL:,}; EXPLAIN shows index scans only",
    )
    duration = 1.0 if opts.smoke else min(opts.duration_s, 10.0)
    runs = 1 if opts.smoke else opts.runs

    tables: dict[str, Table] = {}
    for label, n in (("small", SMALL), ("large", large)):
        tables[label] = await _fill(ctx, label, n)
    report.details["fill_seconds"] = {k: round(t.fill_seconds, 1) for k, t in tables.items()}
    report.details["table_size"] = {k: t.size for k, t in tables.items()}

    plans_ok = True
    for label, table in tables.items():
        plans = await _explain(table)
        report.details[f"plans_{label}"] = plans
        for what, plan in plans.items():
            if not plan["index_only"]:
                if label == "large":
                    plans_ok = False
                report.notes.append(f"{label}: {what} plan uses {plan['nodes']}")

    with ctx.processes("scale") as procs:
        started = await asyncio.gather(
            *(
                start_falrelay(procs, "api", table.database_url, name=f"falrelay-api-{label}")
                for label, table in tables.items()
            )
        )
        urls = {label: url for label, (_, url) in zip(tables, started, strict=True)}

        def spec(label: str, paths: list[str], seconds: float) -> LoadSpec:
            return LoadSpec(
                base_url=urls[label],
                paths=paths,
                headers={"Authorization": f"Bearer {tables[label].key}"},
                connections=CONNECTIONS,
                duration_s=seconds,
            )

        requests: dict[str, dict[str, list[str]]] = {
            "GET /v1/jobs/{id}": {label: t.job_paths for label, t in tables.items()},
            "GET /v1/jobs?limit=20": {label: ["/v1/jobs?limit=20"] for label in tables},
        }
        if not opts.smoke:
            for paths_of in requests.values():
                for label in tables:
                    await ctx.load(spec(label, paths_of[label], opts.warmup_s))

        results: dict[tuple[str, str], list[LoadResult]] = {
            (r, label): [] for r in requests for label in tables
        }
        for i in range(runs):
            for request, paths_of in requests.items():
                order = ["small", "large"] if i % 2 == 0 else ["large", "small"]
                for label in order:
                    result = await ctx.load(spec(label, paths_of[label], duration))
                    check_errors(result, f"{request} {label} run {i + 1}", report.notes)
                    results[(request, label)].append(result)

    for request in requests:
        big, small = results[(request, "large")], results[(request, "small")]
        p99 = Figure(
            f"{request} p99",
            "ms",
            [r.p99_ms or 0 for r in big],
            [r.p99_ms or 0 for r in small],
            goal=f"ratio <= {RATIO_GOAL}",
        )
        p99.met = p99.ratio is not None and p99.ratio <= RATIO_GOAL
        report.figures += [
            p99,
            Figure(
                f"{request} p50", "ms", [r.p50_ms or 0 for r in big], [r.p50_ms or 0 for r in small]
            ),
            Figure(f"{request} throughput", "req/s", [r.rps for r in big], [r.rps for r in small]),
        ]
    index_figure = Figure(
        "plans on index scans only", "bool", [1.0 if plans_ok else 0.0], goal="yes"
    )
    index_figure.met = plans_ok
    report.figures.append(index_figure)
    report.settings = {
        "rows": {"small": SMALL, "large": large},
        "connections": CONNECTIONS,
        "duration_s": duration,
        "runs": runs,
        "ids_sampled": SAMPLED_IDS,
        "driver": next(iter(results.values()))[0].driver if runs else None,
    }
    report.details["runs"] = {
        f"{request} {label}": [load_summary(r) for r in rs]
        for (request, label), rs in results.items()
    }
    return report


class Table:
    def __init__(self, database_url: str, client_id: uuid.UUID, key: str) -> None:
        self.database_url = database_url
        self.client_id = client_id
        self.key = key
        self.job_paths: list[str] = []
        self.fill_seconds = 0.0
        self.size = ""


async def _fill(ctx: Context, label: str, n: int) -> Table:
    database_url = await ctx.postgres.create_database(f"scale_{label}")
    client_id, key = await create_api_key(database_url)
    table = Table(database_url, client_id, key)
    conn = await connect(database_url)
    try:
        started = time.perf_counter()
        await insert_finished_jobs(conn, client_id, n)
        await conn.execute("VACUUM ANALYZE jobs")
        with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
            await conn.execute("CHECKPOINT")
        table.fill_seconds = time.perf_counter() - started
        table.size = await conn.fetchval("SELECT pg_size_pretty(pg_total_relation_size('jobs'))")
        # Ids from all over the table, so lookups are not all in the hot end of the index.
        rows = await conn.fetch(
            "SELECT id FROM jobs WHERE client_id = $1 ORDER BY random() LIMIT $2",
            client_id,
            SAMPLED_IDS,
        )
        table.job_paths = [f"/v1/jobs/{ids.encode(JOB_ID_PREFIX, r['id'])}" for r in rows]
    finally:
        await conn.close()
    return table


class _Recorder:
    """Stands in for the pool to capture the SQL (and arguments) the service sends."""

    def __init__(self) -> None:
        self.calls: list[Captured] = []

    async def fetchrow(self, sql: str, *args: Any) -> None:
        self.calls.append((sql, args))

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        self.calls.append((sql, args))
        return []


Captured = tuple[str, tuple[Any, ...]]


async def _service_sql(table: Table, conn: asyncpg.Connection[Any]) -> dict[str, Captured]:
    recorder: Any = _Recorder()
    some_id = table.job_paths[0].rsplit("/", 1)[1]
    with contextlib.suppress(NotFound):
        await service.get_job(recorder, table.client_id, some_id)
    page: dict[str, Any] = {
        "status": None,
        "model": None,
        "created_after": None,
        "created_before": None,
        "limit": 20,
    }
    await service.list_jobs(recorder, table.client_id, cursor=None, **page)
    # A page from the middle of the history: the keyset condition must still be a range scan.
    middle: Any = await conn.fetchrow(
        "SELECT created_at, id FROM jobs WHERE client_id = $1 ORDER BY created_at DESC, id DESC "
        "OFFSET (SELECT count(*) / 2 FROM jobs) LIMIT 1",
        table.client_id,
    )
    await service.list_jobs(
        recorder, table.client_id, cursor=encode_cursor(middle["created_at"], middle["id"]), **page
    )
    names = ["GET /v1/jobs/{id}", "GET /v1/jobs?limit=20", "GET /v1/jobs?limit=20&cursor=<middle>"]
    return dict(zip(names, recorder.calls, strict=True))


async def _explain(table: Table) -> dict[str, Any]:
    conn = await connect(table.database_url)
    try:
        plans = {}
        for what, (sql, args) in (await _service_sql(table, conn)).items():
            raw = await conn.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}", *args)
            plan = json.loads(raw)[0]
            nodes = sorted(_node_types(plan["Plan"]))
            plans[what] = {
                "nodes": nodes,
                "index_only": set(nodes) <= INDEX_NODES,
                "execution_ms": plan.get("Execution Time"),
                "text": await _explain_text(conn, sql, args),
            }
        return plans
    finally:
        await conn.close()


async def _explain_text(
    conn: asyncpg.Connection[Any], sql: str, args: tuple[Any, ...]
) -> list[str]:
    rows = await conn.fetch(f"EXPLAIN {sql}", *args)
    return [r[0] for r in rows]


def _node_types(plan: dict[str, Any]) -> set[str]:
    found = {plan["Node Type"]}
    for child in plan.get("Plans", []):
        found |= _node_types(child)
    return found
