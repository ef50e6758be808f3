"""Fidelity: fal's official Python client, unchanged, against the fake."""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Iterator
from pathlib import Path

import fal_client
import fal_client.client
import httpx
import pytest

from tests.fakefal.conftest import StartFake
from tests.fakefal.support import IMAGINEART, RunningFake

ARGUMENTS = {"prompt": "a red fox in snow", "aspect_ratio": "16:9", "resolution": "2K", "seed": 7}
# fal_client's uploads open an httpx client for the CDN that they never close; its socket's
# ResourceWarning is theirs. Tests that upload collect it before they end.
LEAKS_CDN_CLIENT = pytest.mark.filterwarnings("ignore:unclosed:ResourceWarning")


@pytest.fixture
def client() -> Iterator[fal_client.SyncClient]:
    client = fal_client.SyncClient(key="test-key")
    yield client
    client._client.close()


def point_at(monkeypatch: pytest.MonkeyPatch, fake: RunningFake) -> None:
    # fal_client builds its URLs from these module globals at call time (protocol notes 3.1):
    # the fake serves every fal host on its one port, fal.run's under /run/.
    monkeypatch.setattr(fal_client.client, "QUEUE_URL_FORMAT", fake.url + "/")
    monkeypatch.setattr(fal_client.client, "RUN_URL_FORMAT", fake.url + "/run/")
    monkeypatch.setattr(fal_client.client, "REST_URL", fake.url)
    monkeypatch.setattr(fal_client.client, "CDN_URL", fake.url)


def test_submit_status_events_and_result(
    start_fake: StartFake, client: fal_client.SyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = start_fake(queue_latency=0.15, run_latency=0.15)
    point_at(monkeypatch, fake)
    handle = client.submit(IMAGINEART, arguments=ARGUMENTS)
    assert isinstance(handle.status(with_logs=True), fal_client.Queued)

    events = list(handle.iter_events(with_logs=True, interval=0.02))
    kinds = [type(event) for event in events]
    assert kinds[0] is fal_client.Queued
    assert fal_client.InProgress in kinds
    assert kinds[-1] is fal_client.Completed
    completed = events[-1]
    assert isinstance(completed, fal_client.Completed)
    assert completed.error is None
    assert completed.logs
    assert completed.metrics["inference_time"] == pytest.approx(0.15)

    output = handle.get()
    [image] = output["images"]
    assert (image["width"], image["height"]) == (2816, 1584)
    assert output["seed"] == 7
    # The module-level helpers, which rebuild the URLs from the model id, agree.
    status = client.status(IMAGINEART, handle.request_id, with_logs=False)
    assert isinstance(status, fal_client.Completed)
    assert client.result(IMAGINEART, handle.request_id) == output


def test_cancel_a_queued_request(
    start_fake: StartFake, client: fal_client.SyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = start_fake(queue_latency=5.0)
    point_at(monkeypatch, fake)
    handle = client.submit(IMAGINEART, arguments=ARGUMENTS)
    handle.cancel()
    status = handle.status()
    assert isinstance(status, fal_client.Completed)
    assert status.error_type == "client_cancelled"
    with pytest.raises(fal_client.FalClientHTTPError) as cancelled:
        handle.get()
    assert (cancelled.value.status_code, cancelled.value.error_type) == (499, "client_cancelled")
    with pytest.raises(fal_client.FalClientHTTPError) as again:
        handle.cancel()
    assert again.value.status_code == 400


def test_model_errors_reach_the_client(
    fake: RunningFake, client: fal_client.SyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    point_at(monkeypatch, fake)
    handle = client.submit(IMAGINEART, arguments={"prompt": ""})
    with pytest.raises(fal_client.FalClientHTTPError) as refused:
        handle.get()
    assert refused.value.status_code == 422
    assert refused.value.response.json()["detail"][0]["loc"] == ["body", "prompt"]


def test_client_retries_ingress_errors_and_429(
    start_fake: StartFake, client: fal_client.SyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Half the submits fail; fal_client retries 429 and nginx-looking 5xx until one is taken.
    fake = start_fake(submit_429_rate=0.3, submit_5xx_rate=0.3, random_seed=11)
    point_at(monkeypatch, fake)
    monkeypatch.setattr(fal_client.client, "BASE_DELAY", 0.001)
    outputs = [client.submit(IMAGINEART, arguments=ARGUMENTS).get() for _ in range(5)]
    assert all(output["images"] for output in outputs)
    stats = fake.fake.stats
    assert stats.submitted == 5
    assert stats.submit_429 + stats.submit_5xx > 0


def test_webhook_url_is_passed_through(
    fake: RunningFake, client: fal_client.SyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    point_at(monkeypatch, fake)
    hook = "http://127.0.0.1:9/hook?a=1&b=2"
    # Never reached: drop it, so nothing is sent to a port nobody owns.
    fake.fake.config.webhook_drop_rate = 1.0
    handle = client.submit(IMAGINEART, arguments=ARGUMENTS, webhook_url=hook)
    [request] = list(fake.fake.requests)
    assert (request.id, request.fal_webhook) == (handle.request_id, hook)


def test_run_answers_the_output_after_the_run_time(
    start_fake: StartFake, client: fal_client.SyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = start_fake(queue_latency=0.1, run_latency=0.2)
    point_at(monkeypatch, fake)
    started = time.monotonic()
    output = client.run(IMAGINEART, arguments=ARGUMENTS)
    assert time.monotonic() - started >= 0.3
    [image] = output["images"]
    assert (image["width"], image["height"]) == (2816, 1584)
    assert output["seed"] == 7
    # The same request through the queue gives the same output.
    assert client.submit(IMAGINEART, arguments=ARGUMENTS).get() == output
    [run, queued] = list(fake.fake.requests)
    assert (run.mode, queued.mode) == ("run", "queue")
    assert (fake.fake.stats.runs, fake.fake.stats.submitted) == (1, 1)


def test_run_model_errors_and_unknown_models(
    fake: RunningFake, client: fal_client.SyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    point_at(monkeypatch, fake)
    with pytest.raises(fal_client.FalClientHTTPError) as refused:
        client.run(IMAGINEART, arguments={"prompt": ""})
    assert refused.value.status_code == 422
    assert refused.value.response.json()["detail"][0]["loc"] == ["body", "prompt"]
    assert refused.value.response.headers["x-fal-request-id"]
    for method in (client.run, client.submit):
        with pytest.raises(fal_client.FalClientHTTPError) as unknown:
            method("nobody/no-such-model", arguments={"prompt": "p"})  # type: ignore[operator]
        assert unknown.value.status_code == 404


def test_run_honours_the_start_timeout(
    start_fake: StartFake, client: fal_client.SyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One slot, held by a long request: the run cannot start before its deadline.
    fake = start_fake(concurrency=1, run_latency=30)
    point_at(monkeypatch, fake)
    client.submit(IMAGINEART, arguments=ARGUMENTS)
    started = time.monotonic()
    with pytest.raises(fal_client.FalClientHTTPError) as timed_out:
        client.run(IMAGINEART, arguments=ARGUMENTS, start_timeout=1.2)
    assert time.monotonic() - started >= 1.2
    error = timed_out.value
    assert (error.status_code, error.error_type) == (504, "request_timeout")
    assert error.response_headers["x-fal-request-timeout-type"] == "user"


def test_stream_sends_partial_events_then_the_output(
    start_fake: StartFake, client: fal_client.SyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = start_fake(queue_latency=0.1, run_latency=0.3)
    point_at(monkeypatch, fake)
    events = list(client.stream(IMAGINEART, arguments=ARGUMENTS))
    assert events[:-1] == [
        {"partial": True, "progress": 0.0},
        {"partial": True, "progress": 0.5},
    ]
    assert events[-1] == client.run(IMAGINEART, arguments=ARGUMENTS)
    assert [r.mode for r in fake.fake.requests] == ["stream", "run"]


def test_subscribe_polls_to_the_output_with_priority_and_start_timeout(
    start_fake: StartFake, client: fal_client.SyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = start_fake(queue_latency=0.15, run_latency=0.15)
    point_at(monkeypatch, fake)
    updates: list[fal_client.Status] = []
    enqueued: list[str] = []
    output = client.subscribe(
        IMAGINEART,
        arguments=ARGUMENTS,
        with_logs=True,
        interval=0.02,
        on_enqueue=enqueued.append,
        on_queue_update=updates.append,
        priority="low",
        start_timeout=30,
    )
    assert output["seed"] == 7
    kinds = [type(update) for update in updates]
    assert kinds[0] is fal_client.Queued
    assert fal_client.InProgress in kinds
    assert kinds[-1] is fal_client.Completed
    [request] = list(fake.fake.requests)
    assert (request.id, request.priority, request.start_timeout) == (enqueued[0], "low", 30.0)


@LEAKS_CDN_CLIENT
def test_upload_round_trips_bytes_and_content_type(
    fake: RunningFake,
    client: fal_client.SyncClient,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    point_at(monkeypatch, fake)
    data = os.urandom(300_000)
    url = client.upload(data, "image/webp", file_name="a fox?.webp")
    assert url.startswith(f"{fake.url}/files/")
    assert url.endswith(".webp")
    served = httpx.get(url)
    assert (served.content, served.headers["content-type"]) == (data, "image/webp")
    # From a file, and by fal_client's other repository (initiate, then a PUT).
    path = tmp_path / "notes.txt"
    path.write_bytes(b"plain text, kept as it is\n")
    from_file = httpx.get(client.upload_file(path))
    assert (from_file.content, from_file.headers["content-type"]) == (
        path.read_bytes(),
        "text/plain",
    )
    via_storage = httpx.get(client.upload(data[:1000], "audio/wav", repository="fal"))
    assert (via_storage.content, via_storage.headers["content-type"]) == (data[:1000], "audio/wav")
    assert fake.fake.stats.files_uploaded == 3
    gc.collect()


@LEAKS_CDN_CLIENT
def test_multipart_upload(
    fake: RunningFake, client: fal_client.SyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    point_at(monkeypatch, fake)
    # fal_client goes multipart past 100 MB in 10 MB parts; smaller here, the same requests.
    monkeypatch.setattr(fal_client.client, "MULTIPART_THRESHOLD", 1024 * 1024)
    monkeypatch.setattr(fal_client.client, "MULTIPART_CHUNK_SIZE", 700 * 1024)
    data = os.urandom(5 * 1024 * 1024 + 123)
    url = client.upload(data, "video/mp4", file_name="clip.mp4")
    served = httpx.get(url)
    assert (served.content, served.headers["content-type"]) == (data, "video/mp4")
    assert fake.fake.stats.files_uploaded == 1
    gc.collect()


async def test_async_client_run_stream_and_upload(
    fake: RunningFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    point_at(monkeypatch, fake)
    client = fal_client.AsyncClient(key="test-key")
    output = await client.run(IMAGINEART, arguments=ARGUMENTS)
    events = [event async for event in client.stream(IMAGINEART, arguments=ARGUMENTS)]
    assert events[-1] == output
    url = await client.upload(b"\x00\x01binary", "application/octet-stream")
    async with httpx.AsyncClient() as http:
        assert (await http.get(url)).content == b"\x00\x01binary"
    await (await client._client).aclose()
