"""The fault run: jobs flow through `falrelay serve` while everything around it misbehaves.

The fake fal answers submissions with 429 and 5xx, fails generations, and drops, duplicates,
delays and reorders its webhooks; receivers fail, are throttled, hang past the delivery timeout,
go down and come back; the service is killed with SIGKILL at random moments and started again;
Postgres crashes once (an immediate stop: recovery at restart) under it all. Afterwards every
acknowledged job is terminal with the outcome the fake fal decided, every subscriber received
every event at least once, no queue holds anything, and every second fal submission of a job is
one the README's submission policy allows.

CI runs the small size (FALRELAY_CHAOS_JOBS, default 100: about 40 s); by hand:
`FALRELAY_CHAOS_JOBS=2000 pytest -m chaos -s`. The seed is printed; FALRELAY_CHAOS_SEED replays
the same faults (kill moments also depend on the machine's speed). FALRELAY_CHAOS_REPORT=path
writes the figures as JSON.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from app.auth import service as auth_service
from app.db.pool import asyncpg_dsn, create_pool
from app.events.types import JOB_EVENT_TYPES, TERMINAL_EVENT_TYPES
from app.fakefal import FakeFal, FakeFalConfig
from tests.reliability.chaos import Disruptions, Subscription, audit
from tests.reliability.postgres import DisposablePostgres
from tests.reliability.processes import ServeProcess, serve_environment
from tests.reliability.receivers import Fates, FaultyReceiver
from tests.servers import LiveServer, free_port

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

JOBS = int(os.environ.get("FALRELAY_CHAOS_JOBS", "100"))
FAL_KEY = "fal-key-for-the-fault-run-3c9e1b"
# Short timeouts and leases, so that what a killed process held comes back within the run.
FAL_TIMEOUT = 3.0
SUBMIT_LEASE = 9.0  # > one fal call (timeout + connect)
RECONCILE_LEASE = 17.0  # > two fal calls
DELIVERY_TIMEOUT = 1.5
DELIVERY_LEASE = 4.0
# A delivery the schedule puts further away than this is brought forward once the faults stop:
# after two failures the next attempt is 5 minutes out, then 30 (the README's schedule).
FAST_FORWARD_BEYOND = 10.0

SUBSCRIBERS = {
    # path: (event types, first-arrival fates)
    "/steady": (JOB_EVENT_TYPES, Fates()),
    "/flaky": (TERMINAL_EVENT_TYPES, Fates(fail=0.15, throttle=0.05, hang=0.1)),
    "/outage": (("job.submitted", *TERMINAL_EVENT_TYPES), Fates(fail=0.05)),
}
CALLBACK_FATES = Fates(fail=0.1, hang=0.05)


def fake_fal_config(seed: int) -> FakeFalConfig:
    return FakeFalConfig(
        queue_latency=0.3,
        run_latency=0.5,
        error_rate=0.15,
        error_types=["validation", "request_timeout", "runner_disconnected", "internal_error"],
        submit_429_rate=0.08,
        submit_5xx_rate=0.08,
        webhook_drop_rate=0.1,
        webhook_duplicate_rate=0.1,
        webhook_delay=0.1,
        # Each webhook waits a further 0-3 s: they overtake each other, and some come after the
        # reconciler (2 s) has already fetched the result.
        webhook_reorder=3.0,
        payload_error_rate=0.05,
        random_seed=seed,
    )


async def test_nothing_is_lost_under_faults(
    own_postgres: DisposablePostgres,
    own_database_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    seed = int(os.environ.get("FALRELAY_CHAOS_SEED") or random.randrange(2**31))
    rng = random.Random(seed)
    started = time.monotonic()
    pool = await create_pool(own_database_url, min_size=1, max_size=1)
    client_id, api_key = await auth_service.create_client(pool, "chaos")
    await pool.close()

    fake = FakeFal(fake_fal_config(seed))
    receiver = FaultyReceiver(
        seed,
        {path: fates for path, (_, fates) in SUBSCRIBERS.items()} | {"/callback": CALLBACK_FATES},
        hang_seconds=DELIVERY_TIMEOUT + 1.0,
    )
    disruptions = Disruptions()
    with LiveServer(fake.app) as fal_server, LiveServer(receiver.app) as receiver_server:
        port = free_port()
        env = serve_environment(
            database_url=own_database_url,
            fal_key=FAL_KEY,
            fal_queue_url=fal_server.url,
            fal_jwks_url=f"{fal_server.url}/.well-known/jwks.json",
            public_base_url=f"http://127.0.0.1:{port}",
            allow_private_webhook_urls="true",
            worker_poll_seconds="0.1",
            reconcile_after_seconds="2",
            fal_timeout_seconds=str(FAL_TIMEOUT),
            submit_lease_seconds=str(SUBMIT_LEASE),
            reconcile_lease_seconds=str(RECONCILE_LEASE),
            delivery_timeout_seconds=str(DELIVERY_TIMEOUT),
            delivery_lease_seconds=str(DELIVERY_LEASE),
            shutdown_timeout_seconds="2",
            db_pool_max_size="10",
            log_format="json",
        )
        serve = ServeProcess(env, port, tmp_path)
        try:
            serve.start()
            await serve.ready()
            async with httpx.AsyncClient(
                base_url=serve.url, headers={"Authorization": f"Bearer {api_key}"}, timeout=5
            ) as api:
                subscriptions = [
                    await _subscribe(api, f"{receiver_server.url}{path}", path, types)
                    for path, (types, _) in SUBSCRIBERS.items()
                ]
                secret = (await api.get("/v1/webhook-secret")).json()["secret"]
                callback = Subscription("/callback", secret, frozenset(TERMINAL_EVENT_TYPES))
                run = ChaosRun(api, serve, own_postgres, receiver, rng, disruptions, seed)
                await run.go(f"{receiver_server.url}/callback")
            await serve.ready()
            forwarded, breakers, settled_in = await _settle(
                asyncpg_dsn(own_database_url), client_id
            )
        finally:
            serve.stop()

        pool = await create_pool(own_database_url, min_size=1, max_size=1)
        try:
            result = await audit(
                pool,
                client_id=client_id,
                acknowledged=run.acknowledged,
                jobs_wanted=JOBS,
                callback_jobs=run.callback_jobs,
                fake=fake,
                receiver=receiver,
                subscriptions=subscriptions,
                callback=callback,
                disruptions=disruptions,
                logs=serve.logs,
                submit_lease=SUBMIT_LEASE,
                fal_timeout=FAL_TIMEOUT,
            )
        finally:
            await pool.close()

    secrets = [api_key, FAL_KEY, secret, *(s.secret for s in subscriptions)]
    for name in _logs_with_secrets(serve.logs, secrets):
        result.problem(f"a secret is in {name}")

    figures: dict[str, Any] = {
        "seed": seed,
        "jobs": JOBS,
        "seconds": round(time.monotonic() - started, 1),
        "settled_in_seconds": round(settled_in, 1),
        "kills": serve.kills,
        "postgres_restarts": len(disruptions.postgres_down),
        "client_retries": run.client_retries,
        **{f"fal_{name}": value for name, value in fake.stats.as_dict().items()},
        "fal_webhooks_delayed": sum(r.webhook.delay > 0 for r in fake.requests),
        **{name: value for name, value in receiver.faults.items()},
        "deliveries_brought_forward": forwarded,
        "breakers_brought_forward": breakers,
        **result.figures,
    }
    summary = _table(figures)
    if report := os.environ.get("FALRELAY_CHAOS_REPORT"):
        _write_report(Path(report), figures)
    assert not result.problems, "\n".join([summary, *result.problems])
    assert figures["lost_jobs"] == 0
    assert figures["lost_deliveries"] == 0
    assert figures["kills"] >= 2
    assert figures["postgres_restarts"] == 1
    with capsys.disabled():
        print("\n" + summary)  # noqa: T201 - the run's figures, shown even when it passes


class ChaosRun:
    """The load and the faults, all at once: clients creating jobs (retrying with their
    Idempotency-Key when the service is down), SIGKILLs, one Postgres crash, receiver outages."""

    def __init__(
        self,
        api: httpx.AsyncClient,
        serve: ServeProcess,
        postgres: DisposablePostgres,
        receiver: FaultyReceiver,
        rng: random.Random,
        disruptions: Disruptions,
        seed: int,
    ) -> None:
        self.api = api
        self.serve = serve
        self.postgres = postgres
        self.receiver = receiver
        self.rng = rng
        self.disruptions = disruptions
        self.seed = seed
        self.acknowledged: dict[int, str] = {}
        self.callback_jobs: set[str] = set()
        self.client_retries = 0
        # About 25 jobs a second, at least 12 s of load; faults go on a little longer.
        self.produce_for = max(12.0, JOBS / 25)
        self.faults_for = self.produce_for + 6.0

    async def go(self, callback_url: str) -> None:
        until = time.monotonic() + self.faults_for
        await asyncio.gather(
            *(self._lane(lane, 4, callback_url) for lane in range(4)),
            self._kill_at_random(until),
            self._crash_postgres_once(at=self.rng.uniform(0.3, 0.6) * self.produce_for),
            self._receiver_outages(until),
        )

    async def _lane(self, lane: int, lanes: int, callback_url: str) -> None:
        pace = random.Random(self.seed + lane)
        interval = self.produce_for * lanes / JOBS
        for n in range(lane, JOBS, lanes):
            body: dict[str, Any] = {
                "input": {"prompt": f"chaos job {n}", "resolution": "1K", "seed": n + 1},
                "metadata": {"n": str(n)},
            }
            if n % 4 == 0:
                body["callback_url"] = callback_url
            job_id = await self._create(body, key=f"chaos-{self.seed}-{n}")
            self.acknowledged[n] = job_id
            if n % 4 == 0:
                self.callback_jobs.add(job_id)
            await asyncio.sleep(interval * pace.uniform(0.5, 1.5))

    async def _create(self, body: dict[str, Any], key: str) -> str:
        """A client that retries until its job is acknowledged: the same Idempotency-Key makes
        a retry return the job a lost answer had created."""
        while True:
            try:
                response = await self.api.post(
                    "/v1/jobs", json=body, headers={"Idempotency-Key": key}
                )
            except httpx.TransportError:
                response = None
            if response is not None and response.status_code in (200, 201):
                job_id: str = response.json()["id"]
                return job_id
            if response is not None and response.status_code not in (409, 503):
                raise AssertionError(f"job intake answered {response.status_code}: {response.text}")
            self.client_retries += 1
            await asyncio.sleep(0.2)

    async def _kill_at_random(self, until: float) -> None:
        while True:
            await asyncio.sleep(self.rng.uniform(1.0, 4.0))
            if time.monotonic() > until:
                return
            self.disruptions.kills.append(time.time())
            self.serve.kill()
            await asyncio.sleep(self.rng.uniform(0.0, 0.5))
            await self.serve.ready()

    async def _crash_postgres_once(self, at: float) -> None:
        await asyncio.sleep(at)
        down = time.time()
        await asyncio.to_thread(self.postgres.stop, "immediate")
        await asyncio.sleep(1.0)
        await asyncio.to_thread(self.postgres.start)
        self.disruptions.postgres_down.append((down, time.time()))

    async def _receiver_outages(self, until: float) -> None:
        for _ in range(2):
            await asyncio.sleep(self.rng.uniform(2.0, self.faults_for / 2))
            if time.monotonic() < until:
                self.receiver.outage("/outage", 2.5)


async def _subscribe(
    api: httpx.AsyncClient, url: str, path: str, event_types: tuple[str, ...]
) -> Subscription:
    response = await api.post(
        "/v1/webhook-endpoints", json={"url": url, "event_types": list(event_types)}
    )
    assert response.status_code == 201, response.text
    return Subscription(path, response.json()["secret"], frozenset(event_types))


FAST_FORWARD = f"""
UPDATE delivery_queue SET next_attempt_at = now()
WHERE client_id = $1
  AND next_attempt_at > now() + interval '{FAST_FORWARD_BEYOND} seconds'
  AND (locked_until IS NULL OR locked_until <= now())
RETURNING id
"""
# Likewise a circuit breaker's cool-down (30 s, doubling per trip): the receiver that opened it
# is back once the faults stop, and its half-open probe is what closes it.
FAST_FORWARD_BREAKERS = f"""
UPDATE webhook_endpoints SET breaker_open_until = now()
WHERE client_id = $1 AND breaker_open_until > now() + interval '{FAST_FORWARD_BEYOND} seconds'
RETURNING id
"""
OPEN_WORK = """
SELECT (SELECT count(*) FROM jobs WHERE client_id = $1
        AND status NOT IN ('succeeded', 'failed', 'canceled')) AS jobs,
       (SELECT count(*) FROM deliveries WHERE client_id = $1 AND status = 'pending') AS deliveries
"""


async def _settle(dsn: str, client_id: Any) -> tuple[int, int, float]:
    """Until no job is open and no delivery pending (or time runs out: the audit then says
    what is left). Retries the schedule puts minutes away, and breakers' cool-downs, are brought
    forward, as if the clock had moved on; how many of each is reported."""
    conn = await asyncpg.connect(dsn)
    forwarded: set[Any] = set()
    breakers: set[Any] = set()
    started = time.monotonic()
    deadline = started + 60 + JOBS / 20
    try:
        while time.monotonic() < deadline:
            open_work = await conn.fetchrow(OPEN_WORK, client_id)
            assert open_work is not None
            if open_work["jobs"] == 0 and open_work["deliveries"] == 0:
                break
            forwarded.update(row["id"] for row in await conn.fetch(FAST_FORWARD, client_id))
            breakers.update(row["id"] for row in await conn.fetch(FAST_FORWARD_BREAKERS, client_id))
            await asyncio.sleep(0.25)
    finally:
        await conn.close()
    return len(forwarded), len(breakers), time.monotonic() - started


def _table(figures: dict[str, Any]) -> str:
    width = max(len(name) for name in figures)
    lines = [f"{'fault run':<{width}}  value", f"{'-' * width}  -----"]
    lines += [f"{name:<{width}}  {value}" for name, value in figures.items()]
    return "\n".join(lines)


def _logs_with_secrets(logs: list[Path], secrets: list[str]) -> list[str]:
    return [log.name for log in logs if any(value in log.read_text() for value in secrets)]


def _write_report(path: Path, figures: dict[str, Any]) -> None:
    path.write_bytes(orjson.dumps(figures, option=orjson.OPT_INDENT_2))
