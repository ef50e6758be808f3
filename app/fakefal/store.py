"""The fake's queue: each request's timeline and fate, and what its status says at a moment.

A request's state is never stored; it is read off the clock: IN_QUEUE until
`queued_at + queue_latency`, IN_PROGRESS for `run_latency` more, then COMPLETED (at once when
cancelled). Latencies and faults are drawn at submit, so a config change affects new requests.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from app.fakefal.endpoints import Endpoint
from app.fakefal.failures import CANCELLED, START_TIMEOUT, Failure
from app.fakefal.models import Generation

# How the request came: a queue submit, a sync run (`fal.run`) or a stream (`/stream`). All three
# are the same request to fal; only the queue's are reachable by the queue API.
Mode = Literal["queue", "run", "stream"]


class State(StrEnum):
    IN_QUEUE = "IN_QUEUE"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"


@dataclass(frozen=True, slots=True)
class WebhookPlan:
    """The faults drawn for a request's webhook."""

    drop: bool = False
    duplicate: bool = False
    payload_error: bool = False
    delay: float = 0.0


NO_WEBHOOK_FAULTS = WebhookPlan()


@dataclass(eq=False, slots=True)
class FakeRequest:
    id: str
    endpoint: Endpoint
    input: Any
    fal_webhook: str | None
    # Where the submit reached the fake (with any mount prefix): every URL it hands out for
    # this request starts here.
    base_url: str
    submitted_at: float  # wall clock, for reports and log timestamps
    queued_at: float  # monotonic, for the timeline
    queue_latency: float
    run_latency: float
    outcome: Generation | Failure
    webhook: WebhookPlan = field(default_factory=WebhookPlan)
    # `X-Fal-Queue-Priority` and `X-Fal-Request-Timeout` as the submit gave them.
    priority: str = "normal"
    start_timeout: float | None = None
    # Under the account's concurrency limit (submitted while `concurrency` was set): it starts
    # when the fake gives it a slot (slot_at), not by the clock alone.
    held: bool = False
    mode: Mode = "queue"
    slot_at: float | None = None
    cancelled_at: float | None = None
    # Set once, when the request's completion has been counted and its webhook started.
    finished: bool = False
    # Until it finishes: the task that finishes it when its timeline says.
    timer: asyncio.Task[None] | None = None
    # What became of its webhook: when a receiver answered 2xx (wall clock; twice for a
    # duplicate), and whether the fake gave up on a copy. Chaos runs read these to tell a
    # duplicate submission that fal's protocol allows from one it does not.
    webhook_delivered_at: tuple[float, ...] = ()
    webhook_abandoned: bool = False
    # `changed` and `done` are made when first waited on: a request nobody waits for (a
    # webhook's) keeps no events. Every object a kept request holds is one more for each of
    # the garbage collector's full passes, and the fake keeps up to `max_requests` of them.
    _changed: asyncio.Event | None = field(default=None, init=False, repr=False)
    _done: asyncio.Event | None = field(default=None, init=False, repr=False)
    _changed_set: bool = field(default=False, init=False, repr=False)
    _done_set: bool = field(default=False, init=False, repr=False)

    @property
    def changed(self) -> asyncio.Event:
        """Wakes status streams when a cancel completes the request ahead of its timeline."""
        if self._changed is None:
            self._changed = asyncio.Event()
            if self._changed_set:
                self._changed.set()
        return self._changed

    @property
    def done(self) -> asyncio.Event:
        """Set once it has finished (or been forgotten by a reset): a sync run waits on it."""
        if self._done is None:
            self._done = asyncio.Event()
            if self._done_set:
                self._done.set()
        return self._done

    def signal_changed(self) -> None:
        self._changed_set = True
        if self._changed is not None:
            self._changed.set()

    def signal_done(self) -> None:
        self._done_set = True
        if self._done is not None:
            self._done.set()

    @property
    def ready_at(self) -> float:
        """When it could start, were there no concurrency limit."""
        return self.queued_at + self.queue_latency

    @property
    def started_at(self) -> float:
        if self.held:
            return self.slot_at if self.slot_at is not None else math.inf
        return self.ready_at

    @property
    def start_deadline(self) -> float | None:
        return None if self.start_timeout is None else self.queued_at + self.start_timeout

    @property
    def timed_out(self) -> bool:
        """Not started by its start deadline (and not cancelled before): it ends there, 504."""
        deadline = self.start_deadline
        return self.cancelled_at is None and deadline is not None and self.started_at > deadline

    @property
    def completes_at(self) -> float:
        if self.cancelled_at is not None:
            return self.cancelled_at
        deadline = self.start_deadline
        if deadline is not None and self.started_at > deadline:
            return deadline
        return self.started_at + self.run_latency

    def state(self, now: float) -> State:
        if now >= self.completes_at:
            return State.COMPLETED
        if now >= self.started_at:
            return State.IN_PROGRESS
        return State.IN_QUEUE

    def ran(self) -> bool:
        """Whether the request left the queue (a cancel can take it out before)."""
        if self.timed_out:
            return False
        return self.cancelled_at is None or self.cancelled_at > self.started_at

    def result(self) -> Generation | Failure:
        """How the request ends: its drawn outcome, unless it was cancelled or missed its start
        deadline first."""
        if self.cancelled_at is not None:
            return CANCELLED
        return START_TIMEOUT if self.timed_out else self.outcome

    def output(self) -> dict[str, Any]:
        """The output JSON of a successful request (built when asked, not kept: see `_done`)."""
        outcome = self.result()
        assert isinstance(outcome, Generation)
        return outcome.output(f"{self.base_url}/files")

    @property
    def response_url(self) -> str:
        return f"{self.base_url}/{self.endpoint.app_id}/requests/{self.id}"

    def urls(self) -> dict[str, str]:
        return {
            "response_url": self.response_url,
            "status_url": f"{self.response_url}/status",
            "cancel_url": f"{self.response_url}/cancel",
        }

    def status_body(self, now: float, *, queue_position: int, with_logs: bool) -> dict[str, Any]:
        state = self.state(now)
        body: dict[str, Any] = {"status": state.value, "request_id": self.id, **self.urls()}
        if state is State.IN_QUEUE:
            return {**body, "queue_position": queue_position, "logs": None, "metrics": {}}
        body["logs"] = self.logs(now) if with_logs else None
        if state is State.IN_PROGRESS:
            return {**body, "metrics": {}}
        ran = self.completes_at - self.started_at
        body["metrics"] = {"inference_time": round(ran, 6)} if self.ran() else {}
        outcome = self.result()
        if isinstance(outcome, Failure):
            body["error"] = outcome.error
            body["error_type"] = outcome.error_type
        return body

    def logs(self, now: float) -> list[dict[str, Any]]:
        """What the model printed up to `now`: a start line, then how it ended."""
        if now < self.started_at or not self.ran():
            return []
        lines = [self._log(self.started_at, "INFO", f"Running {self.endpoint.model_id}")]
        if self.state(now) is not State.COMPLETED:
            return lines
        outcome = self.result()
        if isinstance(outcome, Failure):
            lines.append(self._log(self.completes_at, "ERROR", outcome.error))
        else:
            lines.append(self._log(self.completes_at, "INFO", f"Generated {outcome.describe()}"))
        return lines

    def _log(self, at: float, level: str, message: str) -> dict[str, Any]:
        wall = self.submitted_at + (at - self.queued_at)
        timestamp = datetime.fromtimestamp(wall, UTC).replace(tzinfo=None).isoformat()
        return {"message": message, "level": level, "source": "user", "timestamp": timestamp}

    def summary(self, now: float) -> dict[str, Any]:
        """One line of `GET /_fake/requests`."""
        outcome = self.result()
        return {
            "id": self.id,
            "model": self.endpoint.model_id,
            "mode": self.mode,
            "input": self.input,
            "fal_webhook": self.fal_webhook,
            "state": self.state(now).value,
            "submitted_at": datetime.fromtimestamp(self.submitted_at, UTC).isoformat(),
            "priority": self.priority,
            "start_timeout": self.start_timeout,
            "started_at": (
                None
                if math.isinf(self.started_at) or self.timed_out
                else datetime.fromtimestamp(
                    self.submitted_at + (self.started_at - self.queued_at), UTC
                ).isoformat()
            ),
            "cancelled": self.cancelled_at is not None,
            "error_type": outcome.error_type if isinstance(outcome, Failure) else None,
            "failed": isinstance(outcome, Failure),
            "webhook": {
                "dropped": self.webhook.drop,
                "duplicated": self.webhook.duplicate,
                "payload_error": self.webhook.payload_error,
                "delay": self.webhook.delay,
                "delivered_at": [
                    datetime.fromtimestamp(at, UTC).isoformat() for at in self.webhook_delivered_at
                ],
                "abandoned": self.webhook_abandoned,
            },
        }


class RequestStore:
    """Requests by id, oldest first, at most `max_requests` (completed ones are forgotten first,
    as fal forgets results after an hour)."""

    def __init__(self) -> None:
        self._requests: dict[str, FakeRequest] = {}
        # Per app, the requests that may still be waiting, in submit order: short, since
        # requests leave it as they start.
        self._waiting: dict[str, list[FakeRequest]] = {}

    def __len__(self) -> int:
        return len(self._requests)

    def __iter__(self) -> Iterator[FakeRequest]:
        return iter(list(self._requests.values()))

    def get(self, request_id: str) -> FakeRequest | None:
        return self._requests.get(request_id)

    def add(self, request: FakeRequest, *, max_requests: int) -> None:
        self._requests[request.id] = request
        self._waiting.setdefault(request.endpoint.app_id, []).append(request)
        if len(self._requests) > max_requests:
            self._forget_finished(len(self._requests) - max_requests)

    def waiting(self, app_id: str, now: float) -> list[FakeRequest]:
        """The app's requests still IN_QUEUE, in submit order."""
        queue = [r for r in self._waiting.get(app_id, []) if r.state(now) is State.IN_QUEUE]
        if queue:
            self._waiting[app_id] = queue
        else:
            self._waiting.pop(app_id, None)
        return queue

    def queue_position(self, request: FakeRequest, now: float) -> int:
        queue = self.waiting(request.endpoint.app_id, now)
        return queue.index(request) if request in queue else 0

    def clear(self) -> None:
        self._requests.clear()
        self._waiting.clear()

    def _forget_finished(self, count: int) -> None:
        # Oldest first; a request still running is kept even past the limit.
        finished = (r for r in self._requests.values() if r.finished)
        for request in list(itertools.islice(finished, count)):
            del self._requests[request.id]
