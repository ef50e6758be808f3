"""The `/_fake/` control API: knobs at run time, counters, the request list, reset."""

from __future__ import annotations

import httpx

from tests.fakefal.conftest import StartFake
from tests.fakefal.support import IMAGINEART, Receiver, RunningFake, wait_for

PROMPT = {"prompt": "a boat", "resolution": "1K"}


async def test_read_and_patch_config(fake: RunningFake) -> None:
    async with httpx.AsyncClient() as control:  # no auth needed
        config = (await control.get(f"{fake.url}/_fake/config")).json()
        assert config["queue_latency"] == 0.0
        assert config["webhook_retry_delays"] == [0.5, 1.0, 2.0, 4.0]
        changed = await control.patch(
            f"{fake.url}/_fake/config", json={"queue_latency": 0.5, "error_types": ["validation"]}
        )
        assert changed.status_code == 200
        assert changed.json() == {**config, "queue_latency": 0.5, "error_types": ["validation"]}
        assert fake.fake.config.queue_latency == 0.5


async def test_patch_is_validated_and_all_or_nothing(fake: RunningFake) -> None:
    async with httpx.AsyncClient() as control:
        url = f"{fake.url}/_fake/config"
        for bad in [
            {"error_rate": 2},
            {"queue_latency": -1, "run_latency": 1},
            {"error_types": ["no_such_error"]},
            {"no_such_knob": 1},
            [1, 2],
        ]:
            response = await control.patch(url, json=bad)
            assert response.status_code == 422, bad
            assert response.json()["detail"]
        assert (await control.patch(url, content=b"{")).status_code == 400
        assert fake.fake.config.run_latency == 0.0


async def test_patch_takes_effect_for_new_requests(
    fake: RunningFake, http: httpx.AsyncClient
) -> None:
    await http.patch(f"{fake.url}/_fake/config", json={"queue_latency": 5.0})
    submitted = (await http.post(fake.submit_url(), json=PROMPT)).json()
    assert (await http.get(submitted["status_url"])).json()["status"] == "IN_QUEUE"
    await http.patch(f"{fake.url}/_fake/config", json={"submit_429_rate": 1.0})
    assert (await http.post(fake.submit_url(), json=PROMPT)).status_code == 429


async def test_stats_requests_and_reset(
    start_fake: StartFake, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    fake = start_fake(queue_latency=5.0, random_seed=4, models=["someone/app"])
    await http.post(fake.submit_url(), json=PROMPT, params={"fal_webhook": receiver.hook})
    done = (await http.post(f"{fake.url}/someone/app", json={"n": 1})).json()
    await http.put(done["cancel_url"])
    await wait_for(lambda: fake.fake.stats.completed_cancelled == 1)

    listed = (await http.get(f"{fake.url}/_fake/requests")).json()["requests"]
    assert [(r["model"], r["state"], r["fal_webhook"]) for r in listed] == [
        (IMAGINEART, "IN_QUEUE", receiver.hook),
        ("someone/app", "COMPLETED", None),
    ]
    assert listed[0]["input"] == PROMPT
    assert listed[1]["cancelled"] is True
    assert {"id", "submitted_at"} <= set(listed[0])
    stats = (await http.get(f"{fake.url}/_fake/stats")).json()
    assert (stats["submitted"], stats["completed_cancelled"]) == (2, 1)

    reset = await http.post(f"{fake.url}/_fake/reset")
    assert reset.status_code == 204
    assert (await http.get(f"{fake.url}/_fake/requests")).json() == {"requests": []}
    assert set((await http.get(f"{fake.url}/_fake/stats")).json().values()) == {0}
    assert (await http.get(done["status_url"])).status_code == 404
    assert (await http.get(f"{fake.url}/_fake/config")).json()["queue_latency"] == 5.0


async def test_max_requests_forgets_the_oldest_completed(
    start_fake: StartFake, http: httpx.AsyncClient
) -> None:
    fake = start_fake(max_requests=2)
    submitted = [(await http.post(fake.submit_url(), json=PROMPT)).json() for _ in range(2)]
    await wait_for(lambda: fake.fake.stats.completed_ok == 2)
    submitted.append((await http.post(fake.submit_url(), json=PROMPT)).json())
    codes = [(await http.get(s["status_url"])).status_code for s in submitted]
    assert codes == [404, 200, 200]
