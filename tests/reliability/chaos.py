"""The fault run's bookkeeping: what it did to the service, and what it finds afterwards.

`Disruptions` records when the service was killed and when Postgres was down; `audit` reads
Postgres, the fake fal's own memory of every request, the receivers' logs and the service's
logs, and returns the figures with every discrepancy found. Nothing here trusts the service's
own account of itself: an outcome is checked against what the fake fal decided, a delivery
against what the receiver got.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from app import ids
from app.db.pool import Pool
from app.fakefal import FakeFal
from app.fakefal.failures import Failure
from app.fakefal.store import FakeRequest
from app.ids import EVENT_ID_PREFIX
from app.webhooks import signing
from tests.reliability.receivers import FaultyReceiver

TERMINAL = ("succeeded", "failed", "canceled")


@dataclass
class Disruptions:
    kills: list[float] = field(default_factory=list)  # wall-clock times of SIGKILLs
    postgres_down: list[tuple[float, float]] = field(default_factory=list)

    def near(self, at: float, before: float, after: float) -> bool:
        """Whether a kill or a Postgres outage fell within [at - before, at + after]."""
        start, end = at - before, at + after
        return any(start <= kill <= end for kill in self.kills) or any(
            down <= end and up >= start for down, up in self.postgres_down
        )


@dataclass(frozen=True)
class Subscription:
    path: str
    secret: str
    event_types: frozenset[str]


@dataclass
class Audit:
    figures: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def problem(self, text: str) -> None:
        if len(self.problems) < 50:
            self.problems.append(text)
        self.figures["problems"] = self.figures.get("problems", 0) + 1


def expected_outcome(request: FakeRequest) -> tuple[str, str | None]:
    """The job status (and error type) the fake's decision for this request means."""
    outcome = request.result()
    if request.cancelled_at is not None:
        return "canceled", None
    if isinstance(outcome, Failure):
        return "failed", "invalid_input" if outcome.status_code == 422 else outcome.error_type
    return "succeeded", None


def _created_at(job_id: str) -> float:
    """A job id's wall-clock time: the first 48 bits of its UUIDv7 are Unix milliseconds."""
    value = ids.decode("job", job_id)
    return (value.int >> 80) / 1000 if value is not None else 0.0


def _job_of(request: FakeRequest) -> str | None:
    """The job a fal request was made for: its webhook URL names it."""
    if request.fal_webhook is None:
        return None
    parts = request.fal_webhook.split("/callbacks/fal/", 1)
    return parts[1].split("/", 1)[0] if len(parts) == 2 else None


def ambiguous_submits(logs: list[Path]) -> set[str]:
    """Jobs whose submission the service itself logged as ambiguous (an answer it never got)."""
    jobs: set[str] = set()
    for log in logs:
        for line in log.read_bytes().splitlines():
            if b"ambiguous submit" not in line:
                continue
            entry = orjson.loads(line)
            if entry.get("job_id"):
                jobs.add(entry["job_id"])
    return jobs


async def audit(
    conn: Pool,
    *,
    client_id: uuid.UUID,
    acknowledged: dict[int, str],
    jobs_wanted: int,
    callback_jobs: set[str],
    fake: FakeFal,
    receiver: FaultyReceiver,
    subscriptions: list[Subscription],
    callback: Subscription,
    disruptions: Disruptions,
    logs: list[Path],
    submit_lease: float,
    fal_timeout: float,
) -> Audit:
    result = Audit()
    fig = result.figures
    fig["jobs_acknowledged"] = len(acknowledged)
    if len(acknowledged) != jobs_wanted:
        result.problem(f"{jobs_wanted - len(acknowledged)} jobs were never acknowledged")
    if len(set(acknowledged.values())) != len(acknowledged):
        result.problem("one Idempotency-Key retry made a second job")

    rows = await conn.fetch(
        "SELECT id, status, error, fal_request_id, callback_url FROM jobs WHERE client_id = $1",
        client_id,
    )
    jobs = {ids.encode("job", row["id"]): row for row in rows}
    fig["jobs_in_database"] = len(jobs)
    if len(jobs) != len(acknowledged):
        result.problem(f"{len(jobs)} jobs in the database for {len(acknowledged)} acknowledged")
    lost = [job_id for job_id in acknowledged.values() if job_id not in jobs]
    fig["lost_jobs"] = len(lost)
    for job_id in lost:
        created = _created_at(job_id)
        result.problem(
            f"acknowledged job {job_id} is not in the database (created {created:.3f}; "
            f"kills {disruptions.kills}, Postgres down {disruptions.postgres_down})"
        )

    # Outcomes: each job against the fake's decision for the fal request it adopted.
    requests_by_job: dict[str, list[FakeRequest]] = {}
    for request in fake.requests:
        job_id = _job_of(request)
        if job_id is not None:
            requests_by_job.setdefault(job_id, []).append(request)
    statuses: Counter[str] = Counter()
    for job_id, row in jobs.items():
        statuses[row["status"]] += 1
        if row["status"] not in TERMINAL:
            result.problem(f"job {job_id} is still {row['status']}")
            continue
        adopted = fake.requests.get(row["fal_request_id"] or "")
        error_type = (row["error"] or {}).get("type")
        if adopted is None:
            # Never at fal: only a submission that fal refused every time may end so.
            if error_type != "submission_failed":
                result.problem(f"job {job_id} is {row['status']} with no fal request of its own")
            continue
        if _job_of(adopted) != job_id:
            result.problem(f"job {job_id} adopted fal request {adopted.id} of another job")
        if (row["status"], error_type) != expected_outcome(adopted):
            result.problem(
                f"job {job_id}: {row['status']}/{error_type}, fal decided "
                f"{expected_outcome(adopted)}"
            )
    for status in TERMINAL:
        fig[f"jobs_{status}"] = statuses[status]
    fig["jobs_not_terminal"] = sum(n for s, n in statuses.items() if s not in TERMINAL)

    # fal submissions per job, against the README's submission policy: a second request for a
    # job is allowed only when the answer to an earlier one was lost (its worker was killed, or
    # Postgres went away before the record, or the call timed out) and fal's webhook for it
    # did not arrive within the submit lease.
    ambiguous = ambiguous_submits(logs)
    duplicates = explained = 0
    for job_id, requests in requests_by_job.items():
        adopted_id = jobs[job_id]["fal_request_id"] if job_id in jobs else None
        for request in requests:
            if request.id == adopted_id or len(requests) == 1:
                continue
            duplicates += 1
            landed = [at - request.submitted_at for at in request.webhook_delivered_at]
            in_time = any(delay <= submit_lease for delay in landed)
            lost_answer = job_id in ambiguous or disruptions.near(
                request.submitted_at, before=1.0, after=fal_timeout + 2.0
            )
            if lost_answer and not in_time:
                explained += 1
            else:
                result.problem(
                    f"job {job_id}: fal request {request.id} was submitted again without cause "
                    f"(webhook landed after {landed} s, answer lost: {lost_answer})"
                )
    fig["fal_requests"] = len(fake.requests)
    fig["duplicate_fal_submissions"] = duplicates
    fig["duplicate_fal_submissions_within_policy"] = explained

    # Events: one terminal event per job, of the job's final status.
    events = await conn.fetch(
        "SELECT id, job_id, type FROM events WHERE client_id = $1 AND job_id IS NOT NULL",
        client_id,
    )
    terminal_events: Counter[str] = Counter()
    for event in events:
        if event["type"] in (f"job.{s}" for s in TERMINAL):
            job_id = ids.encode("job", event["job_id"])
            terminal_events[job_id] += 1
            if jobs[job_id]["status"] != event["type"].removeprefix("job."):
                result.problem(f"job {job_id} is {jobs[job_id]['status']}: event {event['type']}")
    for job_id in jobs:
        if terminal_events[job_id] != 1:
            result.problem(f"job {job_id} has {terminal_events[job_id]} terminal events")
    fig["events"] = len(events)

    # Deliveries: every (subscriber, event) arrived at least once, and every arrival is signed.
    expected: list[tuple[Subscription, str]] = []
    for event in events:
        webhook_id = ids.encode(EVENT_ID_PREFIX, event["id"])
        expected += [(s, webhook_id) for s in subscriptions if event["type"] in s.event_types]
        job_id = ids.encode("job", event["job_id"])
        if job_id in callback_jobs and event["type"] in callback.event_types:
            expected.append((callback, webhook_id))
    received = {s.path: receiver.received(s.path) for s in [*subscriptions, callback]}
    lost_deliveries = [(s.path, w) for s, w in expected if received[s.path][w] == 0]
    fig["deliveries_expected"] = len(expected)
    fig["lost_deliveries"] = len(lost_deliveries)
    for path, webhook_id in lost_deliveries[:10]:
        result.problem(f"{path} never received {webhook_id}")
    accepted = {s.path: receiver.accepted(s.path) for s in [*subscriptions, callback]}
    fig["delivery_arrivals"] = len(receiver.arrivals)
    fig["duplicate_deliveries"] = sum(
        n - 1 for counts in accepted.values() for n in counts.values() if n > 1
    )
    secrets = {s.path: s.secret for s in [*subscriptions, callback]}
    forged = 0
    for arrival in receiver.arrivals:
        try:
            signing.verify(secrets[arrival.path], arrival.body, arrival.headers)
        except signing.WebhookVerificationError:
            forged += 1
    if forged:
        result.problem(f"{forged} deliveries did not verify with their endpoint's secret")

    pending = await conn.fetchval(
        "SELECT count(*) FROM deliveries WHERE client_id = $1 AND status <> 'succeeded'",
        client_id,
    )
    fig["deliveries_not_succeeded"] = pending
    if pending:
        result.problem(f"{pending} deliveries are not succeeded")
    fig["delivery_rows"] = await conn.fetchval(
        "SELECT count(*) FROM deliveries WHERE client_id = $1", client_id
    )
    return result
