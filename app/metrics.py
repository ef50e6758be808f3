"""Prometheus metrics. Counters and histograms are process-wide (the default registry);
queue depths are read from Postgres when /metrics is scraped, so any API replica reports them.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

from app.db.pool import Pool

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
QUEUE_DEPTH = Gauge("falrelay_queue_depth", "Rows due now, by queue", ["queue"])
QUEUE_OLDEST = Gauge(
    "falrelay_queue_oldest_due_seconds", "Age of the oldest row due, by queue", ["queue"]
)
ENDPOINTS_DISABLED = Gauge(
    "falrelay_webhook_endpoints_disabled", "Webhook endpoints currently disabled"
)

# Each queue's scan uses its partial index; the whole read is one round trip.
QUEUES_SQL = """
SELECT 'submission' AS queue, count(*) AS depth,
       COALESCE(EXTRACT(EPOCH FROM now() - min(next_attempt_at)), 0) AS oldest
FROM jobs WHERE status = 'queued' AND next_attempt_at <= now()
UNION ALL
SELECT 'reconciliation', count(*), COALESCE(EXTRACT(EPOCH FROM now() - min(next_attempt_at)), 0)
FROM jobs WHERE status IN ('submitted', 'running') AND next_attempt_at <= now()
UNION ALL
SELECT 'delivery', count(*), COALESCE(EXTRACT(EPOCH FROM now() - min(next_attempt_at)), 0)
FROM deliveries WHERE status = 'pending' AND next_attempt_at <= now()
UNION ALL
SELECT 'endpoints_disabled', count(*), 0 FROM webhook_endpoints WHERE NOT enabled
"""


async def render(pool: Pool) -> tuple[bytes, str]:
    for row in await pool.fetch(QUEUES_SQL):
        if row["queue"] == "endpoints_disabled":
            ENDPOINTS_DISABLED.set(row["depth"])
            continue
        QUEUE_DEPTH.labels(row["queue"]).set(row["depth"])
        QUEUE_OLDEST.labels(row["queue"]).set(float(row["oldest"]))
    return generate_latest(), CONTENT_TYPE_LATEST
