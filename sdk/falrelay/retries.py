"""When a failed call is sent again, and after how long: the one policy both clients follow."""

from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass

import httpx

from falrelay.operations import Resend

# Answers that say "not now" rather than "not this": the request did not take effect, or
# (for a create) its Idempotency-Key makes a second send harmless.
RETRY_STATUSES = frozenset({429, 502, 503, 504})
# A create whose key's first request is still being stored: the service asks to retry.
IN_FLIGHT = "idempotency-key-in-flight"
# Failures that happen before a byte of the request is sent, so any call may be resent.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 2
    initial_delay: float = 0.5
    max_delay: float = 8.0
    # A Retry-After longer than this is not waited for: the error is raised instead.
    max_retry_after: float = 60.0

    def delay(
        self,
        resend: Resend,
        attempt: int,
        *,
        response: httpx.Response | None = None,
        error: Exception | None = None,
    ) -> float | None:
        """Seconds to wait before attempt `attempt + 1`, or None to give up. `attempt`
        counts from 0 (the first send)."""
        if attempt >= self.max_retries:
            return None
        if error is not None:
            sendable = resend is Resend.SAFE or isinstance(error, NOT_SENT)
            return self._backoff(attempt) if sendable else None
        if response is None or resend is not Resend.SAFE or not _retryable(response):
            return None
        retry_after = _retry_after(response)
        if retry_after is None:
            return self._backoff(attempt)
        return retry_after if retry_after <= self.max_retry_after else None

    def _backoff(self, attempt: int) -> float:
        # Exponential with jitter, so clients that failed together do not return together.
        ceiling = min(self.max_delay, self.initial_delay * 2**attempt)
        return random.uniform(ceiling / 2, ceiling)


def _retryable(response: httpx.Response) -> bool:
    if response.status_code in RETRY_STATUSES:
        return True
    if response.status_code == 409:
        try:
            return str(response.json().get("type", "")).endswith(IN_FLIGHT)
        except ValueError:
            return False
    return False


def _retry_after(response: httpx.Response) -> float | None:
    """Retry-After as seconds (a number, or an HTTP date), None when absent or unreadable."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
