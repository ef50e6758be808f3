"""The README's console screenshots: `python -m tests.console.screenshots`.

Brings up the whole product on loopback (an embedded Postgres, the fake fal, `falrelay serve`,
a webhook receiver), runs a few jobs through it with deliveries that succeed and fail, and
writes docs/console-gallery.png and docs/console-job.png from Debian's chromium.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from app.auth import service as auth_service
from app.db import embedded
from app.db.migrate import upgrade_to_head
from app.db.pool import Pool, asyncpg_dsn, create_pool
from app.fakefal import FakeFal, FakeFalConfig
from app.main import create_app
from app.settings import Settings
from tests.console.browser import chromium, images_loaded, log_in
from tests.receivers import Answer, Receiver
from tests.servers import LiveServer, free_port

DOCS = Path(__file__).resolve().parents[2] / "docs"
WIDTH = 1280

JOBS: list[tuple[str, str, dict[str, str]]] = [
    ("a red fox in fresh snow at golden hour", "16:9", {"order_id": "A-1001", "customer": "acme"}),
    ("isometric city block at night, neon signs, rain", "1:1", {"order_id": "A-1002"}),
    ("watercolor lighthouse on a cliff above the sea", "3:4", {"campaign": "spring"}),
    ("macro photo of a dew-covered leaf", "4:3", {"order_id": "A-1004", "customer": "acme"}),
    ("retro travel poster of a mountain railway", "2:3", {"campaign": "spring"}),
    ("a bowl of ramen under studio lighting", "1:1", {"order_id": "A-1006"}),
    ("desert highway under a sky full of stars", "21:9", {"customer": "globex"}),
    ("paper-cut diorama of a coral reef", "4:5", {"campaign": "summer"}),
    ("a tiny robot watering succulents", "1:1", {"order_id": "A-1011", "customer": "globex"}),
    ("foggy pine forest, cinematic", "16:9", {"campaign": "summer"}),
]


async def _wait(api: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while True:
        job: dict[str, Any] = (await api.get(f"/v1/jobs/{job_id}")).json()
        if job["status"] in ("succeeded", "failed", "canceled") or time.monotonic() > deadline:
            return job
        await asyncio.sleep(0.05)


async def _create(api: httpx.AsyncClient, prompt: str, ratio: str, **extra: Any) -> str:
    body = {"input": {"prompt": prompt, "aspect_ratio": ratio, "resolution": "1K"}, **extra}
    response = await api.post("/v1/jobs", json=body)
    response.raise_for_status()
    job_id: str = response.json()["id"]
    return job_id


async def _until(pool: Pool, sql: str, *args: Any) -> None:
    deadline = time.monotonic() + 20
    while not await pool.fetchval(sql, *args):
        if time.monotonic() > deadline:
            raise RuntimeError(f"never true: {sql}")
        await asyncio.sleep(0.05)


async def _attempts(pool: Pool, job_id: str, count: int) -> None:
    """Waits until the job's deliveries have made `count` attempts in all."""
    await _until(
        pool,
        "SELECT count(*) >= $2 FROM delivery_attempts a JOIN deliveries d ON d.id = a.delivery_id "
        "WHERE d.job_id = $1",
        uuid.UUID(hex=job_id.removeprefix("job_")),
        count,
    )


async def _populate(
    service: str, fal: str, hooks: str, receiver: Receiver, pool: Pool, key: str
) -> str:
    """Jobs and deliveries to look at; returns the job whose page is shown."""
    headers = {"Authorization": f"Bearer {key}"}
    async with (
        httpx.AsyncClient(base_url=service, headers=headers) as api,
        httpx.AsyncClient(base_url=fal) as fal_control,
    ):
        for path, description, events in (
            ("/hooks/orders", "Order service", ["job.submitted", "job.succeeded", "job.failed"]),
            ("/hooks/legacy", "Legacy CRM bridge", ["job.succeeded", "job.failed"]),
        ):
            response = await api.post(
                "/v1/webhook-endpoints",
                json={
                    "url": f"{hooks}{path}",
                    "description": description,
                    "event_types": events,
                },
            )
            response.raise_for_status()

        # One that failed at fal, and one still running, among the finished ones.
        await fal_control.patch(
            "/_fake/config", json={"error_rate": 1.0, "error_types": ["runner_disconnected"]}
        )
        await _wait(api, await _create(api, "a lighthouse keeper's cat, oil painting", "1:1"))
        await fal_control.patch("/_fake/config", json={"error_rate": 0.0})
        for prompt, ratio, metadata in JOBS[1:]:
            await _wait(api, await _create(api, prompt, ratio, metadata=metadata))
        await fal_control.patch("/_fake/config", json={"run_latency": 600.0})
        running = await _create(
            api, "a hot air balloon festival at dawn", "3:2", metadata={"order_id": "A-1009"}
        )
        # fal draws a request's latency when it is submitted: keep the knob until it is.
        await _until(
            pool,
            "SELECT status <> 'queued' FROM jobs WHERE id = $1",
            uuid.UUID(hex=running.removeprefix("job_")),
        )
        await fal_control.patch("/_fake/config", json={"run_latency": 0.0})

        # The legacy bridge is failing by the time the featured job finishes (and only then:
        # the earlier jobs' deliveries are all done first).
        await _until(pool, "SELECT count(*) = 0 FROM deliveries WHERE status = 'pending'")
        receiver.script(
            "/hooks/legacy",
            Answer(500, b'{"error": "upstream CRM timed out"}'),
            Answer(503, b"Service Unavailable", headers={"Retry-After": "300"}),
        )
        prompt, ratio, metadata = JOBS[0]
        featured = await _create(
            api,
            prompt,
            ratio,
            metadata=metadata,
            callback_url=f"{hooks}/callbacks/orders/A-1001",
        )
        await _wait(api, featured)
        # orders: submitted + succeeded; legacy: a 500; the callback_url: one success.
        await _attempts(pool, featured, 4)
        # The schedule's next attempt is 5 s away: bring it forward rather than wait.
        await pool.execute(
            "UPDATE delivery_queue SET next_attempt_at = now()"
            " WHERE id IN (SELECT id FROM deliveries WHERE job_id = $1)",
            uuid.UUID(hex=featured.removeprefix("job_")),
        )
        await _attempts(pool, featured, 5)
        return featured


async def main() -> None:
    DOCS.mkdir(exist_ok=True)
    receiver = Receiver()
    shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="falrelay-screens-", dir=shm) as tmp:
        postgres = embedded.start(Path(tmp) / "pgdata", cleanup_mode="delete")
        try:
            await embedded.ensure_database(asyncpg_dsn(postgres.url("postgres")), "console")
            database_url = postgres.url("console")
            await asyncio.to_thread(upgrade_to_head, database_url)
            await _shoot(database_url, receiver)
        finally:
            postgres.stop()


async def _shoot(database_url: str, receiver: Receiver) -> None:
    fake = FakeFal(FakeFalConfig(random_seed=11))
    port = free_port()
    with LiveServer(fake.app) as fal, LiveServer(receiver.app) as hooks:
        settings = Settings(
            database_url=database_url,
            fal_queue_url=fal.url,
            fal_jwks_url=f"{fal.url}/.well-known/jwks.json",
            fal_key="demo-fal-key",
            public_base_url=f"http://127.0.0.1:{port}",
            allow_private_webhook_urls=True,
            worker_poll_seconds=0.05,
            access_log=False,
        )
        pool = await create_pool(database_url, min_size=1, max_size=2)
        try:
            _, key = await auth_service.create_client(pool, "Acme Studio")
            with LiveServer(create_app(settings, run_worker=True), port=port) as service:
                featured = await _populate(service.url, fal.url, hooks.url, receiver, pool, key)
                async with chromium() as browser:
                    page = await browser.new_page(viewport={"width": WIDTH, "height": 1000})
                    await log_in(page, service.url, key)
                    await images_loaded(page, ".thumb img")
                    await page.screenshot(path=str(DOCS / "console-gallery.png"), full_page=True)
                    await page.goto(f"{service.url}/console/jobs/{featured}")
                    await images_loaded(page)
                    await page.screenshot(path=str(DOCS / "console-job.png"), full_page=True)
        finally:
            await pool.close()
    sys.stderr.write(f"wrote {DOCS / 'console-gallery.png'} and {DOCS / 'console-job.png'}\n")


if __name__ == "__main__":
    asyncio.run(main())
