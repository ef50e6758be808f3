"""A client's rate holds across replicas: two `falrelay api` processes on one Postgres, hit
alternately as fast as they answer, admit together what one would, on the wire."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from app.auth import service as auth_service
from app.clients import service as clients
from app.db.pool import create_pool
from tests.servers import free_port

pytestmark = pytest.mark.slow

RATE = 4.0
BURST = 4
SECONDS = 4.0


def falrelay(*args: str) -> list[str]:
    script = Path(sys.executable).with_name("falrelay")
    return [str(script), *args] if script.exists() else [sys.executable, "-m", "app", *args]


class ApiProcess:
    def __init__(self, database_url: str, log: Path) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        env = {k: v for k, v in os.environ.items() if not k.startswith("FALRELAY_")}
        env.update(FALRELAY_DATABASE_URL=database_url, FALRELAY_ACCESS_LOG="false")
        self._log_file = log.open("wb")
        self.proc = subprocess.Popen(
            falrelay("api", "--host", "127.0.0.1", "--port", str(port)),
            env=env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )

    async def ready(self) -> None:
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient(timeout=2) as http:
            while time.monotonic() < deadline:
                assert self.proc.poll() is None, self.log.read_text()
                try:
                    if (await http.get(f"{self.url}/readyz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.05)
        raise AssertionError(f"falrelay api did not become ready: {self.log.read_text()}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()


async def test_the_rate_holds_across_two_processes(fresh_database_url: str, tmp_path: Path) -> None:
    pool = await create_pool(fresh_database_url, min_size=1, max_size=2)
    try:
        client_id, key = await auth_service.create_client(pool, "shared")
        await clients.set_limits(
            pool, str(client_id), {"requests_per_second": RATE, "burst": BURST}
        )
    finally:
        await pool.close()
    replicas = [ApiProcess(fresh_database_url, tmp_path / f"api-{n}.log") for n in range(2)]
    try:
        await asyncio.gather(*(replica.ready() for replica in replicas))
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(headers=headers, timeout=10) as http:
            answers: list[tuple[int, httpx.Response]] = []

            async def hammer(replica: int) -> None:
                # Two callers per replica, so each process always has a request in hand.
                while time.monotonic() < stop:
                    response = await http.get(f"{replicas[replica].url}/v1/models")
                    answers.append((replica, response))

            started = time.monotonic()
            stop = started + SECONDS
            await asyncio.gather(*(hammer(n % 2) for n in range(4)))
            elapsed = time.monotonic() - started
    finally:
        for replica in replicas:
            replica.close()

    admitted = [(n, r) for n, r in answers if r.status_code == 200]
    refused = [(n, r) for n, r in answers if r.status_code == 429]
    assert len(admitted) + len(refused) == len(answers), {r.status_code for _, r in answers}
    # GCRA admits at most the burst plus the rate over the time the test ran, whichever
    # replica answered; a limit kept per process would admit about twice that.
    bound = BURST + RATE * elapsed
    assert len(admitted) <= bound, (len(admitted), bound, len(answers))
    assert len(admitted) >= BURST + RATE * (SECONDS - 1.5), (len(admitted), len(answers))
    # Both replicas admitted and refused: the budget was one, spent from either side.
    assert {n for n, _ in admitted} == {0, 1}
    assert {n for n, _ in refused} == {0, 1}
    # Each refusal on the wire: problem+json, Retry-After, and the IETF fields.
    for _, response in refused:
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["type"].endswith("/rate-limited")
        assert int(response.headers["retry-after"]) >= 1
        assert response.headers["ratelimit-policy"] == f'"default";q={BURST};w=1'
        assert response.headers["ratelimit"].startswith('"default";r=0;t=')
    for _, response in admitted:
        assert response.headers["ratelimit-policy"] == f'"default";q={BURST};w=1'
        assert response.headers["ratelimit"].startswith('"default";r=')
