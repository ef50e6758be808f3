"""X-Fal-Object-Lifecycle-Preference: the files of a request that asks for it expire."""

from __future__ import annotations

import asyncio
import json
import time

import httpx

from tests.fakefal.support import RunningFake


async def _file_url(fake: RunningFake, http: httpx.AsyncClient, headers: dict[str, str]) -> str:
    submitted = await http.post(fake.submit_url(), json={"prompt": "a fox"}, headers=headers)
    assert submitted.status_code == 200, submitted.text
    result_url = submitted.json()["response_url"]
    deadline = time.monotonic() + 30
    while (result := await http.get(result_url)).status_code != 200:
        assert time.monotonic() < deadline, result.text
        await asyncio.sleep(0.02)
    url: str = result.json()["images"][0]["url"]
    return url


async def test_files_answer_404_once_their_lifetime_is_over(
    fake: RunningFake, http: httpx.AsyncClient
) -> None:
    lifecycle = {
        "X-Fal-Object-Lifecycle-Preference": json.dumps({"expiration_duration_seconds": 5})
    }
    expiring = await _file_url(fake, http, lifecycle)
    kept = await _file_url(fake, http, {"X-Fal-Object-Lifecycle-Preference": "not json"})
    assert kept != expiring
    assert (await http.get(expiring)).status_code == 200  # within its five seconds
    deadline = time.monotonic() + 30
    while (await http.get(expiring)).status_code != 404:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert (await http.get(kept)).status_code == 200
