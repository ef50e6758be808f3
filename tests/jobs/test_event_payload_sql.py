"""The payload a transition's statement renders for its own event (`job_view_sql`,
`event_body_sql`) is, byte for byte as stored, the one `job_view` and `event_body` make from
the same row and the JSON codec writes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from app import ids
from app.db.pool import Pool
from app.events.payloads import event_body, event_body_sql
from app.jobs import repository
from app.jobs.schemas import job_view, job_view_sql
from tests.support import Tenant

AT_WHOLE_SECOND = datetime(2026, 11, 29, 21, 50, 51, tzinfo=UTC)
AT_MICROSECONDS = datetime(2026, 11, 29, 21, 50, 51, 120, tzinfo=UTC)

CASES: list[dict[str, Any]] = [
    {"status": "queued", "start_timeout": None, "priority": 1},
    {
        "status": "submitted",
        "start_timeout": 30.0,
        "priority": 0,
        "submitted_at": AT_MICROSECONDS,
        "fal_request_id": f"req-{uuid.uuid4()}",
    },
    {
        "status": "running",
        "start_timeout": 2.5,
        "priority": 2,
        "submitted_at": AT_WHOLE_SECOND,
        "started_at": AT_MICROSECONDS,
        "callback_url": "https://example.com/hook?a=1&b=\u00e9",
    },
    {"status": "submitted", "start_timeout": 0.1 + 1.2, "updated_at": AT_WHOLE_SECOND},
    {"status": "submitted", "start_timeout": 86_400.0, "created_at": AT_WHOLE_SECOND},
    {"status": "submitted", "start_timeout": 1.0000001, "updated_at": AT_MICROSECONDS},
    {
        "status": "failed",
        "start_timeout": 61.25,
        "completed_at": AT_MICROSECONDS,
        "error": {"type": "fal_error", "message": 'quotes " and \\ and\nnew line \u2603'},
    },
]


@pytest.mark.parametrize("case", CASES, ids=lambda case: f"{case['status']}")
async def test_the_statements_payload_is_the_codecs(
    tenant: Tenant, pool: Pool, case: dict[str, Any]
) -> None:
    job_id = ids.uuid7()
    columns = {
        "id": job_id,
        "client_id": tenant.client_id,
        "model": "imagineart/imagineart-2.0-preview/text-to-image",
        "input": {"prompt": 'a fox \u00e9 "quoted"', "seed": 2**40, "guidance": 3.5},
        "metadata": {"order": "\u00e9-42", "empty": ""},
        **case,
    }
    names = ", ".join(columns)
    values = ", ".join(f"${n}" for n in range(1, len(columns) + 1))
    await pool.execute(f"INSERT INTO jobs ({names}) VALUES ({values})", *columns.values())
    row = await pool.fetchrow(
        f"SELECT {repository.TRANSITION_COLUMNS} FROM jobs WHERE id = $1", job_id
    )
    assert row is not None

    from_python = await pool.fetchval(
        "SELECT $1::jsonb::text",
        event_body("job.submitted", row["updated_at"], job_view(row)),
    )
    from_sql = await pool.fetchval(
        f"SELECT ({event_body_sql('job.submitted', 'j.updated_at', job_view_sql('j'))})::text "
        "FROM jobs j WHERE id = $1",
        job_id,
    )
    assert from_sql == from_python


async def test_a_transition_writes_the_event_its_row_would_have(tenant: Tenant, pool: Pool) -> None:
    """mark_submitted's one statement: the stored event equals the one rendered from the row it
    returned, and the endpoint's delivery is queued."""
    endpoint_id = uuid.uuid4()
    # Stored directly: the endpoint is never called here, so its URL need not resolve.
    await pool.execute(
        "INSERT INTO webhook_endpoints (id, client_id, url, event_types, secrets) "
        "VALUES ($1, $2, 'https://example.com/hook', ARRAY['job.submitted'], '[]')",
        endpoint_id,
        tenant.client_id,
    )
    created = await tenant.http.post(
        "/v1/jobs", json={"input": {"prompt": "fox"}, "start_timeout": 30}
    )
    assert created.status_code == 201, created.text
    job_id = uuid.UUID(hex=created.json()["id"].rsplit("_", 1)[1])
    event_id = ids.uuid7()
    row = await pool.fetchrow(
        repository.MARK_SUBMITTED_WITH_EVENT,
        job_id,
        f"req-{uuid.uuid4()}",
        "s",
        "r",
        "c",
        None,
        event_id,
    )
    assert row is not None
    assert row["deliveries"] == 1
    stored = await pool.fetchrow(
        "SELECT type, payload::text AS payload, created_at FROM events WHERE id = $1", event_id
    )
    assert stored is not None
    assert stored["type"] == "job.submitted"
    assert stored["created_at"] == row["updated_at"]
    expected = await pool.fetchval(
        "SELECT $1::jsonb::text", event_body("job.submitted", row["updated_at"], job_view(row))
    )
    assert stored["payload"] == expected
    deliveries = await pool.fetch(
        "SELECT endpoint_id, url, status, next_attempt_at FROM deliveries WHERE event_id = $1",
        event_id,
    )
    assert [tuple(d) for d in deliveries] == [(endpoint_id, None, "pending", row["updated_at"])]
