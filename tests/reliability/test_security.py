"""Hostile input against the whole API: replayed and stale fal callbacks, another client's ids
on every route, every SSRF address class (literal, by name, by redirect), oversized, deeply
nested and malformed bodies, and secrets in answers and log lines.

Every target a test points the service at is a loopback address, watched by a tripwire that
counts connections: a broken guard would show up as a connection here, and still send nothing
off this machine. Names used are ones that resolve without DNS (`localhost`, numeric forms).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI

from app.auth import service as auth_service
from app.db.pool import Pool, create_pool
from app.fakefal import FakeFal, FakeFalConfig
from app.fakefal.webhooks import webhook_body
from app.fal.callback_urls import load as load_callback_urls
from app.jobs import service as jobs_service
from app.jobs.schemas import JobCreate
from app.jobs.schemas import job_id as job_public_id
from app.main import create_app
from app.settings import Settings
from tests.receivers import Answer, Receiver
from tests.reliability.processes import ServeProcess, serve_environment
from tests.servers import LiveServer, free_port
from tests.stack import StackFactory
from tests.support import PROBLEM_JSON, Tenant, assert_problem, job_uuid

# -- fal callbacks: a genuine one replayed, a genuine key with a stale timestamp --------------


@dataclass
class FalStack:
    fake: FakeFal
    pool: Pool
    api: httpx.AsyncClient
    service_url: str

    async def job_at_fal(self) -> dict[str, Any]:
        created = await self.api.post("/v1/jobs", json={"input": {"prompt": "replay"}})
        assert created.status_code == 201, created.text
        deadline = time.monotonic() + 10
        while True:
            job: dict[str, Any] = (await self.api.get(f"/v1/jobs/{created.json()['id']}")).json()
            if job["status"] == "submitted":
                return job
            assert time.monotonic() < deadline, job
            await asyncio.sleep(0.05)

    async def callback_url(self, job_id: str) -> str:
        url = (await load_callback_urls(self.pool, self.service_url)).for_job(job_id)
        assert url is not None
        return url

    def genuine(self, request_id: str, *, at: int | None = None) -> tuple[bytes, dict[str, str]]:
        """fal's completion webhook for the request, signed with fal's (the fake's) key."""
        request = self.fake.requests.get(request_id)
        assert request is not None
        body = orjson.dumps(webhook_body(request_id, request.output()))
        signed_at = int(time.time()) if at is None else at
        headers = self.fake.signer.headers(request_id, "fake-user", signed_at, body)
        return body, {**headers, "Content-Type": "application/json"}

    async def events(self, job_id: str) -> list[str]:
        rows = await self.pool.fetch(
            "SELECT type FROM events WHERE job_id = $1 ORDER BY created_at, id", job_uuid(job_id)
        )
        return [row["type"] for row in rows]


@pytest.fixture
async def fal_stack(fresh_database_url: str) -> AsyncIterator[FalStack]:
    # The job waits at fal for a minute: only the callbacks this test sends can finish it.
    fake = FakeFal(FakeFalConfig(queue_latency=60, random_seed=5))
    port = free_port()
    service_url = f"http://127.0.0.1:{port}"
    with LiveServer(fake.app) as fal_server:
        settings = Settings(
            database_url=fresh_database_url,
            fal_queue_url=fal_server.url,
            fal_jwks_url=f"{fal_server.url}/.well-known/jwks.json",
            fal_key="security-fal-key",
            public_base_url=service_url,
            worker_poll_seconds=0.05,
            reconcile_after_seconds=60,
        )
        pool = await create_pool(fresh_database_url, min_size=1, max_size=2)
        try:
            _, key = await auth_service.create_client(pool, "security")
            with LiveServer(create_app(settings, run_worker=True), port=port):
                async with httpx.AsyncClient(
                    base_url=service_url, headers={"Authorization": f"Bearer {key}"}
                ) as api:
                    yield FalStack(fake, pool, api, service_url)
        finally:
            await pool.close()


async def test_a_replayed_genuine_callback_is_applied_once(fal_stack: FalStack) -> None:
    job = await fal_stack.job_at_fal()
    url = await fal_stack.callback_url(job["id"])
    body, headers = fal_stack.genuine(job["fal_request_id"])
    async with httpx.AsyncClient() as http:
        first = await http.post(url, content=body, headers=headers)
        assert first.status_code == 200, first.text
        assert first.json()["outcome"] == "applied"
        finished = (await fal_stack.api.get(f"/v1/jobs/{job['id']}")).json()
        assert finished["status"] == "succeeded"
        # The same bytes and signature again, as an attacker (or fal's retry) would send them.
        for _ in range(3):
            replay = await http.post(url, content=body, headers=headers)
            assert replay.status_code == 200, replay.text
            assert replay.json()["outcome"] == "duplicate"
    assert (await fal_stack.api.get(f"/v1/jobs/{job['id']}")).json() == finished
    assert await fal_stack.events(job["id"]) == ["job.submitted", "job.succeeded"]


async def test_a_genuine_callback_replayed_at_another_job_changes_nothing(
    fal_stack: FalStack,
) -> None:
    first, second = await fal_stack.job_at_fal(), await fal_stack.job_at_fal()
    body, headers = fal_stack.genuine(first["fal_request_id"])
    async with httpx.AsyncClient() as http:
        response = await http.post(
            await fal_stack.callback_url(second["id"]), content=body, headers=headers
        )
    assert response.status_code == 200, response.text
    assert response.json()["outcome"] == "other_request"
    assert (await fal_stack.api.get(f"/v1/jobs/{second['id']}")).json() == second
    assert await fal_stack.events(second["id"]) == ["job.submitted"]


# Past, just outside the 300 s window: time only moves it further out. Future: the signature
# grows older on its way, so it is set 30 s beyond the edge (at 301 s, a busy second between
# signing and checking let it in).
@pytest.mark.parametrize("skew", [-301, 330, -3600])
async def test_a_genuine_signature_outside_the_window_is_refused(
    fal_stack: FalStack, skew: int
) -> None:
    job = await fal_stack.job_at_fal()
    body, headers = fal_stack.genuine(job["fal_request_id"], at=int(time.time()) + skew)
    async with httpx.AsyncClient() as http:
        response = await http.post(
            await fal_stack.callback_url(job["id"]), content=body, headers=headers
        )
    assert_problem(response, 401, "invalid-signature")
    assert (await fal_stack.api.get(f"/v1/jobs/{job['id']}")).json() == job
    assert await fal_stack.events(job["id"]) == ["job.submitted"]


async def test_a_genuine_signature_over_another_body_is_refused(fal_stack: FalStack) -> None:
    job = await fal_stack.job_at_fal()
    body, headers = fal_stack.genuine(job["fal_request_id"])
    tampered = body.replace(b'"status":"OK"', b'"status":"ERROR"')
    assert tampered != body
    async with httpx.AsyncClient() as http:
        response = await http.post(
            await fal_stack.callback_url(job["id"]), content=tampered, headers=headers
        )
    assert_problem(response, 401, "invalid-signature")
    assert (await fal_stack.api.get(f"/v1/jobs/{job['id']}")).json() == job


# -- another client's ids, on every route the app has -----------------------------------------

# A valid body per operation that takes one, so that a 404 is about the id, not the body.
VALID_BODIES: dict[str, Any] = {
    "update_webhook_endpoint": {"description": "not yours"},
    "rotate_webhook_secret": {"grace_period_seconds": 0},
    "recover_webhook_endpoint": {"since": "2020-01-01T00:00:00Z"},
}


async def _owned(tenant: Tenant) -> dict[str, str]:
    """One job, endpoint and delivery of the tenant, by path parameter name."""
    job = await tenant.http.post("/v1/jobs", json={"input": {"prompt": "mine"}})
    endpoint = await tenant.http.post(
        "/v1/webhook-endpoints", json={"url": "https://93.184.215.14/hook"}
    )
    assert job.status_code == 201, job.text
    assert endpoint.status_code == 201, endpoint.text
    ping = await tenant.http.post(f"/v1/webhook-endpoints/{endpoint.json()['id']}/test")
    assert ping.status_code == 202, ping.text
    return {
        "job_id": job.json()["id"],
        "endpoint_id": endpoint.json()["id"],
        "delivery_id": ping.json()["id"],
    }


async def _state_of(pool: Pool, tenant: Tenant) -> list[Any]:
    """Everything of the tenant's that a request could change."""
    queries = [
        "SELECT id, status, updated_at, locked_until FROM jobs WHERE client_id = $1 ORDER BY id",
        "SELECT id, url, description, enabled, secrets, event_types, updated_at "
        "FROM webhook_endpoints WHERE client_id = $1 ORDER BY id",
        "SELECT id, status, attempt_count, next_attempt_at, updated_at FROM deliveries "
        "WHERE client_id = $1 ORDER BY id",
        "SELECT count(*) FROM events WHERE client_id = $1",
    ]
    return [[dict(row) for row in await pool.fetch(query, tenant.client_id)] for query in queries]


def _operations_with_ids(app: FastAPI) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in app.openapi()["paths"].items():
        if re.search(r"\{\w+\}", path) and path.startswith("/v1"):
            for method, operation in item.items():
                yield method.upper(), path, operation


async def test_another_clients_ids_are_404_on_every_route(
    app: FastAPI, pool: Pool, tenant: Tenant, other_tenant: Tenant
) -> None:
    theirs = await _owned(other_tenant)
    before = await _state_of(pool, other_tenant)
    checked = []
    for method, path, operation in _operations_with_ids(app):
        names = set(re.findall(r"\{(\w+)\}", path))
        assert names <= set(theirs), f"{method} {path}: teach this test its ids {names}"
        body = None
        if "requestBody" in operation:
            body = VALID_BODIES.get(operation["operationId"])
            required = operation["requestBody"].get("required", False)
            assert body is not None or not required, f"{method} {path}: add a valid body"
        response = await tenant.http.request(method, path.format(**theirs), json=body)
        problem = assert_problem(response, 404, "not-found")
        for value in theirs.values():
            assert value not in str(problem.get("detail")) or value in path.format(**theirs)
        checked.append(f"{method} {path}")
    assert len(checked) >= 12, checked
    assert await _state_of(pool, other_tenant) == before


# -- SSRF: every address class at registration, and at connect time ---------------------------

NON_PUBLIC_LITERALS = [
    "127.0.0.1",  # loopback
    "127.9.8.7",
    "10.1.2.3",  # RFC 1918
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",  # link-local: cloud metadata
    "100.64.0.1",  # CGNAT
    "0.0.0.0",  # unspecified
    "224.0.0.1",  # multicast
    "240.0.0.1",  # reserved
    "255.255.255.255",  # broadcast
    "192.0.2.1",  # documentation
    "198.18.0.1",  # benchmarking
    "[::1]",
    "[::]",
    "[fe80::1]",  # link-local
    "[fc00::1]",  # unique local
    "[ff02::1]",  # multicast
    "[::ffff:127.0.0.1]",  # IPv4-mapped
    "[::ffff:7f00:1]",
    "[64:ff9b::a00:1]",  # NAT64 of 10.0.0.1
    "[2002:a00:1::1]",  # 6to4 of 10.0.0.1
    "[2001:0:4136:e378:8000:63bf:f5ff:fffe]",  # Teredo, client 10.0.0.1
    "[2001:db8::1]",  # documentation
    # IPv6 forms Python's is_global passes, though no public host uses them.
    "[::127.0.0.1]",  # IPv4-compatible (::/96)
    "[::a00:1]",  # IPv4-compatible ::10.0.0.1
    "[::ffff:0:127.0.0.1]",  # SIIT
    "[::ffff:0:a9fe:a9fe]",  # SIIT ::ffff:0:169.254.169.254
    "[fec0::1]",  # site-local
    "[3fff::1]",  # documentation (RFC 9637)
    "[5f00::1]",  # SRv6
]
# Names that resolve to loopback on this machine without asking DNS (the guard refuses each
# before any lookup).
LOCAL_NAMES = [
    "localhost",
    "LocalHost",
    "LOCALHOST.",
    "localhost..",
    "127.0.0.1.",
    "2130706433",
    "0x7f.1",
    "127.1",
    "0177.0.0.1",
]


@pytest.mark.parametrize("host", NON_PUBLIC_LITERALS + LOCAL_NAMES)
async def test_registration_refuses_every_non_public_target(
    tenant: Tenant, pool: Pool, host: str
) -> None:
    url = f"http://{host}:8080/hook"
    before = await _state_of(pool, tenant)
    created = await tenant.http.post("/v1/webhook-endpoints", json={"url": url})
    assert_problem(created, 422)
    endpoint = await tenant.http.post(
        "/v1/webhook-endpoints", json={"url": "https://93.184.215.14/hook"}
    )
    moved = await tenant.http.patch(
        f"/v1/webhook-endpoints/{endpoint.json()['id']}", json={"url": url}
    )
    assert_problem(moved, 422)
    assert (await tenant.http.get(f"/v1/webhook-endpoints/{endpoint.json()['id']}")).json()[
        "url"
    ] == "https://93.184.215.14/hook"
    # A job's callback_url is checked at intake by the same rule, with no DNS lookup: every
    # one of these hosts says what it is on its own.
    job = await tenant.http.post("/v1/jobs", json={"input": {"prompt": "p"}, "callback_url": url})
    assert_problem(job, 422)
    jobs, endpoints, *_ = await _state_of(pool, tenant)
    assert len(jobs) == len(before[0])
    assert len(endpoints) == len(before[1]) + 1


class Tripwire:
    """Listens on a loopback address and counts every connection made to it."""

    def __init__(self) -> None:
        self.connections = 0
        self.servers: list[asyncio.Server] = []

    async def listen(self, host: str) -> int:
        async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            writer.close()

        server = await asyncio.start_server(accepted, host, 0)
        self.servers.append(server)
        port: int = server.sockets[0].getsockname()[1]
        return port

    async def close(self) -> None:
        for server in self.servers:
            server.close()
            await server.wait_closed()


@pytest.fixture
async def tripwire() -> AsyncIterator[Tripwire]:
    wire = Tripwire()
    yield wire
    await wire.close()


async def _deliveries(pool: Pool, job_id: str) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT COALESCE(e.url, d.url) AS url, d.attempt_count, d.last_error, "
        "d.last_status_code FROM deliveries d LEFT JOIN webhook_endpoints e "
        "ON e.id = d.endpoint_id WHERE d.job_id = $1",
        job_uuid(job_id),
    )
    return [dict(row) for row in rows]


async def _attempted(pool: Pool, job_id: str, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 15
    while True:
        rows = await _deliveries(pool, job_id)
        if len(rows) == count and all(
            r["last_error"] is not None or r["last_status_code"] is not None for r in rows
        ):
            return rows
        assert time.monotonic() < deadline, rows
        await asyncio.sleep(0.05)


async def test_the_connect_time_guard_sends_nothing_to_any_loopback_form(
    make_stack: StackFactory, tripwire: Tripwire
) -> None:
    port4 = await tripwire.listen("127.0.0.1")
    port6 = await tripwire.listen("::1")
    targets = [
        f"http://127.0.0.1:{port4}/a",
        f"http://localhost:{port4}/b",
        f"http://[::1]:{port6}/c",
        f"http://[::ffff:127.0.0.1]:{port4}/d",
        f"http://2130706433:{port4}/e",
        f"http://0x7f.1:{port4}/f",
    ]
    async with make_stack(allow_private_webhook_urls=False) as stack:
        # Registered while their host was public; then the database says loopback (DNS
        # rebinding, or a row written before the guard existed).
        for n, target in enumerate(targets):
            created = await stack.api.post(
                "/v1/webhook-endpoints", json={"url": f"https://93.184.215.14/{n}"}
            )
            assert created.status_code == 201, created.text
            await stack.pool.execute(
                "UPDATE webhook_endpoints SET url = $2 WHERE url = $1",
                f"https://93.184.215.14/{n}",
                target,
            )
        # A job's own callback_url that intake would refuse now, taken by a replica that
        # allows private URLs (or before the rule existed), meets the guard when it is dialled.
        callback = f"http://2130706433:{port4}/callback"
        request = JobCreate.model_validate(
            {"input": {"prompt": "p", "resolution": "1K"}, "callback_url": callback}
        )
        created_job = await jobs_service.create_job(
            stack.pool, stack.client_id, request, None, allow_private_callback=True
        )
        job_id = job_public_id(created_job.job["id"])
        await stack.wait_for(job_id)
        rows = await _attempted(stack.pool, job_id, len(targets) * 1 + 1)
    assert {r["url"] for r in rows} == {*targets, callback}
    for row in rows:
        assert row["last_status_code"] is None, row
        # A non-canonical numeric host never gets as far as the guard: the URL parser refuses.
        assert row["last_error"].startswith(("refused_address", "invalid_url")), row
    assert tripwire.connections == 0


async def test_redirects_to_another_loopback_address_are_not_followed(
    make_stack: StackFactory, tripwire: Tripwire
) -> None:
    elsewhere = await tripwire.listen("127.0.0.2")
    elsewhere6 = await tripwire.listen("::1")
    inbox = Receiver()
    inbox.script("/moved", then=Answer(307, headers={"Location": f"http://127.0.0.2:{elsewhere}/"}))
    inbox.script("/gone", then=Answer(302, headers={"Location": f"http://[::1]:{elsewhere6}/"}))
    with LiveServer(inbox.app) as receiver:
        # The guard is off (the receiver itself is on loopback): only "never follow" protects.
        async with make_stack(allow_private_webhook_urls=True) as stack:
            for path in ("/moved", "/gone"):
                created = await stack.api.post(
                    "/v1/webhook-endpoints", json={"url": f"{receiver.url}{path}"}
                )
                assert created.status_code == 201, created.text
            job_id = await stack.create_job()
            await stack.wait_for(job_id)
            rows = await _attempted(stack.pool, job_id, 2)
    assert sorted(r["last_status_code"] for r in rows) == [302, 307]
    assert len(inbox.received) == 2
    assert tripwire.connections == 0


# -- hostile bodies: too big, too deep, malformed, unstorable ---------------------------------

DEEP_ARRAY = b"[" * 10_000 + b"]" * 10_000
DEEP_OBJECT = b'{"a":' * 10_000 + b"1" + b"}" * 10_000
HOSTILE_BODIES = {
    "deeply nested array": DEEP_ARRAY,
    "deeply nested object": DEEP_OBJECT,
    "truncated": b'{"input": {"prompt": "a',
    "not UTF-8": b'{"input": {"prompt": "\xff\xfe"}}',
    "a top-level array": b'[{"input": {"prompt": "a"}}]',
    "a bare string": b'"hello"',
    "NaN": b'{"input": {"prompt": "a", "seed": NaN}}',
    "a huge number": b'{"input": {"prompt": "a", "seed": 1' + b"0" * 5000 + b"}}",
    "duplicate keys": b'{"input": {"prompt": "a"}, "input": 3}',
    # Above every route's bound, job creation's (which takes file inputs) included.
    "oversized": b'{"input": {"prompt": "' + b"a" * Settings().max_job_body_bytes + b'"}}',
    "empty": b"",
}


async def test_hostile_bodies_are_4xx_problems_on_every_route_and_change_nothing(
    app: FastAPI, pool: Pool, tenant: Tenant
) -> None:
    mine = {**await _owned(tenant), "token": "0" * 32}
    before = await _state_of(pool, tenant)
    tried = 0
    for path, item in app.openapi()["paths"].items():
        for method, operation in item.items():
            if "requestBody" not in operation:
                continue
            for name, body in HOSTILE_BODIES.items():
                # No body at all is a valid request where the body is optional.
                if name == "empty" and not operation["requestBody"].get("required", False):
                    continue
                response = await tenant.http.request(
                    method.upper(),
                    path.format(**mine),
                    content=body,
                    headers={"Content-Type": "application/json"},
                )
                where = f"{method.upper()} {path} with {name}"
                assert 400 <= response.status_code < 500, (where, response.text)
                assert response.headers["content-type"] == PROBLEM_JSON, where
                tried += 1
    assert tried >= 40
    assert await _state_of(pool, tenant) == before


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/jobs", {"input": {"prompt": "a\u0000b"}}),
        ("/v1/jobs", {"input": {"prompt": "a"}, "metadata": {"k": "v\u0000"}}),
        ("/v1/jobs", {"input": {"prompt": "a"}, "metadata": {"k\u0000": "v"}}),
        ("/v1/webhook-endpoints", {"url": "https://93.184.215.14/h", "description": "\u0000"}),
    ],
)
async def test_text_postgres_cannot_store_is_a_422_not_a_500(
    tenant: Tenant, pool: Pool, path: str, body: dict[str, Any]
) -> None:
    before = await _state_of(pool, tenant)
    assert_problem(await tenant.http.post(path, json=body), 422)
    assert await _state_of(pool, tenant) == before


async def test_a_nul_in_a_query_is_a_422(tenant: Tenant) -> None:
    assert_problem(await tenant.http.get("/v1/jobs", params={"model": "a\u0000"}), 422)


# -- the nits schemathesis found ----------------------------------------------------------------


async def test_a_405_lists_every_method_of_the_path(tenant: Tenant) -> None:
    response = await tenant.http.put("/v1/webhook-endpoints/ep_" + "0" * 32)
    assert_problem(response, 405, "method-not-allowed")
    assert response.headers["allow"] == "DELETE, GET, PATCH"
    response = await tenant.http.delete("/v1/jobs")
    assert response.headers["allow"] == "GET, POST"


@pytest.mark.parametrize("value", ["0.5", "1700000000", "1e9", "2025-01-31", "yesterday"])
async def test_recover_since_takes_rfc_3339_only(tenant: Tenant, value: str) -> None:
    endpoint = await tenant.http.post(
        "/v1/webhook-endpoints", json={"url": "https://93.184.215.14/hook"}
    )
    url = f"/v1/webhook-endpoints/{endpoint.json()['id']}/recover"
    assert_problem(await tenant.http.post(url, json={"since": value}), 422)
    if value.replace(".", "").replace("e", "").isdigit():
        assert_problem(await tenant.http.post(url, json={"since": float(value)}), 422)
    ok = await tenant.http.post(url, json={"since": "2025-01-31T12:00:00+01:00"})
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize("name", ["created_before", "created_after"])
async def test_list_filters_take_rfc_3339_only(tenant: Tenant, name: str) -> None:
    assert_problem(await tenant.http.get("/v1/jobs", params={name: "0.5"}), 422)


# -- secrets: never in an answer that is not meant to show them, never in a log line ----------


async def test_no_secret_in_any_answer_or_log_line(fresh_database_url: str, tmp_path: Path) -> None:
    fal_key = "fal-key-security-4b1d2e9f"
    port = free_port()
    pool = await create_pool(fresh_database_url, min_size=1, max_size=1)
    try:
        _, key = await auth_service.create_client(pool, "secrets")
        _, revoked = await auth_service.create_client(pool, "revoked")
        await auth_service.revoke_key(pool, revoked)
        # What the service hands fal as the job's callback URL: its token is a secret too.
        callback_urls = await load_callback_urls(pool, f"http://127.0.0.1:{port}")
    finally:
        await pool.close()
    serve = ServeProcess(
        serve_environment(
            database_url=fresh_database_url,
            fal_key=fal_key,
            fal_queue_url="http://127.0.0.1:9",
            fal_jwks_url="http://127.0.0.1:9/jwks",
            public_base_url=f"http://127.0.0.1:{port}",
            log_format="json",
            log_level="DEBUG",
        ),
        port,
        tmp_path,
    )
    shown: list[str] = []  # secrets, each shown once by the answer that made it
    answers: list[httpx.Response] = []
    try:
        serve.start()
        await serve.ready()
        auth = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(base_url=serve.url, headers=auth, timeout=10) as api:
            created = await api.post(
                "/v1/webhook-endpoints", json={"url": "https://93.184.215.14/hook"}
            )
            endpoint_id = created.json()["id"]
            shown.append(created.json()["secret"])
            rotated = await api.post(f"/v1/webhook-endpoints/{endpoint_id}/rotate-secret")
            shown.append(rotated.json()["secret"])
            shown.append((await api.get("/v1/webhook-secret")).json()["secret"])
            job = await api.post("/v1/jobs", json={"input": {"prompt": "p"}})
            genuine_callback = callback_urls.for_job(job.json()["id"])
            assert genuine_callback is not None
            token = genuine_callback.rsplit("/", 1)[1]
            answers += [
                # At the genuine URL, its signature forged: refused, and logged (the path too).
                await api.post(
                    genuine_callback,
                    content=b"{}",
                    headers={"X-Fal-Webhook-Signature": "00" * 64},
                ),
                await api.get(f"/v1/webhook-endpoints/{endpoint_id}"),
                await api.get("/v1/webhook-endpoints"),
                await api.get(f"/v1/webhook-endpoints/{endpoint_id}/deliveries"),
                await api.get(f"/v1/jobs/{job.json()['id']}"),
                await api.get("/v1/jobs"),
                await api.post(f"/v1/webhook-endpoints/{endpoint_id}/test"),
                # Secrets where they do not belong: in a query, a bad key, a forged callback.
                await api.get("/v1/jobs", params={"cursor": shown[0], "model": fal_key}),
                await api.get("/v1/jobs", headers={"Authorization": f"Bearer {revoked}"}),
                await api.get("/v1/jobs", headers={"Authorization": f"Bearer {key}x"}),
                await api.post(
                    f"/callbacks/fal/{job.json()['id']}/{key}",
                    content=b"{}",
                    headers={"X-Fal-Webhook-Signature": fal_key},
                ),
                await api.post(
                    "/v1/jobs", json={"input": {"prompt": "p", "extra": key}, "metadata": 3}
                ),
                await api.get("/metrics"),
            ]
    finally:
        serve.stop()
    secrets = [key, revoked, fal_key, *shown]
    assert answers[0].status_code == 401, answers[0].text
    for response in answers:
        for value in secrets:
            assert value not in response.text, (response.request.url, response.text[:200])
        assert not SECRET_SHAPES.search(response.text), response.text[:200]
    lines = [line for log in serve.logs for line in log.read_text().splitlines()]
    assert len(lines) > 10
    # The refused callback was logged, with the job's id but not the token.
    assert any(f"/callbacks/fal/{job.json()['id']}/" in line for line in lines)
    for line in lines:
        assert line.startswith("{"), line
        orjson.loads(line)  # one JSON object per line
        for value in [*secrets, token]:
            assert value not in line, line
        assert not SECRET_SHAPES.search(line), line


SECRET_SHAPES = re.compile(r"frk_[A-Za-z0-9_\-]{6,}|whsec_[A-Za-z0-9+/=]{6,}")


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/jobs", b'{"input": {"prompt": "a\\ud800b"}}'),
        ("/v1/jobs", b'{"input": {"prompt": "a"}, "metadata": {"k": "\\udfff"}}'),
        ("/v1/webhook-endpoints", b'{"url": "https://93.184.215.14/h", "description": "\\ud800"}'),
    ],
)
async def test_a_lone_surrogate_is_a_422_not_a_500(
    tenant: Tenant, pool: Pool, path: str, body: bytes
) -> None:
    # Valid JSON (an escaped UTF-16 half), but no Unicode text: nothing can store or send it.
    before = await _state_of(pool, tenant)
    response = await tenant.http.post(
        path, content=body, headers={"Content-Type": "application/json"}
    )
    assert_problem(response, 422)
    assert await _state_of(pool, tenant) == before
