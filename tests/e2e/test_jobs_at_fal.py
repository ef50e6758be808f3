"""Jobs through the fake fal over real HTTP: the happy path, fal's failures, lost and repeated
webhooks, forged callbacks, and cancellation."""

from __future__ import annotations

import asyncio
import time

import httpx
import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from app.catalog import DEFAULT_MODEL_ID
from app.fakefal import FakeFalConfig
from app.fal.client import FalClient
from tests.fal.signing import fal_headers
from tests.stack import StackFactory
from tests.support import job_uuid

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


async def test_a_job_succeeds_with_a_real_image(make_stack: StackFactory) -> None:
    async with make_stack() as stack:
        job_id = await stack.create_job(aspect_ratio="16:9", seed=42)
        job = await stack.wait_for(job_id)

        assert job["status"] == "succeeded", job
        assert job["fal_request_id"]
        assert job["submitted_at"]
        assert job["completed_at"]
        (image,) = job["output"]["images"]
        assert (image["width"], image["height"]) == (1280, 720)
        png = (await stack.fal.get(image["url"])).content
        assert png.startswith(PNG_SIGNATURE)
        assert len(png) == image["file_size"]

        assert await stack.event_types(job_id) == ["job.submitted", "job.succeeded"]
        row = await stack.pool.fetchrow(
            "SELECT attempts, locked_until, next_attempt_at FROM jobs WHERE id = $1",
            job_uuid(job_id),
        )
        assert row is not None
        assert (row["attempts"], row["locked_until"], row["next_attempt_at"]) == (1, None, None)
        assert (await stack.fal_stats())["submitted"] == 1


async def test_the_event_payload_is_the_job_as_it_became(make_stack: StackFactory) -> None:
    async with make_stack() as stack:
        job_id = await stack.create_job()
        job = await stack.wait_for(job_id)
        payload = await stack.pool.fetchval(
            "SELECT payload FROM events WHERE job_id = $1 AND type = 'job.succeeded'",
            job_uuid(job_id),
        )
        assert payload["type"] == "job.succeeded"
        assert payload["data"] == job
        assert payload["timestamp"].endswith("Z")


async def test_a_model_error_fails_the_job_with_fals_error(make_stack: StackFactory) -> None:
    fal = FakeFalConfig(error_rate=1.0, error_types=["runner_disconnected"], random_seed=1)
    async with make_stack(fal=fal) as stack:
        job = await stack.wait_for(await stack.create_job())
        assert job["status"] == "failed"
        assert job["output"] is None
        assert job["error"]["type"] == "runner_disconnected"
        assert job["error"]["message"]
        assert await stack.event_types(job["id"]) == ["job.submitted", "job.failed"]


async def test_a_dropped_webhook_is_made_good_by_the_reconciler(make_stack: StackFactory) -> None:
    fal = FakeFalConfig(webhook_drop_rate=1.0)
    async with make_stack(fal=fal, reconcile_after_seconds=0.3) as stack:
        job = await stack.wait_for(await stack.create_job())
        assert job["status"] == "succeeded"
        assert job["output"]["images"]
        stats = await stack.fal_stats()
        assert (stats["webhooks_dropped"], stats["webhooks_sent"]) == (1, 0)
        polls = await stack.pool.fetchval(
            "SELECT polls FROM jobs WHERE id = $1", job_uuid(job["id"])
        )
        assert polls >= 1


async def test_duplicated_and_reordered_webhooks_change_a_job_once(
    make_stack: StackFactory,
) -> None:
    fal = FakeFalConfig(webhook_duplicate_rate=1.0, webhook_reorder=0.3, random_seed=3)
    async with make_stack(fal=fal) as stack:
        job_ids = [await stack.create_job(f"fox {i}") for i in range(6)]
        for job_id in job_ids:
            assert (await stack.wait_for(job_id))["status"] == "succeeded"
        deadline = time.monotonic() + 10
        while (await stack.fal_stats())["webhooks_sent"] < 12:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)

        assert (await stack.fal_stats())["webhooks_sent"] == 12  # each one twice, both 2xx
        for job_id in job_ids:
            assert await stack.event_types(job_id) == ["job.submitted", "job.succeeded"]


async def test_payload_error_webhooks_fetch_the_result(make_stack: StackFactory) -> None:
    fal = FakeFalConfig(payload_error_rate=1.0)
    async with make_stack(fal=fal) as stack:
        job = await stack.wait_for(await stack.create_job())
        assert job["status"] == "succeeded"
        assert job["output"]["images"][0]["url"]
        assert (await stack.fal_stats())["webhooks_payload_error"] == 1


async def test_poll_mode_finishes_jobs_and_reports_running(make_stack: StackFactory) -> None:
    fal = FakeFalConfig(run_latency=0.6)
    async with make_stack(webhooks=False, fal=fal) as stack:
        job = await stack.wait_for(await stack.create_job())
        assert job["status"] == "succeeded"
        assert job["started_at"] is not None
        assert await stack.event_types(job["id"]) == [
            "job.submitted",
            "job.running",
            "job.succeeded",
        ]
        requests = (await stack.fal.get("/_fake/requests")).json()["requests"]
        assert all(not request.get("fal_webhook") for request in requests)


async def test_refused_submits_are_retried_and_reach_fal_once(make_stack: StackFactory) -> None:
    fal = FakeFalConfig(submit_429_rate=1.0, random_seed=5)
    async with make_stack(fal=fal) as stack:
        job_id = await stack.create_job()
        deadline = time.monotonic() + 10
        while (await stack.fal_stats())["submit_429"] < 2:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        row = await stack.pool.fetchrow(
            "SELECT status, attempts, last_error FROM jobs WHERE id = $1", job_uuid(job_id)
        )
        assert row is not None
        assert row["status"] == "queued"
        assert row["attempts"] >= 2
        assert "429" in row["last_error"]

        await stack.configure_fal(submit_429_rate=0.0, submit_5xx_rate=1.0)
        while (await stack.fal_stats())["submit_5xx"] < 1:
            assert time.monotonic() < deadline + 10
            await asyncio.sleep(0.05)
        await stack.configure_fal(submit_5xx_rate=0.0)

        job = await stack.wait_for(job_id, within=30)
        assert job["status"] == "succeeded"
        stats = await stack.fal_stats()
        assert stats["submitted"] == 1


async def test_forged_stale_and_unsigned_callbacks_are_refused_and_change_nothing(
    make_stack: StackFactory,
) -> None:
    fal = FakeFalConfig(queue_latency=60)  # keeps the job at fal, waiting
    async with make_stack(fal=fal) as stack:
        job_id = await stack.create_job()
        job = await stack.wait_for(job_id, {"submitted"})
        request_id = job["fal_request_id"]
        body = orjson.dumps({"request_id": request_id, "status": "OK", "payload": {"images": []}})
        forger = Ed25519PrivateKey.generate()
        attempts = {
            "unsigned": {},
            "foreign key": fal_headers(forger, body, request_id=request_id),
            "stale": fal_headers(forger, body, request_id=request_id, timestamp=1),
            "garbage": {
                "X-Fal-Webhook-Request-Id": request_id,
                "X-Fal-Webhook-User-Id": "u",
                "X-Fal-Webhook-Timestamp": str(int(time.time())),
                "X-Fal-Webhook-Signature": "00" * 64,
            },
        }
        url = await stack.callback_url(job_id)
        async with httpx.AsyncClient() as http:
            for name, headers in attempts.items():
                response = await http.post(
                    url, content=body, headers={**headers, "Content-Type": "application/json"}
                )
                assert response.status_code == 401, name
                assert response.headers["content-type"] == "application/problem+json"

        after = (await stack.api.get(f"/v1/jobs/{job_id}")).json()
        assert after == job
        assert await stack.event_types(job_id) == ["job.submitted"]


async def test_cancel_reaches_fal_for_a_submitted_job(make_stack: StackFactory) -> None:
    fal = FakeFalConfig(queue_latency=60)
    async with make_stack(fal=fal) as stack:
        job_id = await stack.create_job()
        job = await stack.wait_for(job_id, {"submitted"})

        response = await stack.api.post(f"/v1/jobs/{job_id}/cancel")
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "canceled"

        requests = (await stack.fal.get("/_fake/requests")).json()["requests"]
        (at_fal,) = [r for r in requests if r["id"] == job["fal_request_id"]]
        assert at_fal["cancelled"] is True
        assert (await stack.fal_stats())["completed_cancelled"] == 1
        assert await stack.event_types(job_id) == ["job.submitted", "job.canceled"]
        # fal's late webhook for the cancelled request changes nothing.
        await asyncio.sleep(0.3)
        assert (await stack.api.get(f"/v1/jobs/{job_id}")).json()["status"] == "canceled"


async def test_a_genuine_fal_webhook_at_a_url_we_did_not_issue_is_refused(
    make_stack: StackFactory,
) -> None:
    """Someone submits to fal from their own account with our callback path: fal signs the
    webhook with its usual keys, but the URL's token is not ours."""
    fal = FakeFalConfig(queue_latency=60)
    async with make_stack(fal=fal) as stack:
        job_id = await stack.create_job()
        job = await stack.wait_for(job_id, {"submitted"})
        async with httpx.AsyncClient() as http:
            fal_client = FalClient(http, queue_url=stack.fal_url, key="someone-elses-key")
            for forged in (
                f"{stack.service_url}/callbacks/fal/{job_id}/{'0' * 32}",
                f"{stack.service_url}/callbacks/fal/{job_id}/short",
            ):
                await stack.configure_fal(queue_latency=0, webhook_retry_delays=[])
                await fal_client.submit(DEFAULT_MODEL_ID, {"prompt": "x"}, webhook_url=forged)
        deadline = time.monotonic() + 10
        while (await stack.fal_stats())["webhooks_abandoned"] < 2:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        assert (await stack.api.get(f"/v1/jobs/{job_id}")).json() == job
        assert await stack.event_types(job_id) == ["job.submitted"]


async def test_a_webhook_for_another_fal_request_changes_nothing(make_stack: StackFactory) -> None:
    fal = FakeFalConfig(queue_latency=60)
    async with make_stack(fal=fal) as stack:
        job_id = await stack.create_job()
        job = await stack.wait_for(job_id, {"submitted"})
        # A second fal request carrying this job's genuine callback URL (say, a duplicate
        # submission): its webhook is acknowledged and ignored.
        await stack.configure_fal(queue_latency=0)
        async with httpx.AsyncClient() as http:
            other = await FalClient(http, queue_url=stack.fal_url, key="k").submit(
                DEFAULT_MODEL_ID, {"prompt": "x"}, webhook_url=await stack.callback_url(job_id)
            )
        assert other.request_id != job["fal_request_id"]
        deadline = time.monotonic() + 10
        while (await stack.fal_stats())["webhooks_sent"] < 1:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        after = (await stack.api.get(f"/v1/jobs/{job_id}")).json()
        assert after == job
        metrics = (await stack.api.get("/metrics")).text
        assert 'falrelay_fal_callbacks_total{outcome="other_request"}' in metrics


async def test_prefer_wait_answers_with_the_finished_job(make_stack: StackFactory) -> None:
    fal = FakeFalConfig(run_latency=0.4)
    async with make_stack(fal=fal) as stack:
        started = time.monotonic()
        response = await stack.api.post(
            "/v1/jobs", json={"input": {"prompt": "p"}}, headers={"Prefer": "wait=10"}
        )
        assert response.status_code == 201
        assert response.headers["preference-applied"] == "wait=10"
        assert response.json()["status"] == "succeeded"
        assert response.json()["output"]["images"]
        assert time.monotonic() - started < 5


async def test_prefer_wait_gives_up_after_n_seconds(make_stack: StackFactory) -> None:
    fal = FakeFalConfig(queue_latency=30)
    async with make_stack(fal=fal) as stack:
        started = time.monotonic()
        response = await stack.api.post(
            "/v1/jobs", json={"input": {"prompt": "p"}}, headers={"Prefer": "wait=1"}
        )
        took = time.monotonic() - started
        assert response.status_code == 201
        assert response.json()["status"] in ("queued", "submitted")
        assert 0.9 < took < 3


async def test_a_wait_whose_client_went_away_is_no_longer_watched(
    make_stack: StackFactory,
) -> None:
    fal = FakeFalConfig(queue_latency=30)
    async with make_stack(fal=fal) as stack:
        watcher = stack.app.state.runtime.watcher
        body = orjson.dumps({"input": {"prompt": "p"}})
        port = int(stack.service_url.rsplit(":", 1)[1])
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            (
                "POST /v1/jobs HTTP/1.1\r\nHost: falrelay.test\r\n"
                f"Authorization: {stack.api.headers['Authorization']}\r\n"
                "Prefer: wait=30\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
            + body
        )
        await writer.drain()
        deadline = time.monotonic() + 10
        while (job_id := await stack.pool.fetchval("SELECT id FROM jobs")) is None or (
            not watcher.watching(job_id)
        ):
            assert time.monotonic() < deadline, "the wait never began"
            await asyncio.sleep(0.05)
        writer.close()  # the client goes away mid-wait
        deadline = time.monotonic() + 5
        while watcher.watching(job_id):
            assert time.monotonic() < deadline, "the wait of a departed client is still watched"
            await asyncio.sleep(0.05)


def test_the_wait_preference_is_read_as_rfc_7240_says() -> None:
    from app.jobs.service import wait_seconds

    assert wait_seconds("wait=5") == 5
    assert wait_seconds("respond-async, wait=100") == 60
    assert wait_seconds('wait="2.5"') == 2.5
    assert wait_seconds("wait=soon") is None
    assert wait_seconds("handling=lenient") is None
    assert wait_seconds(None) is None
