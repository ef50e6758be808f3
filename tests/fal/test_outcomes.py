from __future__ import annotations

from app.fal import outcomes
from app.fal.client import Result
from app.fal.outcomes import Failed, FalWebhook, Succeeded

OUTPUT = {"images": [{"url": "http://x/y.png", "width": 1, "height": 1}]}


def test_ok_result_is_the_output() -> None:
    assert outcomes.from_result(Result(200, OUTPUT)) == Succeeded(OUTPUT)


def test_validation_error_names_the_field() -> None:
    body = {"detail": [{"loc": ["body", "prompt"], "msg": "field required", "type": "missing"}]}
    assert outcomes.from_result(Result(422, body)) == Failed(
        "invalid_input", "prompt: field required"
    )


def test_infrastructure_error_keeps_fals_error_type() -> None:
    body = {"detail": "Runner disconnected", "error_type": "runner_disconnected"}
    assert outcomes.from_result(Result(503, body, "runner_disconnected")) == Failed(
        "runner_disconnected", "Runner disconnected"
    )


def test_non_object_output_is_a_failure() -> None:
    assert outcomes.from_result(Result(200, ["not", "an", "object"])).type == "invalid_output"  # type: ignore[union-attr]


def test_webhook_ok_and_error_bodies() -> None:
    ok = FalWebhook.model_validate(
        {"request_id": "r", "status": "OK", "payload": OUTPUT, "error": None}
    )
    assert outcomes.from_webhook(ok) == Succeeded(OUTPUT)
    error = FalWebhook.model_validate(
        {
            "request_id": "r",
            "status": "ERROR",
            "error": "Invalid status code: 422",
            "payload": {"detail": [{"loc": ["body", "seed"], "msg": "too big"}]},
        }
    )
    assert outcomes.from_webhook(error) == Failed("invalid_input", "seed: too big")
    infra = FalWebhook.model_validate(
        {
            "request_id": "r",
            "status": "ERROR",
            "error": "Invalid status code: 504",
            "payload": {"detail": "Request timed out", "error_type": "request_timeout"},
        }
    )
    assert outcomes.from_webhook(infra) == Failed("request_timeout", "Request timed out")
