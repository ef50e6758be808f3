"""Postgres stops for a while under load: the API says so (503 problem+json, `/readyz` 503),
and when Postgres is back everything resumes, in the same process, with nothing lost.

The outage lasts FALRELAY_OUTAGE_SECONDS (10 s by default, as the issue asks; the behaviour is
the same at 3 s if CI time is short).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from app.auth import service as auth_service
from app.db.pool import create_pool
from app.fakefal import FakeFal, FakeFalConfig
from tests.receivers import Receiver
from tests.reliability.postgres import DisposablePostgres
from tests.reliability.processes import ServeProcess, serve_environment
from tests.servers import LiveServer, free_port
from tests.support import PROBLEM_JSON, job_uuid

pytestmark = pytest.mark.slow

OUTAGE = float(os.environ.get("FALRELAY_OUTAGE_SECONDS", "10"))


@pytest.fixture
def fal_and_receiver() -> Iterator[tuple[str, Receiver, str]]:
    inbox = Receiver()
    fake = FakeFal(FakeFalConfig(queue_latency=0.2, run_latency=0.3, random_seed=3))
    with LiveServer(fake.app) as fal, LiveServer(inbox.app) as receiver:
        yield fal.url, inbox, receiver.url


class Observations:
    """Every answer the clients got, and when, relative to the outage."""

    def __init__(self) -> None:
        self.acknowledged: list[str] = []
        self.answers: list[tuple[float, str, int, str, dict[str, str]]] = []

    def record(self, what: str, response: httpx.Response) -> None:
        self.answers.append(
            (
                time.monotonic(),
                what,
                response.status_code,
                response.headers.get("content-type", ""),
                dict(response.headers),
            )
        )

    def during(self, start: float, end: float) -> list[tuple[str, int, str, dict[str, str]]]:
        return [(w, s, c, h) for at, w, s, c, h in self.answers if start <= at <= end]


async def test_a_database_outage_is_a_503_and_everything_resumes_without_a_restart(
    own_postgres: DisposablePostgres,
    own_database_url: str,
    fal_and_receiver: tuple[str, Receiver, str],
    tmp_path: Path,
) -> None:
    fal_url, inbox, receiver_url = fal_and_receiver
    pool = await create_pool(own_database_url, min_size=1, max_size=1)
    _, api_key = await auth_service.create_client(pool, "outage")
    await pool.close()
    port = free_port()
    serve = ServeProcess(
        serve_environment(
            database_url=own_database_url,
            fal_key="fal-key-outage-test",
            fal_queue_url=fal_url,
            fal_jwks_url=f"{fal_url}/.well-known/jwks.json",
            public_base_url=f"http://127.0.0.1:{port}",
            allow_private_webhook_urls="true",
            worker_poll_seconds="0.1",
            reconcile_after_seconds="2",
            # Leases the deadline below outlasts. A claim that committed just as Postgres went
            # away, its answer lost, is worked again only when its lease ends; at the default
            # leases (one to two minutes) that came after the deadline, a race, not a loss.
            fal_timeout_seconds="3",
            submit_lease_seconds="9",
            reconcile_lease_seconds="17",
            delivery_timeout_seconds="3",
            delivery_lease_seconds="6",
            log_format="json",
        ),
        port,
        tmp_path,
    )
    seen = Observations()
    stop_load = asyncio.Event()
    try:
        serve.start()
        await serve.ready()
        async with httpx.AsyncClient(
            base_url=serve.url, headers={"Authorization": f"Bearer {api_key}"}, timeout=10
        ) as api:
            endpoint = await api.post(
                "/v1/webhook-endpoints",
                json={"url": f"{receiver_url}/hook", "event_types": ["job.succeeded"]},
            )
            assert endpoint.status_code == 201, endpoint.text

            async def load() -> None:
                n = 0
                while not stop_load.is_set():
                    n += 1
                    response = await api.post(
                        "/v1/jobs",
                        json={"input": {"prompt": f"outage {n}", "resolution": "1K"}},
                        headers={"Idempotency-Key": f"outage-{n}"},
                    )
                    seen.record("create", response)
                    if response.status_code == 201:
                        seen.acknowledged.append(response.json()["id"])
                    await asyncio.sleep(0.05)

            async def probe() -> None:
                while not stop_load.is_set():
                    seen.record("readyz", await api.get("/readyz"))
                    if seen.acknowledged:
                        seen.record("read", await api.get(f"/v1/jobs/{seen.acknowledged[0]}"))
                    await asyncio.sleep(0.1)

            tasks = [asyncio.create_task(load()), asyncio.create_task(probe())]
            await asyncio.sleep(2.0)
            before = len(seen.acknowledged)
            down = time.monotonic()
            await asyncio.to_thread(own_postgres.stop, "fast")
            await asyncio.sleep(OUTAGE)
            restarting = time.monotonic()
            await asyncio.to_thread(own_postgres.start)
            up = time.monotonic()
            # Recovery: the first 201 after Postgres is back, in the same process.
            while time.monotonic() - up < 15:
                recent = seen.during(up, time.monotonic())
                if any(w == "create" and s == 201 for w, s, _, _ in recent):
                    break
                await asyncio.sleep(0.05)
            resumed_after = time.monotonic() - up
            await asyncio.sleep(1.0)
            stop_load.set()
            await asyncio.gather(*tasks)
            assert serve.alive(), "falrelay exited"
            assert serve.lives == 1, "falrelay was restarted"

        # During the outage (after a moment for in-flight work to notice): 503 problem+json
        # with Retry-After, on writes, reads and readiness alike; never another error.
        outage = seen.during(down + 0.5, restarting)
        assert outage
        kinds = Counter((w, s) for w, s, _, _ in outage)
        assert kinds[("create", 503)] > 0, kinds
        assert kinds[("readyz", 503)] > 0, kinds
        assert kinds[("read", 503)] > 0, kinds
        assert {s for _, s, _, _ in outage} == {503}, kinds
        for _, _, content_type, headers in outage:
            assert content_type == PROBLEM_JSON
            assert headers.get("retry-after", "").isdigit(), headers
        assert all(s in (200, 201, 503) for _, _, s, _, _ in seen.answers)
        assert resumed_after < 10, f"intake resumed {resumed_after:.1f} s after Postgres"
        after = seen.during(up + resumed_after, time.monotonic())
        assert ("readyz", 200) in {(w, s) for w, s, _, _ in after}
        assert len(seen.acknowledged) > before

        # Nothing acknowledged is lost: every 201 reaches succeeded and is delivered.
        pool = await create_pool(own_database_url, min_size=1, max_size=1)
        try:
            uuids = [job_uuid(job_id) for job_id in seen.acknowledged]
            deadline = time.monotonic() + 30
            while True:
                done = await pool.fetchval(
                    "SELECT count(*) FROM jobs WHERE id = ANY($1::uuid[]) AND status = 'succeeded'",
                    uuids,
                )
                pending = await pool.fetchval(
                    "SELECT count(*) FROM deliveries WHERE status <> 'succeeded'"
                )
                if done == len(uuids) and pending == 0:
                    break
                assert time.monotonic() < deadline, (done, len(uuids), pending)
                await asyncio.sleep(0.2)
            jobs_in_database = await pool.fetchval("SELECT count(*) FROM jobs")
        finally:
            await pool.close()
        assert jobs_in_database == len(seen.acknowledged)  # a 503 created nothing
        delivered = {orjson.loads(r.body)["data"]["id"] for r in inbox.at("/hook")}
        assert set(seen.acknowledged) <= delivered
    finally:
        stop_load.set()
        serve.stop()
    _assert_logs_are_json(serve.logs)


def _assert_logs_are_json(logs: list[Path]) -> None:
    for log in logs:
        for line in log.read_bytes().splitlines():
            entry: dict[str, Any] = orjson.loads(line)
            assert entry["level"] != "critical", entry
