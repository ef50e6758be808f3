"""Deleting one job: `DELETE /v1/jobs/{id}` (204, 404, 409), the SDK's `jobs.delete`, the
`falrelay jobs delete` command and the console's button."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from fastapi import FastAPI

from app import ids
from app.db.pool import Pool
from app.fakefal import FakeFalConfig
from falrelay import AsyncClient, Client, ConflictError, JobStatus, NotFoundError
from tests.console.conftest import Console
from tests.lifecycle.support import endpoint, hanging_off, keys_of, seed_job
from tests.sdk.support import key_of
from tests.stack import StackFactory
from tests.support import Tenant, assert_problem, http_client, job_uuid

FOX = {"prompt": "a red fox in snow", "aspect_ratio": "16:9", "resolution": "1K"}


def public(job_id: uuid.UUID) -> str:
    return ids.encode("job", job_id)


async def test_delete_answers_204_and_nothing_of_the_job_is_left(
    pool: Pool, tenant: Tenant
) -> None:
    # A delivery still retrying goes too (its row in the delivery queue with it).
    job_id = await seed_job(
        pool, tenant.client_id, await endpoint(pool, tenant.client_id), retrying=True
    )
    before = await hanging_off(pool, [job_id])
    assert all(before.values()), before

    response = await tenant.http.delete(f"/v1/jobs/{public(job_id)}")
    assert (response.status_code, response.content) == (204, b"")

    assert await hanging_off(pool, [job_id]) == {table: set() for table in before}
    assert_problem(await tenant.http.get(f"/v1/jobs/{public(job_id)}"), 404, "not-found")
    assert_problem(await tenant.http.delete(f"/v1/jobs/{public(job_id)}"), 404, "not-found")
    # This app has no store: the files are owed, in the outbox, to a process that has one.
    owed = await pool.fetch("SELECT key FROM file_deletions WHERE key = ANY($1)", keys_of(job_id))
    assert {row["key"] for row in owed} == keys_of(job_id)


async def test_another_clients_job_and_unknown_ids_are_404_and_stay(
    pool: Pool, tenant: Tenant, other_tenant: Tenant
) -> None:
    job_id = await seed_job(pool, tenant.client_id, await endpoint(pool, tenant.client_id))
    for job in (public(job_id), public(uuid.uuid4()), "job_nope", "whk_" + "0" * 32):
        assert_problem(await other_tenant.http.delete(f"/v1/jobs/{job}"), 404, "not-found")
    assert await pool.fetchval("SELECT count(*) FROM jobs WHERE id = $1", job_id) == 1


@pytest.mark.parametrize("status", ["queued", "submitted", "running"])
async def test_an_unfinished_job_is_409_and_stays(pool: Pool, tenant: Tenant, status: str) -> None:
    hook = await endpoint(pool, tenant.client_id)
    job_id = await seed_job(pool, tenant.client_id, hook, status=status, files=False)
    problem = assert_problem(
        await tenant.http.delete(f"/v1/jobs/{public(job_id)}"), 409, "job-not-finished"
    )
    assert status in problem["detail"]
    assert "cancel" in problem["detail"]
    assert await pool.fetchval("SELECT status FROM jobs WHERE id = $1", job_id) == status


def test_the_api_document_lists_delete_with_its_answers(app: FastAPI) -> None:
    operation = app.openapi()["paths"]["/v1/jobs/{job_id}"]["delete"]
    assert operation["operationId"] == "delete_job"
    assert set(operation["responses"]) >= {"204", "401", "404", "409"}


@pytest.mark.slow
async def test_the_sdk_deletes_a_finished_job_and_refuses_a_running_one(
    make_stack: StackFactory,
) -> None:
    async with make_stack(fal=FakeFalConfig(random_seed=7)) as stack:
        async with AsyncClient(key_of(stack), base_url=stack.service_url) as client:
            job = await client.jobs.create(FOX, wait=True)
            assert job.status is JobStatus.SUCCEEDED
            await client.jobs.delete(job.id)
            with pytest.raises(NotFoundError):
                await client.jobs.get(job.id)
            with pytest.raises(NotFoundError):
                await client.jobs.delete(job.id)
            events = await stack.pool.fetchval(
                "SELECT count(*) FROM events WHERE job_id = $1", job_uuid(job.id)
            )
            assert events == 0

        def sync_client() -> None:
            with Client(key_of(stack), base_url=stack.service_url) as client:
                job = client.jobs.create(FOX, wait=True)
                client.jobs.delete(job.id)
                with pytest.raises(NotFoundError):
                    client.jobs.get(job.id)

        await asyncio.to_thread(sync_client)


@pytest.mark.slow
async def test_the_sdk_gets_a_conflict_for_an_unfinished_job(make_stack: StackFactory) -> None:
    async with (
        make_stack(fal=FakeFalConfig(random_seed=7, queue_latency=60)) as stack,
        AsyncClient(key_of(stack), base_url=stack.service_url) as client,
    ):
        job = await client.jobs.create(FOX)
        with pytest.raises(ConflictError) as conflict:
            await client.jobs.delete(job.id)
        assert conflict.value.type.endswith("/job-not-finished")
        assert (await client.jobs.get(job.id)).id == job.id


def falrelay(*args: str) -> list[str]:
    script = Path(sys.executable).with_name("falrelay")
    return [str(script), *args] if script.exists() else [sys.executable, "-m", "app", *args]


@pytest.mark.slow
async def test_falrelay_jobs_delete(make_stack: StackFactory, tmp_path: Path) -> None:
    async with (
        make_stack() as stack,
        AsyncClient(key_of(stack), base_url=stack.service_url) as client,
    ):
        job = await client.jobs.create(FOX, wait=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("FALRELAY_")}
        env |= {"FALRELAY_URL": stack.service_url, "FALRELAY_API_KEY": key_of(stack)}

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                falrelay("jobs", "delete", *args),
                env=env,
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )

        done = await asyncio.to_thread(run, job.id)
        assert (done.returncode, done.stdout) == (0, f"deleted {job.id}\n"), done.stderr
        with pytest.raises(NotFoundError):
            await client.jobs.get(job.id)

        done = await asyncio.to_thread(run, job.id)
        assert done.returncode == 1
        assert f"{job.id} not deleted" in done.stderr
        assert "404" in done.stderr or "Not found" in done.stderr


async def test_the_console_deletes_a_finished_job_after_asking(
    app: FastAPI, pool: Pool, tenant: Tenant
) -> None:
    hook = await endpoint(pool, tenant.client_id)
    finished = public(await seed_job(pool, tenant.client_id, hook))
    queued = public(await seed_job(pool, tenant.client_id, hook, status="queued", files=False))
    async with http_client(app) as http:
        console = Console(http)
        assert (await console.log_in(tenant.key)).status_code == 303
        page = (await http.get(f"/console/jobs/{finished}")).text
        assert f'action="/console/jobs/{finished}/delete"' in page
        assert "Delete permanently" in page  # behind the disclosure: a second click
        assert "/delete" not in (await http.get(f"/console/jobs/{queued}")).text

        # Without the form token (a cross-site post): refused, nothing deleted.
        response = await console.post(f"/console/jobs/{finished}/delete", csrf="0" * 64)
        assert response.status_code == 403
        assert await pool.fetchval("SELECT count(*) FROM jobs WHERE id = $1", job_uuid(finished))

        csrf = await console.csrf(f"/console/jobs/{finished}")
        response = await console.post(f"/console/jobs/{finished}/delete", csrf=csrf)
        assert (response.status_code, response.headers["location"]) == (303, "/console/jobs")
        assert f"Job {finished} was deleted" in (await http.get("/console/jobs")).text
        assert not await pool.fetchval(
            "SELECT count(*) FROM jobs WHERE id = $1", job_uuid(finished)
        )

        # An unfinished job (a forged post: the page offers no button) is refused, and stays.
        response = await console.post(f"/console/jobs/{queued}/delete", csrf=csrf)
        assert response.headers["location"] == f"/console/jobs/{queued}"
        assert (
            "only a finished job can be deleted"
            in (await http.get(response.headers["location"])).text
        )
        assert await pool.fetchval("SELECT count(*) FROM jobs WHERE id = $1", job_uuid(queued))
