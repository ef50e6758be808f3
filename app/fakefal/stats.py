"""What the fake has done since it started (or was last reset), for tests and chaos runs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass
class Stats:
    submitted: int = 0  # submissions accepted: a request was created
    runs: int = 0  # sync runs and streams accepted (fal.run, /stream)
    submit_429: int = 0  # refused with 429 (drawn, or over fal_max_queue_length)
    submit_5xx: int = 0  # refused with an ingress 502/503
    completed_ok: int = 0
    completed_error: int = 0
    completed_cancelled: int = 0
    webhooks_sent: int = 0  # deliveries a receiver answered with 2xx (a duplicate counts again)
    webhook_attempts: int = 0
    webhook_failed_attempts: int = 0  # non-2xx answers, connection errors, timeouts
    webhooks_abandoned: int = 0  # retries exhausted, or a redirect (never followed)
    webhooks_dropped: int = 0
    webhooks_duplicated: int = 0
    webhooks_payload_error: int = 0
    files_rendered: int = 0
    files_uploaded: int = 0  # uploads finished (a direct upload, a PUT, a completed multipart)

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    def reset(self) -> None:
        for field in dataclasses.fields(self):
            setattr(self, field.name, 0)
