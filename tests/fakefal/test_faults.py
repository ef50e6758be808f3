"""Fault knobs on submit and on completion, and their reproducibility under random_seed."""

from __future__ import annotations

from typing import Any

import fal_client
import httpx

from app.fakefal.failures import INFRA_ERRORS
from tests.fakefal.conftest import StartFake
from tests.fakefal.support import IMAGINEART_APP, RunningFake, wait_completed, wait_for

PROMPT = {"prompt": "a cat", "resolution": "1K"}


async def test_submit_429(start_fake: StartFake, http: httpx.AsyncClient) -> None:
    fake = start_fake(submit_429_rate=1.0)
    response = await http.post(fake.submit_url(), json=PROMPT)
    assert response.status_code == 429
    assert response.json()["detail"]
    assert (fake.fake.stats.submit_429, fake.fake.stats.submitted) == (1, 0)
    assert len(fake.fake.requests) == 0


async def test_submit_5xx_looks_like_an_ingress_error(
    start_fake: StartFake, http: httpx.AsyncClient
) -> None:
    fake = start_fake(submit_5xx_rate=1.0)
    codes = set()
    for _ in range(8):
        response = await http.post(fake.submit_url(), json=PROMPT)
        codes.add(response.status_code)
        assert "x-fal-request-id" not in response.headers
        assert "nginx" in response.text
        assert response.headers["content-type"].startswith("text/html")
    assert codes <= {502, 503}
    assert fake.fake.stats.submit_5xx == 8
    assert len(fake.fake.requests) == 0


async def test_max_queue_length(start_fake: StartFake, http: httpx.AsyncClient) -> None:
    fake = start_fake(queue_latency=5.0, models=["someone/else"])
    limit = {"fal_max_queue_length": "1"}
    assert (await http.post(fake.submit_url(), json=PROMPT, params=limit)).status_code == 200
    assert (await http.post(fake.submit_url(), json=PROMPT, params=limit)).status_code == 200
    refused = await http.post(fake.submit_url(), json=PROMPT, params=limit)
    assert refused.status_code == 429
    # Without the parameter nothing is refused; other apps have queues of their own.
    assert (await http.post(fake.submit_url(), json=PROMPT)).status_code == 200
    other = await http.post(f"{fake.url}/someone/else", json={}, params={"fal_max_queue_length": 0})
    assert other.status_code == 200
    assert fake.fake.stats.submit_429 == 1


async def test_error_rate_infra_errors(start_fake: StartFake, http: httpx.AsyncClient) -> None:
    fake = start_fake(error_rate=1.0)
    for error_type, (code, detail) in INFRA_ERRORS.items():
        patch = await http.patch(f"{fake.url}/_fake/config", json={"error_types": [error_type]})
        assert patch.status_code == 200
        submitted = (await http.post(fake.submit_url(), json=PROMPT)).json()
        status = await wait_completed(http, submitted["status_url"])
        assert (status["error_type"], status["error"]) == (error_type, detail)
        result = await http.get(submitted["response_url"])
        assert result.status_code == code
        assert result.json() == {"detail": detail, "error_type": error_type}
        assert result.headers["x-fal-error-type"] == error_type
        assert result.headers["x-fal-request-id"] == submitted["request_id"]
    await wait_for(lambda: fake.fake.stats.completed_error == len(INFRA_ERRORS))


async def test_error_rate_validation(start_fake: StartFake, http: httpx.AsyncClient) -> None:
    fake = start_fake(error_rate=1.0, error_types=["validation"])
    submitted = (await http.post(fake.submit_url(), json=PROMPT)).json()
    result = await http.get(submitted["response_url"])
    assert result.status_code == 422
    [detail] = result.json()["detail"]
    assert set(detail) >= {"loc", "msg", "type"}
    assert "x-fal-error-type" not in result.headers
    await wait_for(lambda: fake.fake.stats.completed_error == 1)


async def test_a_5xx_result_is_never_taken_for_an_ingress_error(
    start_fake: StartFake, http: httpx.AsyncClient
) -> None:
    fake = start_fake(error_rate=1.0, error_types=["runner_disconnected"])
    submitted = (await http.post(fake.submit_url(), json=PROMPT)).json()
    result = await http.get(submitted["response_url"])
    assert result.status_code == 503
    assert not fal_client.client._is_ingress_error(result)


async def test_error_rate_is_a_rate(start_fake: StartFake, http: httpx.AsyncClient) -> None:
    fake = start_fake(error_rate=0.5, random_seed=3)
    for _ in range(40):
        await http.post(fake.submit_url(), json=PROMPT)
    failed = sum(r.summary(0)["failed"] for r in fake.fake.requests)
    assert 8 <= failed <= 32


async def test_random_seed_replays_the_same_faults(
    start_fake: StartFake, http: httpx.AsyncClient
) -> None:
    async def run(fake: RunningFake) -> list[Any]:
        seen: list[Any] = []
        for _ in range(15):
            response = await http.post(fake.submit_url(), json={"prompt": "p"})
            if response.status_code != 200:
                seen.append(response.status_code)
                continue
            result = await http.get(response.json()["response_url"])
            seen.append((result.status_code, result.json().get("seed")))
        return seen

    knobs: dict[str, Any] = {
        "submit_429_rate": 0.2,
        "submit_5xx_rate": 0.2,
        "error_rate": 0.3,
        "random_seed": 99,
    }
    first = await run(start_fake(**knobs))
    assert first == await run(start_fake(**knobs))
    assert len(set(map(str, first))) > 3


async def test_status_answers_202_for_a_failed_request_only_until_completion(
    start_fake: StartFake, http: httpx.AsyncClient
) -> None:
    fake = start_fake(run_latency=0.2, error_rate=1.0, error_types=["internal_error"])
    submitted = (await http.post(fake.submit_url(), json=PROMPT)).json()
    running = await http.get(submitted["status_url"])
    assert (running.status_code, running.json()["status"]) == (202, "IN_PROGRESS")
    assert "error" not in running.json()
    assert submitted["status_url"].startswith(f"{fake.url}/{IMAGINEART_APP}/")
    done = await wait_completed(http, submitted["status_url"])
    assert done["error_type"] == "internal_error"
