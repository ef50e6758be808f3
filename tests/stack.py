"""The whole product over real HTTP on loopback: `falrelay serve` (API + workers) in one
uvicorn, the fake fal in another, a fresh migrated database each."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.auth import service as auth_service
from app.catalog import CATALOG
from app.db.pool import Pool, create_pool
from app.fakefal import FakeFal, FakeFalConfig
from app.fal.callback_urls import load as load_callback_urls
from app.main import create_app
from app.settings import Settings
from tests.servers import LiveServer, free_port

TERMINAL = {"succeeded", "failed", "canceled"}


@dataclass
class Stack:
    service_url: str
    fal_url: str
    client_id: uuid.UUID
    settings: Settings
    pool: Pool  # the test's own pool onto the service's database, for assertions
    api: httpx.AsyncClient  # to the service, with the tenant's key
    fal: httpx.AsyncClient  # to the fake fal's control API and files
    app: FastAPI  # the service (its worker: `app.state.worker`), running on its server's thread

    async def create_job(self, prompt: str = "a red fox in snow", **input: Any) -> str:
        response = await self.api.post(
            "/v1/jobs", json={"input": {"prompt": prompt, "resolution": "1K", **input}}
        )
        assert response.status_code == 201, response.text
        job_id: str = response.json()["id"]
        return job_id

    async def wait_for(
        self, job_id: str, statuses: set[str] = TERMINAL, within: float = 15.0
    ) -> dict[str, Any]:
        deadline = time.monotonic() + within
        while True:
            job: dict[str, Any] = (await self.api.get(f"/v1/jobs/{job_id}")).json()
            if job["status"] in statuses:
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job stuck: {job}")
            await asyncio.sleep(0.05)

    async def configure_fal(self, **knobs: Any) -> None:
        response = await self.fal.patch("/_fake/config", json=knobs)
        assert response.status_code == 200, response.text

    async def fal_stats(self) -> dict[str, int]:
        stats: dict[str, int] = (await self.fal.get("/_fake/stats")).json()
        return stats

    async def callback_url(self, job_id: str) -> str:
        """The URL (with its token) this service hands fal for the job."""
        url = (await load_callback_urls(self.pool, self.service_url)).for_job(job_id)
        assert url is not None
        return url

    async def event_types(self, job_id: str) -> list[str]:
        from tests.support import job_uuid

        rows = await self.pool.fetch(
            "SELECT type FROM events WHERE job_id = $1 ORDER BY created_at, id", job_uuid(job_id)
        )
        return [row["type"] for row in rows]


StackFactory = Callable[..., AbstractAsyncContextManager[Stack]]


@pytest.fixture
def make_stack(fresh_database_url: str) -> StackFactory:
    @asynccontextmanager
    async def factory(
        *, webhooks: bool = True, fal: FakeFalConfig | None = None, **overrides: Any
    ) -> AsyncIterator[Stack]:
        # Like `falrelay dev`'s: the fake also hosts the models imported into this service.
        fake = FakeFal(
            fal or FakeFalConfig(random_seed=7),
            also_serves=lambda model_id: CATALOG.get(model_id) is not None,
        )
        port = free_port()
        service_url = f"http://127.0.0.1:{port}"
        with LiveServer(fake.app) as fal_server:
            settings = Settings(
                database_url=fresh_database_url,
                fal_queue_url=fal_server.url,
                fal_jwks_url=f"{fal_server.url}/.well-known/jwks.json",
                fal_rest_url=fal_server.url,
                fal_cdn_url=overrides.pop("fal_cdn_url", fal_server.url),
                fal_key="test-fal-key",
                public_base_url=service_url if webhooks else None,
                allow_private_webhook_urls=overrides.pop("allow_private_webhook_urls", True),
                worker_poll_seconds=0.05,
                reconcile_after_seconds=overrides.pop("reconcile_after_seconds", 5.0),
                poll_interval_seconds=overrides.pop("poll_interval_seconds", 0.1),
                **overrides,
            )
            pool = await create_pool(fresh_database_url, min_size=1, max_size=4)
            try:
                client_id, key = await auth_service.create_client(pool, "e2e")
                app = create_app(settings, run_worker=True)
                with LiveServer(app, port=port) as service:
                    async with (
                        httpx.AsyncClient(
                            base_url=service.url, headers={"Authorization": f"Bearer {key}"}
                        ) as api,
                        httpx.AsyncClient(base_url=fal_server.url) as fal_http,
                    ):
                        yield Stack(
                            service.url,
                            fal_server.url,
                            client_id,
                            settings,
                            pool,
                            api,
                            fal_http,
                            app,
                        )
            finally:
                await pool.close()
        # The fake closes itself (its webhook tasks, its HTTP client) at its server's shutdown.

    return factory
