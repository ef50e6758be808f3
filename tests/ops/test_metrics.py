from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client import generate_latest
from pydantic import SecretStr

from app.auth import service as auth_service
from app.db.pool import Pool
from app.jobs import service as jobs_service
from app.jobs.schemas import JobCreate
from app.main import create_app
from app.metrics import FAL_CALLS, QueueGauges, child, render
from app.settings import Settings
from app.worker.probes import ProbeServer
from tests.e2e.test_deliveries import register
from tests.receivers import Receiver
from tests.servers import LiveServer, free_port
from tests.stack import StackFactory


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.fullmatch(rf"{re.escape(name)}(?:\{{(.*)\}})? (\S+)", line)
        if match and ",".join(sorted((match.group(1) or "").split(","))) == wanted:
            return float(match.group(2))
    return 0.0


def test_a_cached_child_is_the_metric_s_own() -> None:
    outcome = f"Test{uuid.uuid4().hex[:8]}"
    first = child(FAL_CALLS, "submit", outcome)
    assert child(FAL_CALLS, "submit", outcome) is first
    assert first is FAL_CALLS.labels("submit", outcome)
    first.inc()
    child(FAL_CALLS, "submit", outcome).inc()
    text = generate_latest().decode()
    assert sample(text, "falrelay_fal_calls_total", operation="submit", outcome=outcome) == 2


async def test_metrics_move_with_a_job(make_stack: StackFactory) -> None:
    inbox = Receiver()
    with LiveServer(inbox.app) as receiver:
        async with make_stack() as stack:
            await register(stack, f"{receiver.url}/m")
            before = (await stack.api.get("/metrics")).text
            job = await stack.wait_for(await stack.create_job())
            assert job["status"] == "succeeded"
            after = ""
            for _ in range(100):
                after = (await stack.api.get("/metrics")).text
                if sample(after, "falrelay_deliveries_total", outcome="succeeded") > sample(
                    before, "falrelay_deliveries_total", outcome="succeeded"
                ):
                    break

    def moved(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert moved("falrelay_http_requests_total", method="POST", route="/v1/jobs", status="201") == 1
    assert moved("falrelay_job_transitions_total", status="submitted") == 1
    assert moved("falrelay_job_transitions_total", status="succeeded") == 1
    assert moved("falrelay_fal_calls_total", operation="submit", outcome="ok") == 1
    assert moved("falrelay_fal_callbacks_total", outcome="applied") == 1
    assert moved("falrelay_deliveries_total", outcome="succeeded") == 1
    assert moved("falrelay_fal_call_duration_seconds_count", operation="submit") == 1
    # Routes are labelled by template, never by raw path (no label per job id).
    assert 'route="/v1/jobs/{job_id}"' in after
    assert f'route="/v1/jobs/{job["id"]}"' not in after
    for queue in ("submission", "reconciliation", "delivery"):
        assert f'falrelay_queue_depth{{queue="{queue}"}}' in after
        assert f'falrelay_queue_oldest_due_seconds{{queue="{queue}"}}' in after
    assert "falrelay_webhook_endpoints_disabled 0.0" in after


# -- /metrics behind a bearer token; queue gauges read at most once per interval -----------

METRICS_TOKEN = "metrics-token-5f1c2a9e"


@pytest.fixture
async def guarded(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings.model_copy(update={"metrics_token": SecretStr(METRICS_TOKEN)}))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://falrelay.test"
        ) as http,
    ):
        yield http


async def test_metrics_ask_for_the_token_when_one_is_set(guarded: httpx.AsyncClient) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {METRICS_TOKEN}"},
        {"Authorization": f"Bearer {METRICS_TOKEN}x"},
        {"Authorization": "Bearer \u00fc".encode("latin-1")},  # not ASCII: still no crash
    ):
        refused = await guarded.get("/metrics", headers=headers)
        assert refused.status_code == 401, headers
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.headers["www-authenticate"] == "Bearer"
        assert "falrelay_" not in refused.text
        assert METRICS_TOKEN not in refused.text
    allowed = await guarded.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert allowed.status_code == 200
    assert "falrelay_http_requests_total" in allowed.text
    # The probes stay open: a kubelet carries no token.
    assert (await guarded.get("/healthz")).status_code == 200


async def _queue_job(pool: Pool, client_id: uuid.UUID) -> None:
    request = JobCreate.model_validate({"input": {"prompt": "p"}})
    await jobs_service.create_job(pool, client_id, request, None)


async def test_queue_gauges_are_read_at_most_once_per_interval(pool: Pool) -> None:
    client_id, _ = await auth_service.create_client(pool, "metrics-gauges")
    queues = QueueGauges()
    assert await queues.refresh(pool, max_age=15, now=1000.0)
    first = (await render(pool, max_age=15, queues=queues, now=1000.0))[0].decode()
    depth = sample(first, "falrelay_queue_depth", queue="submission")

    await _queue_job(pool, client_id)
    # Scrapes within the interval serve what was read, without asking Postgres.
    assert not await queues.refresh(pool, max_age=15, now=1014.9)
    cached = (await render(pool, max_age=15, queues=queues, now=1014.9))[0].decode()
    assert sample(cached, "falrelay_queue_depth", queue="submission") == depth
    # Once the interval has passed, the next scrape reads again.
    fresh = (await render(pool, max_age=15, queues=queues, now=1015.0))[0].decode()
    assert sample(fresh, "falrelay_queue_depth", queue="submission") == depth + 1


async def test_scrapes_of_the_api_do_not_each_count_the_queues(
    settings: Settings, pool: Pool
) -> None:
    client_id, _ = await auth_service.create_client(pool, "metrics-scrapes")
    app = create_app(settings.model_copy(update={"metrics_queue_refresh_seconds": 3600.0}))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://falrelay.test"
        ) as http,
    ):
        before = (await http.get("/metrics")).text
        await _queue_job(pool, client_id)
        for _ in range(3):
            after = (await http.get("/metrics")).text
            assert sample(after, "falrelay_queue_depth", queue="submission") == sample(
                before, "falrelay_queue_depth", queue="submission"
            )


async def test_a_workers_metrics_port_asks_for_the_token_too(pool: Pool) -> None:
    port = free_port()
    probes = ProbeServer(pool, host="127.0.0.1", port=port, metrics_token=METRICS_TOKEN)
    await probes.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            refused = await http.get("/metrics")
            assert refused.status_code == 401
            assert refused.headers["www-authenticate"] == "Bearer"
            assert "falrelay_" not in refused.text
            allowed = await http.get(
                "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
            )
            assert allowed.status_code == 200
            assert "falrelay_queue_depth" in allowed.text
            assert (await http.get("/healthz")).status_code == 200
    finally:
        await probes.aclose()
