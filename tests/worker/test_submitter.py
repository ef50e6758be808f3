"""The submitter's policy on a real database, with fal answering through httpx.MockTransport."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from app.auth import service as auth_service
from app.db.pool import Pool, create_pool
from app.fal.client import FalClient
from app.jobs import queue
from app.jobs import service as jobs_service
from app.jobs.schemas import JobCreate
from app.runtime import Runtime
from app.settings import Settings
from app.worker import submitter
from tests.support import worker_runtime


async def _claimed(pool: Pool) -> object:
    client_id, _ = await auth_service.create_client(pool, "submitter")
    created = await jobs_service.create_job(pool, client_id, JobCreate(input={"prompt": "p"}), None)
    (row,) = [
        r
        for r in (await queue.claim_submissions(pool, 100, 120)).rows
        if r["id"] == created.job["id"]
    ]
    return row


def _ctx(
    pool: Pool, handler: Callable[[httpx.Request], httpx.Response], **settings: object
) -> Runtime:
    fal = FalClient(
        httpx.AsyncClient(transport=httpx.MockTransport(handler)), queue_url="http://fal", key="k"
    )
    return worker_runtime(pool, fal, Settings(fal_key="k", **settings))  # type: ignore[arg-type]


@pytest.fixture
async def pool(fresh_database_url: str) -> AsyncIterator[Pool]:
    """A database of the test's own: claims here take every due job there is."""
    pool = await create_pool(fresh_database_url, min_size=1, max_size=2)
    yield pool
    await pool.close()


def _timeout(request: httpx.Request) -> httpx.Response:
    raise httpx.ReadTimeout("the answer was lost")


async def test_an_ambiguous_submit_holds_the_job_for_the_lease(pool: Pool) -> None:
    row = await _claimed(pool)
    await submitter.submit(_ctx(pool, _timeout), row)  # type: ignore[arg-type]
    job = await pool.fetchrow(
        "SELECT status, locked_until - now() AS held, last_error FROM jobs WHERE id = $1",
        row["id"],  # type: ignore[index]
    )
    assert job is not None
    assert job["status"] == "queued"
    assert 115 < job["held"].total_seconds() <= 120  # nobody may submit it for a lease
    assert "ReadTimeout" in job["last_error"]
    again = (await queue.claim_submissions(pool, 100, 120)).rows
    assert row["id"] not in {r["id"] for r in again}  # type: ignore[index]


async def test_ambiguity_at_the_last_attempt_fails_the_job(pool: Pool) -> None:
    row = await _claimed(pool)
    await submitter.submit(_ctx(pool, _timeout, submit_max_attempts=1), row)  # type: ignore[arg-type]
    job = await pool.fetchrow("SELECT status, error FROM jobs WHERE id = $1", row["id"])  # type: ignore[index]
    assert job is not None
    assert job["status"] == "failed"
    assert job["error"]["type"] == "submission_uncertain"


@pytest.mark.parametrize(
    ("answer", "status", "error_type"),
    [
        (httpx.Response(401, json={"detail": "bad key"}), "failed", "submission_rejected"),
        (httpx.Response(429), "queued", None),
    ],
)
async def test_refusals_fail_and_throttles_wait(
    pool: Pool, answer: httpx.Response, status: str, error_type: str | None
) -> None:
    row = await _claimed(pool)
    await submitter.submit(_ctx(pool, lambda r: answer), row)  # type: ignore[arg-type]
    job = await pool.fetchrow(
        "SELECT status, error, next_attempt_at - now() AS wait, locked_until FROM jobs "
        "WHERE id = $1",
        row["id"],  # type: ignore[index]
    )
    assert job is not None
    assert job["status"] == status
    if error_type:
        assert job["error"]["type"] == error_type
    else:
        assert 0.5 < job["wait"].total_seconds() < 1.5  # first retry: 1 s ±20 %
        assert job["locked_until"] is None
