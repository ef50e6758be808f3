"""Owned outputs: every output file copied from the fake fal to the operator's store, over real
HTTP, before `job.succeeded`; checked in Postgres, in the store and on the wire."""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from app.fal.client import FalClient
from app.outputs.mirror import THUMBNAIL_TYPE
from app.runtime import downloads_client
from app.storage import open_store
from app.worker import mirrorer
from tests.moto import BUCKET, REGION, MotoServer
from tests.stack import Stack, StackFactory
from tests.support import job_uuid, until, worker_runtime

pytestmark = pytest.mark.slow


async def get(url: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.get(url)


async def _succeeded_event_files(stack: Stack, job_id: str) -> list[dict[str, Any]]:
    payload = await stack.pool.fetchval(
        "SELECT payload FROM events WHERE job_id = $1 AND type = 'job.succeeded'",
        job_uuid(job_id),
    )
    files: list[dict[str, Any]] = payload["data"]["files"]
    return files


async def test_every_file_is_copied_before_the_job_succeeds(
    make_stack: StackFactory, tmp_path: Path
) -> None:
    async with make_stack(storage_url=f"file://{tmp_path}") as stack:
        created = await stack.api.post(
            "/v1/jobs",
            json={"model": "fal-ai/flux/schnell", "input": {"prompt": "a fox", "num_images": 2}},
        )
        assert created.status_code == 201, created.text
        job = await stack.wait_for(created.json()["id"], within=30)
        assert job["status"] == "succeeded", job
        assert len(job["files"]) == 2
        stored = await stack.pool.fetchval(
            "SELECT files FROM jobs WHERE id = $1", job_uuid(job["id"])
        )
        for file, copy in zip(job["files"], stored, strict=True):
            assert file["source_url"].startswith(stack.fal_url)
            assert file["url"].startswith(f"{stack.service_url}/files/")
            assert "mirror_error" not in file or file["mirror_error"] is None
            theirs, ours = await get(file["source_url"]), await get(file["url"])
            assert ours.status_code == 200
            assert ours.content == theirs.content  # byte for byte
            assert ours.headers["content-type"] == "image/png"
            assert file["sha256"] == hashlib.sha256(theirs.content).hexdigest() == copy["sha256"]
            # In the store, under the key Postgres names.
            assert (tmp_path / copy["key"]).read_bytes() == theirs.content
            thumbnail = await get(file["thumbnail_url"])
            assert thumbnail.headers["content-type"] == THUMBNAIL_TYPE
            assert 0 < len(thumbnail.content) < len(theirs.content)
        # The webhook's body carries our URLs, not fal's.
        event_files = await _succeeded_event_files(stack, job["id"])
        assert [f["source_url"] for f in event_files] == [f["source_url"] for f in job["files"]]
        assert all(f["url"].startswith(f"{stack.service_url}/files/") for f in event_files)
        # The console's gallery shows the thumbnails, never the full images.
        key = stack.api.headers["Authorization"].removeprefix("Bearer ")
        async with httpx.AsyncClient(base_url=stack.service_url) as browser:
            signed_in = await browser.post("/console/login", data={"key": key})
            assert signed_in.status_code == 303, signed_in.text
            gallery = (await browser.get("/console/jobs")).text
        thumbnail_path = job["files"][0]["thumbnail_url"].removeprefix(stack.service_url)
        full_path = job["files"][0]["url"].removeprefix(stack.service_url)
        assert thumbnail_path.replace("&", "&amp;") in gallery
        assert full_path.replace("&", "&amp;") not in gallery


async def test_a_file_that_cannot_be_copied_does_not_hold_the_job_and_is_filled_in_later(
    make_stack: StackFactory, tmp_path: Path
) -> None:
    # A bound below any image: every copy fails, quickly and for a stated reason.
    async with make_stack(storage_url=f"file://{tmp_path}", mirror_max_file_bytes=1024) as stack:
        job_id = await stack.create_job("a fox")
        job = await stack.wait_for(job_id, within=60)
        assert job["status"] == "succeeded", job
        (file,) = job["files"]
        assert file["url"] == file["source_url"]  # fal's, for now
        assert "larger than 1024 bytes" in file["mirror_error"]
        retry_at = await stack.pool.fetchval(
            "SELECT mirror_retry_at FROM jobs WHERE id = $1", job_uuid(job_id)
        )
        assert retry_at is not None

        # The operator lifts the bound; the retry, brought forward, copies it.
        stack.app.state.worker.runtime.settings.mirror_max_file_bytes = 50 * 1024 * 1024
        await stack.pool.execute(
            "UPDATE jobs SET mirror_retry_at = now() WHERE id = $1", job_uuid(job_id)
        )

        async def copied() -> bool:
            current = (await stack.api.get(f"/v1/jobs/{job_id}")).json()
            return current["files"][0].get("mirror_error") is None

        await until(copied)
        (file,) = (await stack.api.get(f"/v1/jobs/{job_id}")).json()["files"]
        assert file["url"].startswith(f"{stack.service_url}/files/")
        assert (await get(file["url"])).content == (await get(file["source_url"])).content
        assert (
            await stack.pool.fetchval(
                "SELECT mirror_retry_at FROM jobs WHERE id = $1", job_uuid(job_id)
            )
            is None
        )


async def test_fals_copy_expires_and_ours_stays(make_stack: StackFactory, tmp_path: Path) -> None:
    async with make_stack(storage_url=f"file://{tmp_path}", fal_media_ttl_seconds=2) as stack:
        job = await stack.wait_for(await stack.create_job("a fox"), within=30)
        (file,) = job["files"]

        async def fals_is_gone() -> bool:
            return (await get(file["source_url"])).status_code == 404

        await until(fals_is_gone)
        ours = await get(file["url"])
        assert ours.status_code == 200
        assert ours.content.startswith(b"\x89PNG")


async def test_outputs_mirror_to_an_s3_bucket(make_stack: StackFactory, moto: MotoServer) -> None:
    prefix = f"mirror-{secrets.token_hex(4)}"
    async with make_stack(storage_url=f"s3://{BUCKET}/{prefix}", s3_endpoint_url=moto.url) as stack:
        created = await stack.api.post(
            "/v1/jobs",
            json={
                "model": "fal-ai/kling-video/v2.1/standard/image-to-video",
                "input": {"prompt": "waves", "image_url": "https://images.example/sea.png"},
            },
        )
        assert created.status_code == 201, created.text
        job = await stack.wait_for(created.json()["id"], within=60)
        assert job["status"] == "succeeded", job
        (video,) = job["files"]
        assert video["kind"] == "video"
        theirs = await get(video["source_url"])
        # The bytes in the bucket, read with S3's own API, are the bytes fal served.
        copy = (
            await stack.pool.fetchval("SELECT files FROM jobs WHERE id = $1", job_uuid(job["id"]))
        )[0]
        s3 = boto3.client("s3", endpoint_url=moto.url, region_name=REGION)
        stored = s3.get_object(Bucket=BUCKET, Key=f"{prefix}/{copy['key']}")
        assert stored["Body"].read() == theirs.content
        assert stored["ContentType"] == "video/mp4"
        # Our URL (presigned) serves them too.
        assert video["url"].startswith(moto.url)
        ours = await get(video["url"])
        assert ours.status_code == 200
        assert ours.content == theirs.content


async def test_a_copy_that_lands_after_its_job_was_deleted_is_removed(
    make_stack: StackFactory, tmp_path: Path
) -> None:
    async with make_stack(storage_url=f"file://{tmp_path}", mirror_max_file_bytes=1024) as stack:
        job_id = await stack.create_job("a fox")
        job = await stack.wait_for(job_id, within=60)
        assert job["files"][0]["mirror_error"]
        # A retry has claimed the job (its row as the claim returns it) when the client deletes
        # it; the retry's copy then lands with nothing left to refer to it.
        claimed = await stack.pool.fetchrow(
            "SELECT id, client_id, model, status, output, files, billable_units FROM jobs "
            "WHERE id = $1",
            job_uuid(job_id),
        )
        deleted = await stack.api.delete(f"/v1/jobs/{job_id}")
        assert deleted.status_code == 204, deleted.text
        # The retry's step, run here (in this test's event loop) as a worker runs it.
        settings = stack.settings.model_copy(update={"mirror_max_file_bytes": 50 * 1024 * 1024})
        store = await open_store(settings, stack.pool)
        assert store is not None
        async with downloads_client(settings) as downloads:
            runtime = worker_runtime(
                stack.pool,
                FalClient(downloads, queue_url=stack.fal_url, key=None),
                settings,
                store=store,
                downloads=downloads,
            )
            await mirrorer.mirror(runtime, claimed)
        await store.aclose()
        assert not list((tmp_path / "jobs").glob(f"{job_uuid(job_id)}/*"))
        assert await stack.pool.fetchval("SELECT count(*) FROM file_deletions") == 0


async def test_a_store_that_fails_never_holds_the_job(
    make_stack: StackFactory, tmp_path: Path
) -> None:
    # Where the job's files would go is a file: every write fails with an OSError (the kind a
    # full disk or a refusing bucket gives), not a copy error.
    (tmp_path / "jobs").write_bytes(b"")
    async with make_stack(storage_url=f"file://{tmp_path}") as stack:
        job = await stack.wait_for(await stack.create_job("a fox"), within=60)
        assert job["status"] == "succeeded", job
        (file,) = job["files"]
        assert file["url"] == file["source_url"]
        assert file["mirror_error"].startswith("the copy failed: ")
