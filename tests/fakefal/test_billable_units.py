"""`X-Fal-Billable-Units`: a platform response header (protocol notes 1.8), sent with the
model's result (1.6: "the status code, headers, and body that the model returned"). Not on
errors ("no charge for server errors"), not on status answers."""

from __future__ import annotations

import httpx

from app.fal.client import FalClient
from tests.fakefal.conftest import StartFake
from tests.fakefal.support import RunningFake

PROMPT = {"prompt": "a red fox in snow", "resolution": "1K"}


async def submitted(http: httpx.AsyncClient, fake: RunningFake) -> dict[str, str]:
    answer = await http.post(fake.submit_url(), json=PROMPT)
    assert answer.status_code == 200, answer.text
    body: dict[str, str] = answer.json()
    assert "x-fal-billable-units" not in answer.headers
    return body


async def test_a_result_says_what_was_billed(fake: RunningFake, http: httpx.AsyncClient) -> None:
    request = await submitted(http, fake)
    status = await http.get(request["status_url"])
    assert "x-fal-billable-units" not in status.headers
    result = await http.get(request["response_url"])
    assert result.status_code == 200
    assert result.headers["x-fal-billable-units"] == "1"  # one image


async def test_a_failed_request_bills_nothing(
    start_fake: StartFake, http: httpx.AsyncClient
) -> None:
    fake = start_fake(error_rate=1.0, error_types=["runner_disconnected"])
    result = await http.get((await submitted(http, fake))["response_url"])
    assert result.status_code == 503
    assert "x-fal-billable-units" not in result.headers


async def test_the_knob_and_our_client_read_it(
    start_fake: StartFake, http: httpx.AsyncClient
) -> None:
    fake = start_fake(billable_units="2.5")
    request = await submitted(http, fake)
    assert (await http.get(request["response_url"])).headers["x-fal-billable-units"] == "2.5"
    async with httpx.AsyncClient() as raw:
        client = FalClient(raw, queue_url=fake.url, key="test-key")
        result = await client.result(request["response_url"])
    assert str(result.billable_units) == "2.5"
    assert result.body["images"]
