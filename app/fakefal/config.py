"""The fake fal's knobs: latencies and fault rates, read from `FALRELAY_FAKEFAL_<NAME>`."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.fakefal.endpoints import Endpoint
from app.fakefal.failures import FAILURES

Rate = Annotated[float, Field(ge=0.0, le=1.0)]
Seconds = Annotated[float, Field(ge=0.0)]


class FakeFalConfig(BaseSettings):
    """Every knob of the fake fal. Changed at run time by `PATCH /_fake/config`; a request's
    latencies and faults are drawn when it is submitted, so a change affects new requests."""

    # extra="forbid": a misspelt knob in a PATCH is a 422, not a silent no-op.
    model_config = SettingsConfigDict(
        env_prefix="FALRELAY_FAKEFAL_", extra="forbid", validate_assignment=True
    )

    queue_latency: Seconds = 0.0
    run_latency: Seconds = 0.0
    # A run also lasts its model's typical run time at fal (the catalog's typical_seconds)
    # times this: 1 is fal's pace, 0.01 a hundred times faster, 0 run_latency alone.
    latency_scale: Seconds = 0.0
    # The account's concurrency limit: requests IN_PROGRESS at once; the rest wait IN_QUEUE,
    # normal priority before low, each in submit order. Unset: every request starts after
    # queue_latency (no limit).
    concurrency: int | None = Field(default=None, ge=1)
    error_rate: Rate = 0.0
    error_types: list[str] = Field(
        default_factory=lambda: [
            "validation",
            "request_timeout",
            "runner_disconnected",
            "internal_error",
        ],
        min_length=1,
    )
    submit_429_rate: Rate = 0.0
    submit_5xx_rate: Rate = 0.0
    webhook_drop_rate: Rate = 0.0
    webhook_duplicate_rate: Rate = 0.0
    webhook_delay: Seconds = 0.0
    webhook_reorder: Seconds = 0.0
    payload_error_rate: Rate = 0.0
    webhook_retry_delays: list[Seconds] = Field(default_factory=lambda: [0.5, 1.0, 2.0, 4.0])
    random_seed: int | None = None
    # What `X-Fal-Billable-Units` says on a successful result; unset: the number of images.
    billable_units: Decimal | None = Field(default=None, ge=0)
    user_id: str = Field(default="fake-user", min_length=1)
    # Beyond fal's own behaviour: how often an idle status stream says `: ping`, and how many
    # requests are remembered (the oldest completed ones are forgotten first, as fal forgets
    # results after an hour), so a long demo or load run does not grow without bound.
    stream_ping_interval: float = Field(default=10.0, gt=0.0)
    max_requests: int = Field(default=100_000, ge=1)
    # Model ids served beyond falrelay's catalog (`owner/app` covers every path of the app);
    # any other id is answered 404, as fal answers an app it does not host.
    models: list[str] = Field(default_factory=list)
    # Uploaded files kept at most (bytes, memory and temp dir together); the oldest go first.
    storage_max_bytes: int = Field(default=1024**3, ge=1)

    @field_validator("models")
    @classmethod
    def _model_ids(cls, value: list[str]) -> list[str]:
        bad = [name for name in value if Endpoint.parse(name) is None]
        if bad:
            raise ValueError(f"not model ids (owner/app[/path]): {bad}")
        return list(dict.fromkeys(name.strip("/") for name in value))

    def run_time(self, typical_seconds: float) -> float:
        """How long a run of a model that typically takes `typical_seconds` stays IN_PROGRESS."""
        return self.run_latency + self.latency_scale * typical_seconds

    @field_validator("error_types")
    @classmethod
    def _known_error_types(cls, value: list[str]) -> list[str]:
        unknown = [name for name in value if name not in FAILURES]
        if unknown:
            raise ValueError(
                f"unknown error types {unknown}; choose from {sorted(FAILURES)}",
            )
        return value
