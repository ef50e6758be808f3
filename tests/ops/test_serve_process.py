"""`falrelay serve` as operators run it: a process with JSON logs, stopped with SIGTERM under
load. Nothing acknowledged is lost, the exit is within the bound, and no secret is logged."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from app.auth import service as auth_service
from app.db.pool import create_pool
from app.fakefal import FakeFal, FakeFalConfig
from tests.receivers import Receiver
from tests.servers import LiveServer, free_port
from tests.support import job_uuid

pytestmark = pytest.mark.slow

SHUTDOWN_BOUND = 4.0
FAL_KEY = "fal-key-that-must-never-be-logged-7f3a"


def falrelay(*args: str) -> list[str]:
    script = Path(sys.executable).with_name("falrelay")
    return [str(script), *args] if script.exists() else [sys.executable, "-m", "app", *args]


class ServeProcess:
    def __init__(self, env: dict[str, str], port: int, log: Path) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        self._log_file = log.open("wb")
        self.proc = subprocess.Popen(
            falrelay("serve", "--host", "127.0.0.1", "--port", str(port)),
            env=env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                if httpx.get(f"{self.url}/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError("falrelay serve did not become ready")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log_file.close()


@pytest.fixture
def fal_and_receiver() -> Iterator[tuple[str, Receiver, str]]:
    inbox = Receiver()
    fake = FakeFal(FakeFalConfig(queue_latency=0.2, run_latency=0.3, random_seed=1))
    with LiveServer(fake.app) as fal, LiveServer(inbox.app) as receiver:
        yield fal.url, inbox, receiver.url


async def test_sigterm_under_load_loses_nothing_and_logs_no_secret(
    fresh_database_url: str, fal_and_receiver: tuple[str, Receiver, str], tmp_path: Path
) -> None:
    fal_url, inbox, receiver_url = fal_and_receiver
    pool = await create_pool(fresh_database_url, min_size=1, max_size=2)
    _, api_key = await auth_service.create_client(pool, "ops")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FALRELAY_")}
    env.update(
        FALRELAY_DATABASE_URL=fresh_database_url,
        FALRELAY_FAL_KEY=FAL_KEY,
        FALRELAY_FAL_QUEUE_URL=fal_url,
        FALRELAY_FAL_JWKS_URL=f"{fal_url}/.well-known/jwks.json",
        FALRELAY_PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
        FALRELAY_ALLOW_PRIVATE_WEBHOOK_URLS="true",
        FALRELAY_SHUTDOWN_TIMEOUT_SECONDS=str(SHUTDOWN_BOUND - 1),
        FALRELAY_WORKER_POLL_SECONDS="0.05",
        FALRELAY_RECONCILE_AFTER_SECONDS="1",
        FALRELAY_LOG_FORMAT="json",
    )
    headers = {"Authorization": f"Bearer {api_key}"}
    first = ServeProcess(env, port, tmp_path / "first.log")
    accepted: list[str] = []
    try:
        first.wait_ready()
        async with httpx.AsyncClient(base_url=first.url, headers=headers, timeout=10) as http:
            endpoint = (
                await http.post(
                    "/v1/webhook-endpoints",
                    json={"url": f"{receiver_url}/ops", "event_types": ["job.succeeded"]},
                )
            ).json()
            secret = endpoint["secret"]

            async def load() -> None:
                n = 0
                while True:
                    n += 1
                    try:
                        response = await http.post(
                            "/v1/jobs", json={"input": {"prompt": f"load {n}", "resolution": "1K"}}
                        )
                    except httpx.TransportError:
                        return  # the server is gone: nothing more was acknowledged
                    if response.status_code == 201:
                        accepted.append(response.json()["id"])
                    elif response.status_code >= 500:
                        return
                    await asyncio.sleep(0.01)

            loader = asyncio.create_task(load())
            # SIGTERM once the load is well under way: a count of acknowledged jobs, not a
            # sleep, so a busy machine that answers slowly still signals mid-load.
            under_way = time.monotonic() + 60
            while len(accepted) <= 20:
                assert not loader.done(), len(accepted)
                assert time.monotonic() < under_way, len(accepted)
                await asyncio.sleep(0.05)
            signalled = time.monotonic()
            first.proc.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(first.proc.wait, 30)
            took = time.monotonic() - signalled
            await asyncio.wait_for(loader, timeout=15)
    finally:
        first.close()

    assert code == 0
    assert took < SHUTDOWN_BOUND + 1.5, took
    assert len(accepted) > 20

    # Whatever the first process left (queued, at fal, undelivered), a second one finishes.
    second = ServeProcess(env, port, tmp_path / "second.log")
    try:
        second.wait_ready()
        deadline = time.monotonic() + 60
        while True:
            done = await pool.fetchval(
                "SELECT count(*) FROM jobs WHERE id = ANY($1::uuid[]) AND status = 'succeeded'",
                [job_uuid(job_id) for job_id in accepted],
            )
            pending = await pool.fetchval(
                "SELECT count(*) FROM deliveries WHERE status <> 'succeeded'"
            )
            if done == len(accepted) and pending == 0:
                break
            assert time.monotonic() < deadline, (done, len(accepted), pending)
            await asyncio.sleep(0.1)
    finally:
        second.proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(second.proc.wait, 30)
        second.close()

    # Every acknowledged job reached the receiver at least once.
    delivered = {orjson.loads(request.body)["data"]["id"] for request in inbox.at("/ops")}
    assert set(accepted) <= delivered
    await pool.close()

    for log in (first.log, second.log):
        text = log.read_text()
        for secret_value in (api_key, FAL_KEY, secret):
            assert secret_value not in text, f"a secret is in {log.name}"
        lines = [line for line in text.splitlines() if line.strip()]
        assert lines
        entries = [orjson.loads(line) for line in lines]  # one JSON object per line
        access = [e for e in entries if e["logger"] == "falrelay.access"]
        assert access
        assert all(e.get("request_id") for e in access)
    first_lines = [orjson.loads(line) for line in first.log.read_text().splitlines() if line]
    assert any(e.get("path") == "/v1/jobs" and e.get("status") == 201 for e in first_lines)
