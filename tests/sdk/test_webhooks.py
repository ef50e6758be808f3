"""`falrelay.webhooks.verify` against signatures made by the `standardwebhooks` package (the
one the service signs with), so the two implementations check each other."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, datetime

import orjson
import pytest
from standardwebhooks import Webhook

from falrelay import JobEvent, PingEvent, WebhookVerificationError
from falrelay.webhooks import sign, verify

SECRET = "whsec_" + base64.b64encode(b"s" * 24).decode()
NEW_SECRET = "whsec_" + base64.b64encode(b"n" * 24).decode()
NOW = 1_800_000_000
JOB = {
    "id": "job_0193a9d2c4f07a4c9b1e2d3f4a5b6c7d",
    "model": "imagineart/imagineart-2.0-preview/text-to-image",
    "status": "succeeded",
    "input": {"prompt": "a red fox in snow"},
    "metadata": {},
    "callback_url": None,
    "output": {"images": [{"url": "https://cdn.example/fox.png", "width": 1280, "height": 720}]},
    "error": None,
    "fal_request_id": "r-1",
    "created_at": "2026-11-24T12:00:00Z",
    "submitted_at": "2026-11-24T12:00:01Z",
    "started_at": None,
    "completed_at": "2026-11-24T12:00:03Z",
}
Tamper = Callable[[dict[str, str], bytes], tuple[dict[str, str], bytes]]
BODY = orjson.dumps({"type": "job.succeeded", "timestamp": "2026-11-24T12:00:03Z", "data": JOB})


def signed(body: bytes = BODY, *secrets: str, at: int = NOW) -> dict[str, str]:
    when = datetime.fromtimestamp(at, UTC)
    signatures = " ".join(
        Webhook(secret).sign("evt_1", when, body.decode()) for secret in secrets or (SECRET,)
    )
    return {"webhook-id": "evt_1", "webhook-timestamp": str(at), "webhook-signature": signatures}


def test_a_genuine_delivery_is_its_typed_event() -> None:
    event = verify(BODY, signed(), SECRET, now=NOW)
    assert isinstance(event, JobEvent)
    assert event.id == "evt_1"
    assert event.data.id == JOB["id"]
    assert event.data.images[0].width == 1280
    # Headers in any case, a str body, and our own signer agree with the library's.
    headers = {k.upper(): v for k, v in signed().items()}
    assert verify(BODY.decode(), headers, SECRET, now=NOW) == event
    assert signed()["webhook-signature"] == sign("evt_1", NOW, BODY, SECRET)


def test_during_a_rotation_either_secret_verifies() -> None:
    headers = signed(BODY, SECRET, NEW_SECRET)
    assert len(headers["webhook-signature"].split()) == 2
    for secret in (SECRET, NEW_SECRET, ["whsec_" + "A" * 32, NEW_SECRET]):
        assert verify(BODY, headers, secret, now=NOW).id == "evt_1"


@pytest.mark.parametrize("skew", [-301, 301])
def test_a_timestamp_beyond_the_tolerance_either_way_is_refused(skew: int) -> None:
    with pytest.raises(WebhookVerificationError, match="tolerance"):
        verify(BODY, signed(), SECRET, now=NOW + skew)
    assert verify(BODY, signed(), SECRET, now=NOW + skew, tolerance=400).id == "evt_1"
    assert verify(BODY, signed(), SECRET, now=NOW + (299 if skew > 0 else -299)).id == "evt_1"


@pytest.mark.parametrize(
    "tamper",
    [
        lambda h, b: (h, b.replace(b"succeeded", b"failed")),
        lambda h, b: ({**h, "webhook-id": "evt_2"}, b),
        lambda h, b: ({**h, "webhook-timestamp": str(NOW + 1)}, b),
        lambda h, b: ({**h, "webhook-signature": h["webhook-signature"].replace("v1,", "v2,")}, b),
        lambda h, b: ({**h, "webhook-signature": "v1, nonsense v1,=== ,,"}, b),
        lambda h, b: ({k: v for k, v in h.items() if k != "webhook-signature"}, b),
        lambda h, b: ({**h, "webhook-timestamp": "yesterday"}, b),
        lambda h, b: ({**h, "webhook-timestamp": "9" * 400}, b),
        lambda h, b: ({**h, "webhook-timestamp": f"+{NOW}"}, b),
    ],
    ids=["body", "id", "timestamp", "version", "garbage", "missing", "not-a-time", "huge", "sign"],
)
def test_anything_altered_or_missing_is_refused(tamper: Tamper) -> None:
    headers, body = tamper(signed(), BODY)
    with pytest.raises(WebhookVerificationError):
        verify(body, headers, SECRET, now=NOW)


def test_the_wrong_secret_is_refused_and_a_malformed_one_is_a_value_error() -> None:
    with pytest.raises(WebhookVerificationError, match="no signature"):
        verify(BODY, signed(), NEW_SECRET, now=NOW)
    with pytest.raises(ValueError, match="whsec_"):
        verify(BODY, signed(), "whsec_not base64!", now=NOW)


def test_a_ping_is_a_ping_event_and_a_signed_stranger_is_refused() -> None:
    ping = orjson.dumps({"type": "ping", "timestamp": "2026-11-24T12:00:00Z", "data": {"x": 1}})
    event = verify(ping, signed(ping), SECRET, now=NOW)
    assert isinstance(event, PingEvent)
    assert event.data == {"x": 1}
    stranger = b'{"type": "invoice.paid"}'
    with pytest.raises(WebhookVerificationError, match="not a falrelay event"):
        verify(stranger, signed(stranger), SECRET, now=NOW)
