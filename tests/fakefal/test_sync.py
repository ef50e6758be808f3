"""fal.run's host under /run/ over plain HTTP: runs and streams."""

from __future__ import annotations

import json
import time

import httpx

from tests.fakefal.conftest import StartFake
from tests.fakefal.support import IMAGINEART, RunningFake

PROMPT = {"prompt": "a red fox in snow", "aspect_ratio": "1:1", "resolution": "1K", "seed": 5}


async def test_run_answers_what_the_result_url_would(
    start_fake: StartFake, http: httpx.AsyncClient
) -> None:
    fake = start_fake(queue_latency=0.1, run_latency=0.2)
    started = time.monotonic()
    run = await http.post(f"{fake.url}/run/{IMAGINEART}", json=PROMPT)
    assert time.monotonic() - started >= 0.3
    assert run.status_code == 200
    submitted = (await http.post(fake.submit_url(), json=PROMPT)).json()
    await http.get(submitted["status_url"])  # the queue's own request, for comparison
    [run_request, _] = list(fake.fake.requests)
    assert run.headers["x-fal-request-id"] == run_request.id
    assert run.headers["x-fal-billable-units"] == "1"
    assert run.json()["images"][0]["width"] == 1024
    # A run is not in the queue API.
    base = f"{fake.url}/imagineart/imagineart-2.0-preview/requests/{run_request.id}"
    assert (await http.get(f"{base}/status")).status_code == 404
    assert (await http.get(base)).status_code == 404


async def test_run_errors(start_fake: StartFake, http: httpx.AsyncClient) -> None:
    fake = start_fake(error_rate=1.0, error_types=["runner_disconnected"])
    failed = await http.post(f"{fake.url}/run/{IMAGINEART}", json=PROMPT)
    assert failed.status_code == 503
    assert failed.json()["error_type"] == "runner_disconnected"
    assert failed.headers["x-fal-error-type"] == "runner_disconnected"
    assert failed.headers["x-fal-request-id"]  # so fal_client does not take it for nginx's
    invalid = await http.post(
        f"{fake.url}/run/{IMAGINEART}", content=b"{", headers={"Content-Type": "application/json"}
    )
    assert invalid.status_code == 422
    async with httpx.AsyncClient() as anonymous:
        refused = await anonymous.post(f"{fake.url}/run/{IMAGINEART}", json=PROMPT)
    assert refused.status_code == 401


async def test_stream_is_server_sent_events(start_fake: StartFake, http: httpx.AsyncClient) -> None:
    fake = start_fake(run_latency=0.2)
    async with http.stream("POST", f"{fake.url}/run/{IMAGINEART}/stream", json=PROMPT) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        assert stream.headers["x-fal-request-id"]
        text = (await stream.aread()).decode()
    events = [json.loads(block.removeprefix("data: ")) for block in text.split("\n\n") if block]
    assert events[:2] == [{"partial": True, "progress": 0.0}, {"partial": True, "progress": 0.5}]
    assert events[2]["images"][0]["height"] == 1024
    assert len(events) == 3


async def test_a_failing_stream_answers_its_error(
    fake: RunningFake, http: httpx.AsyncClient
) -> None:
    response = await http.post(f"{fake.url}/run/{IMAGINEART}/stream", json={"prompt": ""})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/json"
    assert response.json()["detail"][0]["loc"] == ["body", "prompt"]
