"""Prometheus metrics. Counters and histograms are process-wide (the default registry);
queue depths are read from Postgres when /metrics is scraped, so any replica reports them —
but at most once per `FALRELAY_METRICS_QUEUE_REFRESH_SECONDS` per process, not on every scrape.
"""

from __future__ import annotations

import functools
import hmac
import time
from typing import TypeVar, cast

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

from app.db.pool import Pool

M = TypeVar("M", Counter, Histogram)


def child(metric: M, *values: str) -> M:
    """`metric.labels(*values)`, looked up once per label values: `labels()` takes a lock and
    builds its key on every call (2.3 us against 0.3 cached), about ten times per job on the
    hot paths. Nothing here removes a child, so a cached one stays the metric's."""
    return cast(M, _child(metric, values))


@functools.lru_cache(maxsize=4096)
def _child(metric: Counter | Histogram, values: tuple[str, ...]) -> Counter | Histogram:
    return metric.labels(*values)


HTTP_REQUESTS = Counter(
    "falrelay_http_requests_total", "HTTP requests answered", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "falrelay_http_request_duration_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60),
)
JOB_TRANSITIONS = Counter(
    "falrelay_job_transitions_total", "Job state changes, by the status reached", ["status"]
)
# Counted when a job settles (reaches a terminal state). Client names are the operator's, so
# their number stays small; amounts are exact in Postgres and only summed as floats here.
JOBS_SETTLED = Counter(
    "falrelay_jobs_total",
    "Jobs finished, by client, model and status",
    ["client", "model", "status"],
)
COST_USD = Counter(
    "falrelay_cost_usd_total", "What finished jobs cost at fal, in dollars", ["client", "model"]
)
FAL_CALLS = Counter(
    "falrelay_fal_calls_total", "Calls to fal's queue API", ["operation", "outcome"]
)
FAL_LATENCY = Histogram(
    "falrelay_fal_call_duration_seconds",
    "Latency of calls to fal's queue API",
    ["operation"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
FAL_CALLBACKS = Counter(
    "falrelay_fal_callbacks_total", "fal webhooks received, by what they did", ["outcome"]
)
DELIVERIES = Counter(
    "falrelay_deliveries_total", "Webhook delivery attempts, by outcome", ["outcome"]
)
DELIVERY_LATENCY = Histogram(
    "falrelay_delivery_duration_seconds",
    "Webhook delivery attempt latency",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15),
)
LOOP_RESTARTS = Counter(
    "falrelay_loop_restarts_total",
    "Long-running loops restarted after a failure or a stall, by loop",
    ["loop"],
)
# Retention, `falrelay purge` and job deletions (app.lifecycle): rows by table, and "files".
DELETED = Counter(
    "falrelay_deleted_total",
    "Rows and stored files deleted by retention, purges and job deletions, by kind",
    ["kind"],
)
QUEUE_DEPTH = Gauge("falrelay_queue_depth", "Rows due now, by queue", ["queue"])
QUEUE_OLDEST = Gauge(
    "falrelay_queue_oldest_due_seconds", "Age of the oldest row due, by queue", ["queue"]
)
ENDPOINTS_DISABLED = Gauge(
    "falrelay_webhook_endpoints_disabled", "Webhook endpoints currently disabled"
)

# Each queue's scan reads only its rows: for submissions a partial index of them (the claim's
# per-client index, read whole), for deliveries the delivery queue (migration 0030); the
# whole read is one round trip.
QUEUES_SQL = """
SELECT 'submission' AS queue, count(*) AS depth,
       COALESCE(EXTRACT(EPOCH FROM now() - min(next_attempt_at)), 0) AS oldest
FROM jobs WHERE status = 'queued' AND next_attempt_at <= now()
UNION ALL
SELECT 'reconciliation', count(*), COALESCE(EXTRACT(EPOCH FROM now() - min(next_attempt_at)), 0)
FROM jobs WHERE status IN ('submitted', 'running') AND next_attempt_at <= now()
UNION ALL
SELECT 'delivery', count(*), COALESCE(EXTRACT(EPOCH FROM now() - min(next_attempt_at)), 0)
FROM delivery_queue WHERE next_attempt_at <= now()
UNION ALL
SELECT 'endpoints_disabled', count(*), 0 FROM webhook_endpoints WHERE NOT enabled
"""


# Why a per-process age and not a leader: counting a deep backlog reads every due row, and with
# N replicas each scraped by two Prometheus servers every 15 s a read per scrape is 2N counts
# per interval, growing with replicas and scrapers. Capped by age, it is at most N per interval
# whoever scrapes and how often; each replica still reports the gauges itself (no election
# that can lapse, nothing missing from a replica a dashboard happens to pick).
DEFAULT_QUEUE_REFRESH_SECONDS = 15.0


class QueueGauges:
    """When this process last read the queue gauges, so it reads them again only once they are
    `max_age` old. A scrape that finds a read in flight serves the gauges as they stand."""

    def __init__(self) -> None:
        self._read_at: float | None = None
        self._reading = False

    async def refresh(self, pool: Pool, *, max_age: float, now: float) -> bool:
        """Reads the gauges if they are due; whether it did."""
        if self._reading or (self._read_at is not None and now - self._read_at < max_age):
            return False
        self._reading = True
        try:
            rows = await pool.fetch(QUEUES_SQL)
        finally:
            self._reading = False
        for row in rows:
            if row["queue"] == "endpoints_disabled":
                ENDPOINTS_DISABLED.set(row["depth"])
                continue
            QUEUE_DEPTH.labels(row["queue"]).set(row["depth"])
            QUEUE_OLDEST.labels(row["queue"]).set(float(row["oldest"]))
        self._read_at = now
        return True


# One per process, like the gauges it fills.
_QUEUES = QueueGauges()


async def render(
    pool: Pool,
    *,
    max_age: float = DEFAULT_QUEUE_REFRESH_SECONDS,
    queues: QueueGauges | None = None,
    now: float | None = None,
) -> tuple[bytes, str]:
    when = time.monotonic() if now is None else now
    await (queues or _QUEUES).refresh(pool, max_age=max_age, now=when)
    return generate_latest(), CONTENT_TYPE_LATEST


def scrape_allowed(authorization: str | None, token: str | None) -> bool:
    """With FALRELAY_METRICS_TOKEN set, a scrape must carry `Authorization: Bearer <token>`."""
    if token is None:
        return True
    scheme, _, given = (authorization or "").partition(" ")
    # Bytes: compare_digest refuses str with non-ASCII characters, and a header may carry any.
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.encode()
    )
