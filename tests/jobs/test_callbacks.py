"""fal's result landing before the record of our own submit: the job still reads in order."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from app.auth import service as auth_service
from app.db.pool import Pool
from app.db.wakeup import Wakeup
from app.events.payloads import event_body
from app.fal import outcomes
from app.fal.outcomes import FalWebhook
from app.fal.urls import request_urls
from app.jobs import callbacks, lifecycle, repository
from app.jobs import service as jobs_service
from app.jobs.schemas import JobCreate, job_view
from app.jobs.transitions import Transitions

QUEUE_URL = "http://127.0.0.1:9"
IMAGE = {"url": "http://127.0.0.1:9/files/a.png", "content_type": "image/png"}


async def _queued_job(pool: Pool) -> tuple[uuid.UUID, str]:
    client_id, _ = await auth_service.create_client(pool, "callback-order")
    created = await jobs_service.create_job(
        pool, client_id, JobCreate.model_validate({"input": {"prompt": "p"}}), None
    )
    job_id: uuid.UUID = created.job["id"]
    return job_id, created.job["model"]


async def _events(pool: Pool, job_id: uuid.UUID) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT type, created_at, payload FROM events WHERE job_id = $1 ORDER BY created_at, id",
        job_id,
    )
    return [dict(row) for row in rows]


@pytest.mark.parametrize(
    ("body", "terminal"),
    [
        ({"status": "OK", "payload": {"images": [IMAGE]}}, "succeeded"),
        ({"status": "ERROR", "error": "Invalid status code: 500", "payload": {}}, "failed"),
    ],
)
async def test_a_result_before_the_submit_is_recorded_still_reads_in_order(
    pool: Pool, body: dict[str, Any], terminal: str
) -> None:
    job_id, model = await _queued_job(pool)
    request_id = f"req-{uuid.uuid4().hex[:12]}"
    webhook = FalWebhook.model_validate({"request_id": request_id, **body})

    # The worker has POSTed to fal; fal ran the job and called back before the worker recorded
    # fal's answer, so the job is still `queued`.
    outcome = await callbacks.apply(pool, job_id, webhook, queue_url=QUEUE_URL, wakeup=Wakeup(None))
    assert outcome is callbacks.CallbackOutcome.APPLIED

    # Then the worker records its submit, late, as it does when the job has moved on.
    submitted = request_urls(QUEUE_URL, model, request_id)
    assert (
        await lifecycle.mark_submitted(
            pool, job_id, submitted, next_poll_at=datetime.now(UTC), wakeup=None
        )
        is None
    )
    assert await lifecycle.attach_fal_request(pool, job_id, submitted) == (terminal, request_id)

    job = await pool.fetchrow(
        "SELECT status, fal_request_id, fal_response_url, created_at, submitted_at, "
        "completed_at, cost_usd FROM jobs WHERE id = $1",
        job_id,
    )
    assert job["status"] == terminal
    assert job["cost_usd"] is not None  # settled in the same transaction
    assert job["fal_request_id"] == request_id
    assert job["fal_response_url"] == submitted.response_url
    assert job["submitted_at"] is not None
    assert job["created_at"] <= job["submitted_at"] <= job["completed_at"]

    events = await _events(pool, job_id)
    assert [e["type"] for e in events] == ["job.submitted", f"job.{terminal}"]
    assert events[0]["created_at"] <= events[1]["created_at"]
    # Each event's payload is the job as it became at that step.
    assert events[0]["payload"]["data"]["status"] == "submitted"
    assert events[1]["payload"]["data"]["status"] == terminal
    assert events[1]["payload"]["data"]["submitted_at"] is not None


async def test_a_duplicate_of_that_result_changes_nothing(pool: Pool) -> None:
    job_id, _ = await _queued_job(pool)
    webhook = FalWebhook.model_validate(
        {"request_id": "req-dup", "status": "OK", "payload": {"images": [IMAGE]}}
    )
    first = await callbacks.apply(pool, job_id, webhook, queue_url=QUEUE_URL, wakeup=Wakeup(None))
    before = await _events(pool, job_id)
    again = await callbacks.apply(pool, job_id, webhook, queue_url=QUEUE_URL, wakeup=Wakeup(None))
    assert (first, again) == (
        callbacks.CallbackOutcome.APPLIED,
        callbacks.CallbackOutcome.DUPLICATE,
    )
    assert await _events(pool, job_id) == before


@pytest.mark.parametrize("named", ["the job's", "another", "none"])
async def test_a_callback_naming_the_model_records_the_same_job_and_event(
    pool: Pool, named: str
) -> None:
    """With the job's model in its URL, fal's answer is one statement that writes its own
    event; with another model, or none, it takes the longer way. Either way the job, its
    settle and its event are the same: the event's payload, byte for byte as stored, is what
    `job_view` renders from the finished row."""
    job_id, model = await _queued_job(pool)
    request_id = f"req-{uuid.uuid4().hex[:12]}"
    submitted = request_urls(QUEUE_URL, model, request_id)
    await lifecycle.mark_submitted(
        pool, job_id, submitted, next_poll_at=datetime.now(UTC), wakeup=None
    )
    webhook = FalWebhook.model_validate(
        {"request_id": request_id, "status": "OK", "payload": {"images": [IMAGE], "seed": 7}}
    )
    hint = {"the job's": model, "another": "fal-ai/flux/dev", "none": None}[named]

    outcome = await callbacks.apply(
        pool, job_id, webhook, queue_url=QUEUE_URL, wakeup=Wakeup(None), model=hint
    )
    assert outcome is callbacks.CallbackOutcome.APPLIED

    row = await pool.fetchrow(
        f"SELECT {repository.TRANSITION_COLUMNS} FROM jobs WHERE id = $1", job_id
    )
    assert row is not None
    assert row["status"] == "succeeded"
    assert row["cost_usd"] == row["estimated_cost_usd"]
    events = await pool.fetch(
        "SELECT type, payload::text AS payload, created_at FROM events WHERE job_id = $1 "
        "ORDER BY created_at, id",
        job_id,
    )
    assert [event["type"] for event in events] == ["job.submitted", "job.succeeded"]
    expected = await pool.fetchval(
        "SELECT $1::jsonb::text", event_body("job.succeeded", row["updated_at"], job_view(row))
    )
    assert events[1]["payload"] == expected
    assert events[1]["created_at"] == row["updated_at"]
    assert json.loads(expected)["data"]["files"][0]["url"] == IMAGE["url"]
    # Settled once: the month's reservation released, the cost spent.
    month = await pool.fetchrow(
        "SELECT sum(reserved_usd) AS reserved, sum(spent_usd) AS spent FROM client_spend "
        "WHERE client_id = (SELECT client_id FROM jobs WHERE id = $1)",
        job_id,
    )
    assert month is not None
    assert (month["reserved"], month["spent"]) == (0, row["cost_usd"])


async def test_only_the_jobs_model_takes_the_one_statement_way(pool: Pool) -> None:
    job_id, model = await _queued_job(pool)
    request_id = f"req-{uuid.uuid4().hex[:12]}"
    await lifecycle.mark_submitted(
        pool,
        job_id,
        request_urls(QUEUE_URL, model, request_id),
        next_poll_at=datetime.now(UTC),
        wakeup=None,
    )
    outcome = outcomes.from_webhook(
        FalWebhook.model_validate(
            {"request_id": request_id, "status": "OK", "payload": {"images": [IMAGE]}}
        )
    )

    async def finish(named: str) -> Any:
        return await lifecycle.finish(
            pool,
            job_id,
            outcome,
            fal_request_id=request_id,
            wakeup=None,
            at_fal_only=True,
            model=named,
        )

    assert await finish("fal-ai/flux/dev") is None
    assert await pool.fetchval("SELECT status FROM jobs WHERE id = $1", job_id) == "submitted"
    row = await finish(model)
    assert row is not None
    # The columns only the one statement returns: its deliveries, and the settle's client.
    assert row["deliveries"] == 0
    assert row["client_name"] == "callback-order"


async def _apply_with(
    pool: Pool, transitions: Transitions, job_id: uuid.UUID, request_id: str, model: str
) -> callbacks.CallbackOutcome:
    webhook = FalWebhook.model_validate(
        {"request_id": request_id, "status": "OK", "payload": {"images": [IMAGE]}}
    )
    return await callbacks.apply(
        pool,
        job_id,
        webhook,
        queue_url=QUEUE_URL,
        wakeup=Wakeup(None),
        model=model,
        transitions=transitions,
    )


async def test_a_result_during_the_first_submission_waits_for_its_record(pool: Pool) -> None:
    job_id, model = await _queued_job(pool)
    request_id = f"req-{uuid.uuid4().hex[:12]}"
    transitions = Transitions(pool, None)
    try:
        with transitions.submitting(job_id, attempt=1):
            # fal's callback comes while the submission is in flight in this process.
            callback = asyncio.create_task(
                _apply_with(pool, transitions, job_id, request_id, model)
            )
            # Unwaited, it would adopt fal's request within a few round trips (and the record
            # below would then find the job finished): given half a second, it is still waiting.
            done, _ = await asyncio.wait({callback}, timeout=0.5)
            assert not done
            assert await pool.fetchval("SELECT status FROM jobs WHERE id = $1", job_id) == (
                "queued"
            )
            # The submission's record finds the job queued, as if fal had not answered yet:
            # nothing was adopted.
            recorded = await transitions.submitted(
                job_id,
                request_urls(QUEUE_URL, model, request_id),
                next_poll_at=datetime.now(UTC),
            )
            assert recorded is not None
        assert await callback is callbacks.CallbackOutcome.APPLIED
    finally:
        await transitions.aclose()
    events = await _events(pool, job_id)
    assert [e["type"] for e in events] == ["job.submitted", "job.succeeded"]
    assert await pool.fetchval("SELECT status FROM jobs WHERE id = $1", job_id) == "succeeded"


@pytest.mark.parametrize("attempt", [1, 2])
async def test_a_result_adopts_the_request_when_the_wait_is_over_or_not_for_it(
    pool: Pool, attempt: int
) -> None:
    """Past the bound, or during a later attempt (an earlier, ambiguous one may be the
    request fal answers for), the callback adopts fal's request as it would unwaited."""
    job_id, model = await _queued_job(pool)
    request_id = f"req-{uuid.uuid4().hex[:12]}"
    transitions = Transitions(pool, None, submission_wait=0.05 if attempt == 1 else 3600.0)
    try:
        with transitions.submitting(job_id, attempt=attempt):
            # A later attempt is not waited for at all (its bound here is an hour).
            async with asyncio.timeout(30):
                outcome = await _apply_with(pool, transitions, job_id, request_id, model)
            assert outcome is callbacks.CallbackOutcome.APPLIED
            # The submission's late record finds the job finished.
            late = await transitions.submitted(
                job_id,
                request_urls(QUEUE_URL, model, request_id),
                next_poll_at=datetime.now(UTC),
            )
            assert late is None
    finally:
        await transitions.aclose()
    events = await _events(pool, job_id)
    assert [e["type"] for e in events] == ["job.submitted", "job.succeeded"]
