"""The event types, defined here once.

Everything else derives from these: the webhook endpoint schemas, the OpenAPI document's
`webhooks` section, the fan-out (which sends terminal events to a job's callback_url) and the
event stream (which ends after one).
"""

from __future__ import annotations

from typing import Literal, get_args

# One per job state change, named for the state the job entered.
JobEventType = Literal[
    "job.submitted", "job.running", "job.succeeded", "job.failed", "job.canceled"
]
# An endpoint's test event (POST /v1/webhook-endpoints/{id}/test).
PingEventType = Literal["ping"]
EventType = Literal[JobEventType, PingEventType]

JOB_EVENT_TYPES: tuple[JobEventType, ...] = get_args(JobEventType)
TERMINAL_EVENT_TYPES: tuple[JobEventType, ...] = ("job.succeeded", "job.failed", "job.canceled")

# What each event says, as the OpenAPI document's `webhooks` section describes it.
SUMMARIES: dict[EventType, str] = {
    "job.submitted": "fal accepted the job",
    "job.running": "fal is running the job",
    "job.succeeded": "the job has its output",
    "job.failed": "the job failed; `data.error` says why",
    "job.canceled": "the job was canceled",
    "ping": "a test event (POST /v1/webhook-endpoints/{id}/test)",
}
