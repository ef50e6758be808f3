"""The queue protocol over real HTTP: submit, status, stream, result, cancel, auth, URL forms."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from app.fakefal import FakeFal, FakeFalConfig
from tests.fakefal.conftest import StartFake
from tests.fakefal.support import (
    IMAGINEART,
    IMAGINEART_APP,
    RunningFake,
    wait_completed,
)
from tests.servers import LiveServer

PROMPT = {"prompt": "a red fox in snow", "aspect_ratio": "16:9", "seed": 1234}


async def submit(http: httpx.AsyncClient, fake: RunningFake, body: Any = PROMPT, **kw: Any) -> Any:
    response = await http.post(fake.submit_url(kw.pop("model", IMAGINEART)), json=body, **kw)
    assert response.status_code == 200, response.text
    return response.json()


async def test_submit_answers_in_queue_with_app_only_urls(
    fake: RunningFake, http: httpx.AsyncClient
) -> None:
    response = await http.post(fake.submit_url(), json=PROMPT)
    assert response.status_code == 200
    body = response.json()
    request_id = body["request_id"]
    assert uuid.UUID(request_id).version == 4
    assert response.headers["x-fal-request-id"] == request_id
    base = f"{fake.url}/{IMAGINEART_APP}/requests/{request_id}"
    assert body == {
        "status": "IN_QUEUE",
        "request_id": request_id,
        "gateway_request_id": request_id,
        "response_url": base,
        "status_url": f"{base}/status",
        "cancel_url": f"{base}/cancel",
        "queue_position": 0,
        "logs": None,
        "metrics": {},
    }


async def test_completed_status_result_and_file(fake: RunningFake, http: httpx.AsyncClient) -> None:
    submitted = await submit(http, fake)
    status = await http.get(submitted["status_url"], params={"logs": "1"})
    assert status.status_code == 200
    body = status.json()
    assert body["status"] == "COMPLETED"
    for key in ("request_id", "response_url", "status_url", "cancel_url"):
        assert body[key] == submitted[key]
    assert body["metrics"] == {"inference_time": 0.0}
    assert "error" not in body
    assert [set(line) for line in body["logs"]] == [{"message", "level", "source", "timestamp"}] * 2

    result = await http.get(submitted["response_url"])
    assert result.status_code == 200
    assert result.headers["x-fal-request-id"] == submitted["request_id"]
    output = result.json()
    assert output["seed"] == 1234
    [image] = output["images"]
    assert (image["width"], image["height"], image["content_type"]) == (2816, 1584, "image/png")
    assert image["url"] == f"{fake.url}/files/{image['file_name']}"
    png = await http.get(image["url"], headers={"Authorization": ""})
    assert png.status_code == 200
    assert png.headers["content-type"] == "image/png"
    assert png.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(png.content) == image["file_size"]
    assert png.content[16:24] == (2816).to_bytes(4, "big") + (1584).to_bytes(4, "big")


async def test_same_seed_same_image_random_seed_differs(
    fake: RunningFake, http: httpx.AsyncClient
) -> None:
    async def first_image(body: dict[str, Any]) -> dict[str, Any]:
        submitted = await submit(http, fake, body)
        await wait_completed(http, submitted["status_url"])
        result = (await http.get(submitted["response_url"])).json()
        image: dict[str, Any] = result["images"][0]
        return image

    one = await first_image({"prompt": "fox", "seed": 5})
    two = await first_image({"prompt": "fox", "seed": 5})
    assert one["url"] == two["url"]
    assert (await http.get(one["url"])).content == (await http.get(two["url"])).content
    assert fake.fake.stats.files_rendered == 1  # the second fetch came from the cache
    randoms = [await first_image({"prompt": "fox", "seed": seed}) for seed in (0, -1, None)]
    assert len({image["url"] for image in [one, *randoms]}) == 4


@pytest.mark.parametrize(
    ("body", "loc", "error_type"),
    [
        ({}, ["body", "prompt"], "missing"),
        ({"prompt": ""}, ["body", "prompt"], "string_too_short"),
        ({"prompt": "x", "aspect_ratio": "7:5"}, ["body", "aspect_ratio"], "literal_error"),
        ({"prompt": "x", "resolution": "4K"}, ["body", "resolution"], "literal_error"),
    ],
)
async def test_invalid_input_is_accepted_then_fails_with_422(
    fake: RunningFake, http: httpx.AsyncClient, body: Any, loc: list[str], error_type: str
) -> None:
    submitted = await submit(http, fake, body)
    status = await wait_completed(http, submitted["status_url"])
    assert status["error"] == "Invalid status code: 422"
    assert "error_type" in status
    result = await http.get(submitted["response_url"])
    assert result.status_code == 422
    assert result.headers["x-fal-request-id"] == submitted["request_id"]
    [detail] = result.json()["detail"]
    assert detail["loc"] == loc
    assert detail["type"] == error_type
    assert detail["msg"]


async def test_body_that_is_not_json_fails_at_the_result(
    fake: RunningFake, http: httpx.AsyncClient
) -> None:
    response = await http.post(
        fake.submit_url(), content=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200
    result = await http.get(response.json()["response_url"])
    assert result.status_code == 422
    assert result.json()["detail"][0]["type"] == "json_invalid"


async def test_a_registered_model_gets_one_1024_image(
    start_fake: StartFake, http: httpx.AsyncClient
) -> None:
    fake = start_fake(models=["someone/some-app"])
    submitted = await submit(http, fake, {"anything": [1, 2]}, model="someone/some-app")
    assert submitted["response_url"].startswith(f"{fake.url}/someone/some-app/requests/")
    output = (await http.get(submitted["response_url"])).json()
    [image] = output["images"]
    assert (image["width"], image["height"]) == (1024, 1024)


@pytest.mark.parametrize(
    ("model", "app"),
    [
        ("workflows/someone/flow/step", "workflows/someone/flow"),
        ("comfy/someone/graph", "comfy/someone/graph"),
    ],
)
async def test_namespaced_models(
    start_fake: StartFake, http: httpx.AsyncClient, model: str, app: str
) -> None:
    fake = start_fake(models=[model])
    submitted = await submit(http, fake, {"x": 1}, model=model)
    assert submitted["status_url"] == f"{fake.url}/{app}/requests/{submitted['request_id']}/status"
    assert (await http.get(submitted["status_url"])).status_code == 200


async def test_full_id_urls_work_too_and_another_app_does_not(
    fake: RunningFake, http: httpx.AsyncClient
) -> None:
    request_id = (await submit(http, fake))["request_id"]
    full = f"{fake.url}/{IMAGINEART}/requests/{request_id}"
    assert (await http.get(f"{full}/status")).json()["status"] == "COMPLETED"
    assert (await http.get(full)).json()["images"]
    async with http.stream("GET", f"{full}/status/stream") as stream:
        assert "COMPLETED" in (await stream.aread()).decode()
    assert (await http.put(f"{full}/cancel")).json() == {"status": "ALREADY_COMPLETED"}
    other = f"{fake.url}/someone/else/requests/{request_id}"
    assert (await http.get(f"{other}/status")).status_code == 404


async def test_auth_is_required_on_every_queue_route(
    fake: RunningFake, http: httpx.AsyncClient
) -> None:
    submitted = await submit(http, fake)
    calls = [
        ("POST", fake.submit_url()),
        ("GET", submitted["status_url"]),
        ("GET", submitted["status_url"] + "/stream"),
        ("GET", submitted["response_url"]),
        ("PUT", submitted["cancel_url"]),
    ]
    for headers in [{"Authorization": ""}, {"Authorization": "Key"}, {"Authorization": "Bearer x"}]:
        for method, url in calls:
            response = await http.request(method, url, json={}, headers=headers)
            assert response.status_code == 401, (method, url, headers)
            assert isinstance(response.json()["detail"], str)
    async with httpx.AsyncClient() as anonymous:
        assert (await anonymous.post(fake.submit_url(), json=PROMPT)).status_code == 401
        # The key's value does not matter.
        ok = await anonymous.post(
            fake.submit_url(), json=PROMPT, headers={"Authorization": "Key a:b"}
        )
        assert ok.status_code == 200
    assert fake.fake.stats.submitted == 2


async def test_unknown_request(fake: RunningFake, http: httpx.AsyncClient) -> None:
    base = f"{fake.url}/{IMAGINEART_APP}/requests/{uuid.uuid4()}"
    status = await http.get(f"{base}/status")
    assert (status.status_code, status.json()) == (404, {"status": "NOT_FOUND"})
    cancel = await http.put(f"{base}/cancel")
    assert (cancel.status_code, cancel.json()) == (404, {"status": "NOT_FOUND"})
    result = await http.get(base)
    assert result.status_code == 404
    assert "detail" in result.json()
    assert (await http.get(f"{base}/stream")).status_code == 404
    assert (await http.delete(f"{base}/status")).status_code == 405


async def test_state_follows_the_latencies(start_fake: StartFake, http: httpx.AsyncClient) -> None:
    fake = start_fake(queue_latency=0.3, run_latency=0.3)
    started = time.monotonic()
    submitted = await submit(http, fake)
    queued = await http.get(submitted["status_url"], params={"logs": "true"})
    assert queued.status_code == 202
    assert queued.json()["status"] == "IN_QUEUE"
    assert queued.json()["queue_position"] == 0
    early = await http.get(submitted["response_url"])
    assert (early.status_code, early.json()) == (400, {"detail": "Request is still in progress"})
    assert early.headers["x-fal-request-id"] == submitted["request_id"]

    await asyncio.sleep(max(0.0, started + 0.35 - time.monotonic()))
    running = await http.get(submitted["status_url"], params={"logs": "1"})
    assert running.status_code == 202
    body = running.json()
    assert body["status"] == "IN_PROGRESS"
    assert [line["message"] for line in body["logs"]] == [f"Running {IMAGINEART}"]
    assert "queue_position" not in body
    without_logs = await http.get(submitted["status_url"], params={"logs": "false"})
    assert without_logs.json()["logs"] is None

    completed = await wait_completed(http, submitted["status_url"])
    assert completed["metrics"]["inference_time"] == pytest.approx(0.3)
    assert time.monotonic() - started >= 0.6


async def test_queue_position_counts_the_requests_ahead(
    start_fake: StartFake, http: httpx.AsyncClient
) -> None:
    fake = start_fake(queue_latency=2.0, models=["someone/other"])
    first, second, third = [await submit(http, fake) for _ in range(3)]
    assert [s["queue_position"] for s in (first, second, third)] == [0, 1, 2]
    assert (await http.get(third["status_url"])).json()["queue_position"] == 2
    await http.put(first["cancel_url"])
    assert (await http.get(third["status_url"])).json()["queue_position"] == 1
    other_app = await submit(http, fake, {"x": 1}, model="someone/other")
    assert other_app["queue_position"] == 0


async def test_cancel_a_queued_request(start_fake: StartFake, http: httpx.AsyncClient) -> None:
    fake = start_fake(queue_latency=5.0)
    submitted = await submit(http, fake)
    cancel = await http.put(submitted["cancel_url"])
    assert (cancel.status_code, cancel.json()) == (202, {"status": "CANCELLATION_REQUESTED"})
    status = await http.get(submitted["status_url"])
    assert status.status_code == 200
    body = status.json()
    assert (body["status"], body["error_type"]) == ("COMPLETED", "client_cancelled")
    assert body["error"]
    result = await http.get(submitted["response_url"])
    assert result.status_code == 499
    assert result.json()["error_type"] == "client_cancelled"
    assert result.headers["x-fal-error-type"] == "client_cancelled"
    assert result.headers["x-fal-request-id"] == submitted["request_id"]
    again = await http.put(submitted["cancel_url"])
    assert (again.status_code, again.json()) == (400, {"status": "ALREADY_COMPLETED"})


async def test_cancel_a_running_request(start_fake: StartFake, http: httpx.AsyncClient) -> None:
    fake = start_fake(run_latency=5.0)
    submitted = await submit(http, fake)
    assert (await http.get(submitted["status_url"])).json()["status"] == "IN_PROGRESS"
    cancel = await http.put(submitted["cancel_url"])
    assert (cancel.status_code, cancel.json()) == (202, {"status": "CANCELLATION_REQUESTED"})
    body = (await http.get(submitted["status_url"])).json()
    assert (body["status"], body["error_type"]) == ("COMPLETED", "client_cancelled")
    await asyncio.sleep(0.05)
    assert fake.fake.stats.completed_cancelled == 1


async def test_cancel_a_completed_request(fake: RunningFake, http: httpx.AsyncClient) -> None:
    submitted = await submit(http, fake)
    cancel = await http.put(submitted["cancel_url"])
    assert (cancel.status_code, cancel.json()) == (400, {"status": "ALREADY_COMPLETED"})


def parse_events(text: str) -> tuple[list[dict[str, Any]], int]:
    events, pings = [], 0
    for block in text.split("\n\n"):
        if block.startswith("data: "):
            events.append(json.loads(block.removeprefix("data: ")))
        elif block.startswith(": ping"):
            pings += 1
    return events, pings


async def test_status_stream_sends_each_change_then_closes(
    start_fake: StartFake, http: httpx.AsyncClient
) -> None:
    fake = start_fake(queue_latency=0.2, run_latency=0.2, stream_ping_interval=0.1)
    submitted = await submit(http, fake)
    async with http.stream(
        "GET", submitted["status_url"] + "/stream", params={"logs": 1}
    ) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        text = (await stream.aread()).decode()
    events, pings = parse_events(text)
    assert [event["status"] for event in events] == ["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]
    assert pings >= 2
    assert events[0]["queue_position"] == 0
    assert events[0]["logs"] is None
    # Each event carries only the lines logged since the one before, as fal's stream does
    # (fal's JS client adds them up).
    assert [line["message"] for line in events[1]["logs"]] == [f"Running {IMAGINEART}"]
    assert events[2]["request_id"] == submitted["request_id"]
    [last_line] = events[2]["logs"]
    assert last_line["message"] != f"Running {IMAGINEART}"


async def test_status_stream_ends_on_cancel(start_fake: StartFake, http: httpx.AsyncClient) -> None:
    fake = start_fake(queue_latency=5.0)
    submitted = await submit(http, fake)

    async def read() -> str:
        async with http.stream("GET", submitted["status_url"] + "/stream") as stream:
            return (await stream.aread()).decode()

    reading = asyncio.create_task(read())
    await asyncio.sleep(0.1)
    await http.put(submitted["cancel_url"])
    events, _ = parse_events(await asyncio.wait_for(reading, 2))
    assert [event["status"] for event in events] == ["IN_QUEUE", "COMPLETED"]
    assert events[-1]["error_type"] == "client_cancelled"


@pytest.fixture
def mounted() -> Iterator[tuple[FakeFal, str]]:
    fake = FakeFal(FakeFalConfig())

    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        yield
        await fake.aclose()

    parent = Starlette(routes=[Mount("/fakefal", fake.app)], lifespan=lifespan)
    with LiveServer(parent) as server:
        yield fake, server.url + "/fakefal"


async def test_mounted_under_a_prefix_every_url_has_it(
    mounted: tuple[FakeFal, str], http: httpx.AsyncClient
) -> None:
    _, base = mounted
    response = await http.post(f"{base}/{IMAGINEART}", json=PROMPT)
    submitted = response.json()
    assert submitted["status_url"].startswith(f"{base}/{IMAGINEART_APP}/requests/")
    assert (await http.get(submitted["status_url"])).status_code == 200
    image = (await http.get(submitted["response_url"])).json()["images"][0]
    assert image["url"].startswith(f"{base}/files/")
    assert len((await http.get(image["url"])).content) == image["file_size"]
    assert (await http.get(f"{base}/.well-known/jwks.json")).json()["keys"]
    assert (await http.get(f"{base}/_fake/stats")).json()["submitted"] == 1


async def test_files_refuse_names_they_did_not_make(
    fake: RunningFake, http: httpx.AsyncClient
) -> None:
    for name in ["nope.png", "0123456789abcdef-5000x5000.png", "0123456789abcdef-1x1.jpg"]:
        assert (await http.get(f"{fake.url}/files/{name}")).status_code == 404
    tiny = await http.get(f"{fake.url}/files/0123456789abcdef-16x16.png")
    assert tiny.status_code == 200
    assert tiny.headers["cache-control"].endswith("immutable")
