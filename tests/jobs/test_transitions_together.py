"""fal's answers to submissions that come together are recorded by one statement
(app.jobs.transitions), each job by its own compare-and-set, with its own event and deliveries,
as `lifecycle.mark_submitted` records one."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from app import ids
from app.db.pool import Pool
from app.db.wakeup import Wakeup
from app.events.payloads import event_body
from app.fal.client import Submitted
from app.fal.outcomes import Succeeded
from app.jobs import repository
from app.jobs.schemas import job_view
from app.jobs.transitions import Transitions
from tests.support import Tenant

POLL_AT = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
# Only stored here: no worker runs, so nothing is ever sent to it.
PUBLIC_URL = "https://93.184.215.14/hooks/falrelay"
PRICE = Decimal("0.03")


async def _queued(pool: Pool, client_id: uuid.UUID, n: int) -> list[uuid.UUID]:
    made = []
    for k in range(n):
        job = repository.NewJob(
            id=ids.uuid7(),
            client_id=client_id,
            model="m",
            input={"prompt": f"fox {k}"},
            metadata={},
            callback_url=None,
        )
        row = await repository.intake(
            pool, job, key=None, fingerprint=None, max_queued_jobs=None, default_budget=None
        )
        assert row is not None
        made.append(job.id)
    return made


def _submitted(job_id: uuid.UUID, n: int) -> Submitted:
    """fal's answer for the nth job: ids unique across tests (the index on them is)."""
    base = f"http://fal.test/m/requests/req-{n}-{job_id}"
    return Submitted(f"req-{n}-{job_id}", f"{base}/status", base, f"{base}/cancel")


def _by_transaction(rows: list[Any]) -> list[set[uuid.UUID]]:
    """The rows' job ids, grouped by the transaction that last wrote them (their `xmin`),
    smallest group first."""
    groups: dict[str, set[uuid.UUID]] = {}
    for row in rows:
        groups.setdefault(row["xmin"], set()).add(row["id"])
    return sorted(groups.values(), key=len)


async def _record_all(transitions: Transitions, job_ids: list[uuid.UUID]) -> list[Any]:
    return await asyncio.gather(
        *(
            transitions.submitted(
                job_id, _submitted(job_id, n), next_poll_at=POLL_AT + timedelta(seconds=n)
            )
            for n, job_id in enumerate(job_ids)
        ),
        return_exceptions=True,
    )


async def test_answers_that_come_together_share_a_statement(tenant: Tenant, pool: Pool) -> None:
    endpoint = await tenant.http.post(
        "/v1/webhook-endpoints", json={"url": PUBLIC_URL, "event_types": ["job.submitted"]}
    )
    assert endpoint.status_code == 201, endpoint.text
    job_ids = await _queued(pool, tenant.client_id, 6)
    # Recorded in an order that is not the ids': the statement takes its locks in theirs.
    job_ids.reverse()

    rows = await _record_all(Transitions(pool, Wakeup(None)), job_ids)

    assert [row["id"] for row in rows] == job_ids
    assert [row["fal_request_id"] for row in rows] == [
        f"req-{n}-{job_id}" for n, job_id in enumerate(job_ids)
    ]
    stored = await pool.fetch(
        "SELECT id, xmin::text AS xmin, status, fal_request_id, fal_status_url, fal_cancel_url, "
        "next_attempt_at, locked_until, submitted_at FROM jobs WHERE client_id = $1",
        tenant.client_id,
    )
    # The first alone, at once; the five that came while it ran, in one transaction.
    assert _by_transaction(stored) == [{job_ids[0]}, set(job_ids[1:])]
    by_id = {row["id"]: row for row in stored}
    for n, job_id in enumerate(job_ids):
        row = by_id[job_id]
        assert row["status"] == "submitted"
        answer = _submitted(job_id, n)
        assert (row["fal_request_id"], row["fal_status_url"], row["fal_cancel_url"]) == (
            answer.request_id,
            answer.status_url,
            answer.cancel_url,
        )
        assert row["next_attempt_at"] == POLL_AT + timedelta(seconds=n)
        assert row["locked_until"] is None
        assert row["submitted_at"] is not None

    # Each job's own event, its payload the job as the statement left it, and one delivery
    # each to the endpoint.
    events = await pool.fetch(
        "SELECT e.id, e.job_id, e.type, e.payload::text AS payload, e.created_at, "
        "(SELECT count(*) FROM deliveries d WHERE d.event_id = e.id) AS deliveries "
        "FROM events e WHERE e.client_id = $1",
        tenant.client_id,
    )
    assert sorted(event["job_id"] for event in events) == sorted(job_ids)
    assert len({event["id"] for event in events}) == 6
    returned = {row["id"]: row for row in rows}
    for event in events:
        assert event["type"] == "job.submitted"
        assert event["deliveries"] == 1
        row = returned[event["job_id"]]
        assert event["created_at"] == row["updated_at"]
        # Byte for byte as the JSON codec stores the body rendered from the row returned.
        assert event["payload"] == await pool.fetchval(
            "SELECT $1::jsonb::text", event_body("job.submitted", row["updated_at"], job_view(row))
        )


async def test_a_job_that_moved_on_is_left_as_it_is(tenant: Tenant, pool: Pool) -> None:
    job_ids = await _queued(pool, tenant.client_id, 4)
    await pool.execute("UPDATE jobs SET status = 'canceled' WHERE id = $1", job_ids[2])

    rows = await _record_all(Transitions(pool, Wakeup(None)), job_ids)

    assert rows[2] is None
    assert [rows[n]["id"] for n in (0, 1, 3)] == [job_ids[n] for n in (0, 1, 3)]
    canceled = await pool.fetchrow(
        "SELECT status, fal_request_id FROM jobs WHERE id = $1", job_ids[2]
    )
    assert tuple(canceled) == ("canceled", None)
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM events WHERE client_id = $1 AND type = 'job.submitted'",
            tenant.client_id,
        )
        == 3
    )


MODEL = "imagineart/imagineart-2.0-preview/text-to-image"


async def _at_fal(
    pool: Pool, client_id: uuid.UUID, n: int, *, callback_url: str | None = None
) -> list[uuid.UUID]:
    """n jobs of MODEL, each submitted to fal (req-<its id>), reserving PRICE each."""
    made = []
    for k in range(n):
        job = repository.NewJob(
            id=ids.uuid7(),
            client_id=client_id,
            model=MODEL,
            input={"prompt": f"fox {k}"},
            metadata={},
            callback_url=callback_url,
            estimated_cost_usd=PRICE,
        )
        row = await repository.intake(
            pool, job, key=None, fingerprint=None, max_queued_jobs=None, default_budget=None
        )
        assert row is not None
        await pool.execute(
            "UPDATE jobs SET status = 'submitted', fal_request_id = 'req-' || id::text "
            "WHERE id = $1",
            job.id,
        )
        made.append(job.id)
    return made


def _output(job_id: uuid.UUID) -> dict[str, Any]:
    name = f"{job_id}.png"
    return {
        "images": [
            {
                "url": f"http://fal.test/files/{name}",
                "content_type": "image/png",
                "file_name": name,
                "file_size": 1234,
                "width": 64,
                "height": 64,
            }
        ],
        "seed": 7,
    }


async def _succeed_all(
    transitions: Transitions, job_ids: list[uuid.UUID], model: str = MODEL
) -> list[Any]:
    return await asyncio.gather(
        *(
            transitions.succeeded_at_fal(
                job_id, Succeeded(_output(job_id)), fal_request_id=f"req-{job_id}", model=model
            )
            for job_id in job_ids
        ),
        return_exceptions=True,
    )


async def test_successes_that_come_together_share_a_statement(tenant: Tenant, pool: Pool) -> None:
    endpoint = await tenant.http.post(
        "/v1/webhook-endpoints", json={"url": PUBLIC_URL, "event_types": ["job.succeeded"]}
    )
    assert endpoint.status_code == 201, endpoint.text
    job_ids = await _at_fal(pool, tenant.client_id, 5, callback_url=f"{PUBLIC_URL}/done")
    job_ids.reverse()

    rows = await _succeed_all(Transitions(pool, Wakeup(None)), job_ids)

    assert [row["id"] for row in rows] == job_ids
    stored = await pool.fetch(
        "SELECT id, xmin::text AS xmin, status, output, cost_usd, completed_at FROM jobs "
        "WHERE client_id = $1",
        tenant.client_id,
    )
    for row in stored:
        assert row["status"] == "succeeded"
        assert row["output"] == _output(row["id"])
        assert row["cost_usd"] == PRICE
        assert row["completed_at"] is not None
    assert _by_transaction(stored) == [{job_ids[0]}, set(job_ids[1:])]

    # Settled: the month's reservations released, the costs spent, on one row per shard.
    month = await pool.fetchrow(
        "SELECT sum(reserved_usd) AS reserved, sum(spent_usd) AS spent FROM client_spend "
        "WHERE client_id = $1",
        tenant.client_id,
    )
    assert tuple(month) == (0, 5 * PRICE)
    # Each job's event, rendered from the row returned, its files included; one delivery to
    # the endpoint and one to the job's callback URL each.
    events = await pool.fetch(
        "SELECT e.job_id, e.type, e.payload::text AS payload, "
        "array_agg(d.url ORDER BY d.url NULLS FIRST) AS urls "
        "FROM events e JOIN deliveries d ON d.event_id = e.id WHERE e.client_id = $1 "
        "GROUP BY e.id",
        tenant.client_id,
    )
    assert sorted(event["job_id"] for event in events) == sorted(job_ids)
    returned = {row["id"]: row for row in rows}
    for event in events:
        assert event["type"] == "job.succeeded"
        assert event["urls"] == [None, f"{PUBLIC_URL}/done"]
        row = returned[event["job_id"]]
        view = job_view(row)
        assert [file["url"] for file in view["files"]] == [
            f"http://fal.test/files/{event['job_id']}.png"
        ]
        assert event["payload"] == await pool.fetchval(
            "SELECT $1::jsonb::text", event_body("job.succeeded", row["updated_at"], view)
        )


async def test_a_success_for_a_job_not_at_fal_or_of_another_model_changes_nothing(
    tenant: Tenant, pool: Pool
) -> None:
    job_ids = await _at_fal(pool, tenant.client_id, 4)
    await pool.execute("UPDATE jobs SET status = 'queued' WHERE id = $1", job_ids[1])
    await pool.execute("UPDATE jobs SET model = 'another/model' WHERE id = $1", job_ids[3])

    rows = await _succeed_all(Transitions(pool, Wakeup(None)), job_ids)

    assert [row is None for row in rows] == [False, True, False, True]
    statuses = await pool.fetch(
        "SELECT id, status, output FROM jobs WHERE id = ANY($1::uuid[])", job_ids
    )
    by_id = {row["id"]: (row["status"], row["output"] is None) for row in statuses}
    assert [by_id[job_id] for job_id in job_ids] == [
        ("succeeded", False),
        ("queued", True),
        ("succeeded", False),
        ("submitted", True),
    ]
    assert (
        await pool.fetchval(
            "SELECT sum(spent_usd) FROM client_spend WHERE client_id = $1", tenant.client_id
        )
        == 2 * PRICE
    )
