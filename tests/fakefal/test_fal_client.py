"""Fidelity: fal's official Python client, unchanged, against the fake."""

from __future__ import annotations

from collections.abc import Iterator

import fal_client
import fal_client.client
import pytest

from tests.fakefal.conftest import StartFake
from tests.fakefal.support import IMAGINEART, RunningFake

ARGUMENTS = {"prompt": "a red fox in snow", "aspect_ratio": "16:9", "resolution": "2K", "seed": 7}


@pytest.fixture
def client() -> Iterator[fal_client.SyncClient]:
    client = fal_client.SyncClient(key="test-key")
    yield client
    client._client.close()


def point_at(monkeypatch: pytest.MonkeyPatch, fake: RunningFake) -> None:
    # fal_client builds submit URLs from this module global at call time (protocol notes 3.1).
    monkeypatch.setattr(fal_client.client, "QUEUE_URL_FORMAT", fake.url + "/")


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
