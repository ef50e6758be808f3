"""The whole product on loopback, as the end-to-end and memory benchmarks drive it:
`falrelay serve` (API and workers), the fake fal (zero latency) and a receiver, with one
webhook endpoint subscribed to `job.succeeded`."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from bench.benchmarks.common import HARNESS_TIMEOUT
from bench.context import create_api_key, start_fakefal, start_falrelay, start_receiver
from bench.processes import HOST, Process, Processes, free_port


@dataclass
class Stack:
    serve: Process
    serve_url: str
    fakefal: Process
    receiver: Process
    receiver_url: str
    client_id: uuid.UUID
    key: str
    endpoint_id: uuid.UUID
    fakefal_url: str = ""

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"}

    async def receiver_stats(self) -> dict[str, Any]:
        async with httpx.AsyncClient(trust_env=False, timeout=HARNESS_TIMEOUT) as http:
            stats: dict[str, Any] = (await http.get(f"{self.receiver_url}/stats")).json()
            return stats

    async def reset_receiver(self) -> None:
        async with httpx.AsyncClient(trust_env=False, timeout=HARNESS_TIMEOUT) as http:
            await http.post(f"{self.receiver_url}/reset")

    async def wait_delivered(self, jobs: int, *, within: float, idle: float = 5.0) -> None:
        """Until the receiver has `jobs` distinct job.succeeded events, or `idle` seconds
        pass without progress, or `within` seconds in all."""
        started = last_change = time.monotonic()
        seen = -1
        while True:
            got = (await self.receiver_stats())["jobs"]
            now = time.monotonic()
            if got >= jobs or now - started > within or now - last_change > idle:
                return
            if got != seen:
                seen, last_change = got, now
            await asyncio.sleep(0.1)


async def start_stack(
    procs: Processes, database_url: str, *, variants: str = "", **settings: Any
) -> Stack:
    """`variants`: proposed app changes for `falrelay serve` (bench/variants.py)."""
    client_id, key = await create_api_key(database_url)
    suffix = f"-{variants}" if variants else ""
    (fakefal, fal_url), (receiver, receiver_url) = await asyncio.gather(
        start_fakefal(procs, f"fakefal{suffix}"), start_receiver(procs, f"receiver{suffix}")
    )
    port = free_port()
    serve_url = f"http://{HOST}:{port}"
    serve, _ = await start_falrelay(
        procs,
        "serve",
        database_url,
        name=f"falrelay-serve{suffix}",
        variants=variants,
        port=port,
        fal_queue_url=fal_url,
        fal_jwks_url=f"{fal_url}/.well-known/jwks.json",
        public_base_url=serve_url,
        allow_private_webhook_urls=True,
        **settings,
    )
    async with httpx.AsyncClient(
        base_url=serve_url,
        trust_env=False,
        headers={"Authorization": f"Bearer {key}"},
        timeout=HARNESS_TIMEOUT,
    ) as api:
        response = await api.post(
            "/v1/webhook-endpoints",
            json={"url": f"{receiver_url}/e2e/hook", "event_types": ["job.succeeded"]},
        )
        response.raise_for_status()
        endpoint_public_id: str = response.json()["id"]
    endpoint_id = uuid.UUID(hex=endpoint_public_id.rsplit("_", 1)[1])
    return Stack(
        serve, serve_url, fakefal, receiver, receiver_url, client_id, key, endpoint_id, fal_url
    )
