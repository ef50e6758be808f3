"""The endpoints API on a real Postgres (no worker runs here: nothing is delivered)."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from app.db.pool import Pool
from tests.support import Tenant, assert_problem

PUBLIC_URL = "https://93.184.215.14/hooks/falrelay"  # a public literal: no DNS lookup


def _uuid(public_id: str) -> uuid.UUID:
    return uuid.UUID(hex=public_id.split("_", 1)[1])


async def _create(tenant: Tenant, **body: object) -> dict[str, object]:
    response = await tenant.http.post("/v1/webhook-endpoints", json={"url": PUBLIC_URL, **body})
    assert response.status_code == 201, response.text
    created: dict[str, object] = response.json()
    return created


async def test_create_returns_a_secret_once_and_stores_the_endpoint(
    tenant: Tenant, pool: Pool
) -> None:
    response = await tenant.http.post(
        "/v1/webhook-endpoints", json={"url": PUBLIC_URL, "description": "billing"}
    )
    assert response.status_code == 201
    endpoint = response.json()
    assert response.headers["location"] == f"/v1/webhook-endpoints/{endpoint['id']}"
    assert endpoint["id"].startswith("ep_")
    assert endpoint["event_types"] == ["job.succeeded", "job.failed", "job.canceled"]
    assert endpoint["enabled"] is True
    secret = endpoint["secret"]
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 24

    row = await pool.fetchrow(
        "SELECT client_id, url, secrets, event_types FROM webhook_endpoints WHERE id = $1",
        _uuid(endpoint["id"]),
    )
    assert row is not None
    assert row["client_id"] == tenant.client_id
    assert row["secrets"] == [{"secret": secret, "expires_at": None}]

    fetched = (await tenant.http.get(f"/v1/webhook-endpoints/{endpoint['id']}")).json()
    assert "secret" not in fetched
    assert fetched == {k: v for k, v in endpoint.items() if k != "secret"}


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",  # loopback
        "http://127.1.2.3/hook",
        "http://localhost:8080/hook",  # a name that resolves to loopback
        "http://10.0.0.5/hook",  # RFC 1918
        "http://172.16.4.4/hook",
        "http://192.168.1.10/hook",
        "http://169.254.169.254/latest/meta-data/",  # link-local: cloud metadata
        "http://100.64.0.1/hook",  # CGNAT
        "http://100.100.100.200/hook",  # Alibaba's metadata address (CGNAT)
        "http://0.0.0.0/hook",  # unspecified
        "http://224.0.0.1/hook",  # multicast
        "http://240.0.0.1/hook",  # reserved
        "http://[::1]/hook",
        "http://[::]/hook",
        "http://[fe80::1]/hook",
        "http://[fd00:ec2::254]/hook",  # unique local: AWS's IPv6 metadata address
        "http://[::ffff:127.0.0.1]/hook",  # IPv4-mapped
        "http://[64:ff9b::a00:1]/hook",  # NAT64 of 10.0.0.1
        "http://[2002:a00:1::1]/hook",  # 6to4 of 10.0.0.1
        "http://[ff02::1]/hook",  # multicast
        "http://[::127.0.0.1]/hook",  # IPv4-compatible: is_global, yet loopback to some stacks
        "http://[::ffff:0:10.0.0.1]/hook",  # SIIT
        "http://[fec0::1]/hook",  # site-local
        "http://LOCALHOST.:9/x",  # localhost, fully qualified: refused before any lookup
    ],
)
async def test_non_public_targets_are_refused_at_creation(
    tenant: Tenant, pool: Pool, url: str
) -> None:
    response = await tenant.http.post("/v1/webhook-endpoints", json={"url": url})
    problem = assert_problem(response, 422, "validation")
    assert problem["errors"][0]["loc"] == ["body", "url"]
    count = await pool.fetchval(
        "SELECT count(*) FROM webhook_endpoints WHERE client_id = $1", tenant.client_id
    )
    assert count == 0


async def test_non_public_targets_are_refused_on_update(tenant: Tenant) -> None:
    endpoint = await _create(tenant)
    response = await tenant.http.patch(
        f"/v1/webhook-endpoints/{endpoint['id']}", json={"url": "http://192.168.0.1/x"}
    )
    assert_problem(response, 422, "validation")
    fetched = (await tenant.http.get(f"/v1/webhook-endpoints/{endpoint['id']}")).json()
    assert fetched["url"] == PUBLIC_URL


@pytest.mark.parametrize(
    "callback_url",
    [
        "http://127.0.0.1/cb",
        "http://localhost/cb",
        "http://[::1]/cb",
        "http://10.1.1.1/cb",
        # The same rule as endpoints' (one check for both), not a looser copy of it.
        "http://LOCALHOST.:9/x",
        "http://127.0.0.1./cb",
        "http://2130706433/cb",
        "http://0x7f.1/cb",
        "http://[::127.0.0.1]/cb",
        "http://[::ffff:0:127.0.0.1]/cb",
        "http://[fec0::1]/cb",
    ],
)
async def test_job_callback_urls_at_private_literals_are_refused(
    tenant: Tenant, pool: Pool, callback_url: str
) -> None:
    response = await tenant.http.post(
        "/v1/jobs", json={"input": {"prompt": "p"}, "callback_url": callback_url}
    )
    problem = assert_problem(response, 422, "validation")
    assert problem["errors"][0]["loc"] == ["body", "callback_url"]
    assert (
        await pool.fetchval("SELECT count(*) FROM jobs WHERE client_id = $1", tenant.client_id) == 0
    )


@pytest.mark.parametrize(
    "body",
    [
        {"url": PUBLIC_URL, "event_types": []},
        {"url": PUBLIC_URL, "event_types": ["job.exploded"]},
        {"url": PUBLIC_URL, "event_types": ["job.failed", "job.failed"]},
        {"url": PUBLIC_URL, "event_types": "job.failed"},
        {"url": "ftp://example.com/x"},
        {"url": PUBLIC_URL, "secret": "whsec_mine"},
        {"url": PUBLIC_URL, "description": "x" * 501},
        {},
    ],
)
async def test_invalid_endpoints_are_refused(tenant: Tenant, pool: Pool, body: object) -> None:
    assert_problem(await tenant.http.post("/v1/webhook-endpoints", json=body), 422)
    count = await pool.fetchval(
        "SELECT count(*) FROM webhook_endpoints WHERE client_id = $1", tenant.client_id
    )
    assert count == 0


async def test_update_changes_only_what_is_given(tenant: Tenant) -> None:
    endpoint = await _create(tenant, description="first", event_types=["job.failed"])
    url = f"/v1/webhook-endpoints/{endpoint['id']}"

    changed = (await tenant.http.patch(url, json={"event_types": ["job.succeeded"]})).json()
    assert changed["event_types"] == ["job.succeeded"]
    assert changed["description"] == "first"

    cleared = (await tenant.http.patch(url, json={"description": None})).json()
    assert cleared["description"] is None
    assert cleared["event_types"] == ["job.succeeded"]

    disabled = (await tenant.http.patch(url, json={"enabled": False})).json()
    assert (disabled["enabled"], disabled["disabled_reason"]) == (False, "disabled by the client")
    enabled = (await tenant.http.patch(url, json={"enabled": True})).json()
    assert (enabled["enabled"], enabled["disabled_reason"]) == (True, None)


async def test_list_pages_newest_first(tenant: Tenant) -> None:
    created = [(await _create(tenant))["id"] for _ in range(3)]
    first = (await tenant.http.get("/v1/webhook-endpoints", params={"limit": 2})).json()
    second = (
        await tenant.http.get(
            "/v1/webhook-endpoints", params={"limit": 2, "cursor": first["next_cursor"]}
        )
    ).json()
    assert [e["id"] for e in first["data"] + second["data"]] == created[::-1]
    assert second["next_cursor"] is None
    assert all("secret" not in e for e in first["data"])


async def test_delete(tenant: Tenant, pool: Pool) -> None:
    endpoint = await _create(tenant)
    url = f"/v1/webhook-endpoints/{endpoint['id']}"
    assert (await tenant.http.delete(url)).status_code == 204
    assert_problem(await tenant.http.get(url), 404)
    assert_problem(await tenant.http.delete(url), 404)
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM webhook_endpoints WHERE id = $1", _uuid(str(endpoint["id"]))
        )
        == 0
    )


async def test_rotation_keeps_the_old_secret_for_the_grace_period(
    tenant: Tenant, pool: Pool
) -> None:
    endpoint = await _create(tenant)
    old = endpoint["secret"]
    before = datetime.now(UTC)
    response = await tenant.http.post(
        f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret",
        json={"grace_period_seconds": 3600},
    )
    assert response.status_code == 200
    new = response.json()["secret"]
    assert new.startswith("whsec_")
    assert new != old

    secrets = await pool.fetchval(
        "SELECT secrets FROM webhook_endpoints WHERE id = $1", _uuid(str(endpoint["id"]))
    )
    assert [s["secret"] for s in secrets] == [old, new]
    expires = datetime.fromisoformat(secrets[0]["expires_at"])
    assert before + timedelta(seconds=3590) < expires < before + timedelta(seconds=3610)
    assert secrets[1]["expires_at"] is None

    # Rotating again with no grace: the first secret (expired or not) is dropped once expired.
    await tenant.http.post(f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret")
    secrets = await pool.fetchval(
        "SELECT secrets FROM webhook_endpoints WHERE id = $1", _uuid(str(endpoint["id"]))
    )
    assert len(secrets) == 3
    assert secrets[2]["expires_at"] is None


async def test_rotation_grace_is_bounded(tenant: Tenant) -> None:
    endpoint = await _create(tenant)
    response = await tenant.http.post(
        f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret",
        json={"grace_period_seconds": 8 * 24 * 3600},
    )
    assert_problem(response, 422)


async def test_the_default_secret_is_made_once(tenant: Tenant, pool: Pool) -> None:
    first = (await tenant.http.get("/v1/webhook-secret")).json()["secret"]
    again = (await tenant.http.get("/v1/webhook-secret")).json()["secret"]
    assert first == again
    assert first.startswith("whsec_")
    stored = await pool.fetchval(
        "SELECT webhook_secret FROM clients WHERE id = $1", tenant.client_id
    )
    assert stored == first


async def test_test_event_queues_a_ping_delivery(tenant: Tenant, pool: Pool) -> None:
    endpoint = await _create(tenant, event_types=["job.failed"])
    response = await tenant.http.post(f"/v1/webhook-endpoints/{endpoint['id']}/test")
    assert response.status_code == 202
    delivery = response.json()
    assert delivery["event_type"] == "ping"
    assert delivery["status"] == "pending"
    assert delivery["endpoint_id"] == endpoint["id"]
    payload = await pool.fetchval(
        "SELECT e.payload FROM deliveries d JOIN events e ON e.id = d.event_id WHERE d.id = $1",
        _uuid(delivery["id"]),
    )
    assert payload["type"] == "ping"
    assert payload["data"]["endpoint_id"] == endpoint["id"]


async def test_another_clients_endpoints_and_deliveries_are_404(
    tenant: Tenant, other_tenant: Tenant, pool: Pool
) -> None:
    endpoint = await _create(tenant)
    delivery = (await tenant.http.post(f"/v1/webhook-endpoints/{endpoint['id']}/test")).json()
    base = f"/v1/webhook-endpoints/{endpoint['id']}"
    http = other_tenant.http
    for response in [
        await http.get(base),
        await http.patch(base, json={"enabled": False}),
        await http.delete(base),
        await http.post(f"{base}/rotate-secret"),
        await http.post(f"{base}/test"),
        await http.get(f"{base}/deliveries"),
        await http.post(f"{base}/recover", json={"since": "2020-01-01T00:00:00Z"}),
        await http.get(f"/v1/deliveries/{delivery['id']}"),
        await http.post(f"/v1/deliveries/{delivery['id']}/retry"),
    ]:
        assert_problem(response, 404, "not-found")
    assert (await http.get("/v1/webhook-endpoints")).json()["data"] == []
    row = await pool.fetchrow(
        "SELECT enabled, secrets FROM webhook_endpoints WHERE id = $1", _uuid(str(endpoint["id"]))
    )
    assert row is not None
    assert row["enabled"] is True
    assert len(row["secrets"]) == 1
    pings = await pool.fetchval(
        "SELECT count(*) FROM deliveries WHERE endpoint_id = $1", _uuid(str(endpoint["id"]))
    )
    assert pings == 1


# -- secrets are bounded: however many rotations, at most three sign -----------------------


async def test_rotations_keep_at_most_three_secrets(tenant: Tenant, pool: Pool) -> None:
    endpoint = await _create(tenant)
    url = f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret"
    issued = [str(endpoint["secret"])]
    for _ in range(10):
        response = await tenant.http.post(url, json={"grace_period_seconds": 3600})
        assert response.status_code == 200, response.text
        issued.append(response.json()["secret"])
    secrets = await pool.fetchval(
        "SELECT secrets FROM webhook_endpoints WHERE id = $1", _uuid(str(endpoint["id"]))
    )
    # The current one and the two newest in their grace period; the oldest grace ones are gone.
    assert [s["secret"] for s in secrets] == issued[-3:]
    assert [s["expires_at"] is None for s in secrets] == [False, False, True]


async def test_a_rotation_with_no_grace_retires_the_current_secret_at_once(
    tenant: Tenant, pool: Pool
) -> None:
    endpoint = await _create(tenant)
    url = f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret"
    first = (await tenant.http.post(url, json={"grace_period_seconds": 3600})).json()["secret"]
    second = (await tenant.http.post(url, json={"grace_period_seconds": 0})).json()["secret"]
    secrets = await pool.fetchval(
        "SELECT secrets FROM webhook_endpoints WHERE id = $1", _uuid(str(endpoint["id"]))
    )
    # The original keeps its hour; `first` is retired (not kept, not signing); `second` signs.
    assert [s["secret"] for s in secrets] == [endpoint["secret"], second]
    assert first not in [s["secret"] for s in secrets]


# -- the client's default secret rotates like an endpoint's ---------------------------------


async def test_the_default_secret_rotates_with_a_grace_period(
    tenant: Tenant, other_tenant: Tenant, pool: Pool
) -> None:
    old = (await tenant.http.get("/v1/webhook-secret")).json()["secret"]
    others = (await other_tenant.http.get("/v1/webhook-secret")).json()["secret"]
    before = datetime.now(UTC)
    response = await tenant.http.post(
        "/v1/webhook-secret/rotate", json={"grace_period_seconds": 3600}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    new = response.json()["secret"]
    assert response.json() == {"secret": new}
    assert new.startswith("whsec_")
    assert new != old
    assert (await tenant.http.get("/v1/webhook-secret")).json()["secret"] == new

    row = await pool.fetchrow(
        "SELECT webhook_secrets, webhook_secret FROM clients WHERE id = $1", tenant.client_id
    )
    assert [s["secret"] for s in row["webhook_secrets"]] == [old, new]
    expires = datetime.fromisoformat(row["webhook_secrets"][0]["expires_at"])
    assert before + timedelta(seconds=3590) < expires < before + timedelta(seconds=3610)
    assert row["webhook_secrets"][1]["expires_at"] is None
    # The single column a previous release reads follows the current secret.
    assert row["webhook_secret"] == new
    # Another client's secret is its own.
    assert (await other_tenant.http.get("/v1/webhook-secret")).json()["secret"] == others


async def test_default_secret_rotations_keep_at_most_three(tenant: Tenant, pool: Pool) -> None:
    issued = [(await tenant.http.get("/v1/webhook-secret")).json()["secret"]]
    for _ in range(6):
        # No body: the default grace period (24 h).
        response = await tenant.http.post("/v1/webhook-secret/rotate")
        assert response.status_code == 200, response.text
        issued.append(response.json()["secret"])
    secrets = await pool.fetchval(
        "SELECT webhook_secrets FROM clients WHERE id = $1", tenant.client_id
    )
    assert [s["secret"] for s in secrets] == issued[-3:]


async def test_default_secret_rotation_grace_is_bounded(tenant: Tenant, pool: Pool) -> None:
    current = (await tenant.http.get("/v1/webhook-secret")).json()["secret"]
    for body in ({"grace_period_seconds": 8 * 24 * 3600}, {"grace_period_seconds": -1}, {"x": 1}):
        assert_problem(await tenant.http.post("/v1/webhook-secret/rotate", json=body), 422)
    assert (await tenant.http.get("/v1/webhook-secret")).json()["secret"] == current
    secrets = await pool.fetchval(
        "SELECT webhook_secrets FROM clients WHERE id = $1", tenant.client_id
    )
    assert [s["secret"] for s in secrets] == [current]


async def test_a_client_from_before_the_secret_list_keeps_its_secret(
    tenant: Tenant, pool: Pool
) -> None:
    # A client written by the previous release: only the single column.
    await pool.execute(
        "UPDATE clients SET webhook_secrets = '[]', webhook_secret = 'whsec_dGhlIG9sZCBvbmU=' "
        "WHERE id = $1",
        tenant.client_id,
    )
    assert (await tenant.http.get("/v1/webhook-secret")).json()[
        "secret"
    ] == "whsec_dGhlIG9sZCBvbmU="
    new = (await tenant.http.post("/v1/webhook-secret/rotate")).json()["secret"]
    secrets = await pool.fetchval(
        "SELECT webhook_secrets FROM clients WHERE id = $1", tenant.client_id
    )
    assert [s["secret"] for s in secrets] == ["whsec_dGhlIG9sZCBvbmU=", new]
