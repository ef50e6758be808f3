"""Reading a job's event stream (Server-Sent Events), across reconnections.

Both clients feed the lines they read into the same `EventFollower`; it decides what each line
means, where a new connection resumes (`Last-Event-ID`), and when a wait must reconnect so that
no read outlives its deadline. The loops that do the I/O stay a few lines each.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx

from falrelay.models import TERMINAL_EVENT_TYPES, JobEvent
from falrelay.operations import Operation, job_events
from falrelay.transport import with_read_timeout

# The service sends `: keep-alive` every 15 s; a stream silent for longer than this is dead.
STREAM_READ_TIMEOUT = 45.0
DEFAULT_RECONNECT_DELAY = 1.0


@dataclass(frozen=True)
class ServerSentEvent:
    event: str
    data: str
    id: str | None


class SSEDecoder:
    """The event stream format (WHATWG HTML, "server-sent events"), one line at a time."""

    def __init__(self) -> None:
        self.last_event_id: str | None = None
        self.retry: float | None = None  # seconds, when the server said
        self._event = ""
        self._data: list[str] = []

    def decode(self, line: str) -> ServerSentEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment: the keep-alive
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self.last_event_id = value
        elif name == "retry" and value.isdigit():
            self.retry = int(value) / 1000
        return None

    def discard_partial(self) -> None:
        """Forget an event cut off by a broken connection: it is sent again in full."""
        self._event, self._data = "", []

    def _dispatch(self) -> ServerSentEvent | None:
        event, data = self._event or "message", self._data
        self._event, self._data = "", []
        if not data:
            return None
        return ServerSentEvent(event, "\n".join(data), self.last_event_id)


class EventFollower:
    """One job's events, from `last_event_id` on, over as many connections as it takes,
    until the terminal event or `deadline` (a `time.monotonic()` value)."""

    def __init__(
        self,
        job_id: str,
        *,
        last_event_id: str | None = None,
        deadline: float | None = None,
        max_failures: int = 2,
    ) -> None:
        self.job_id = job_id
        self.deadline = deadline
        self.finished = False  # the terminal event has been seen
        self.received = 0  # events on the current connection
        self._decoder = SSEDecoder()
        self._decoder.last_event_id = last_event_id
        self._max_failures = max_failures
        self._failures = 0
        self._read_timeout = STREAM_READ_TIMEOUT
        self._bounded = False

    def connect(self, timeout: httpx.Timeout) -> tuple[Operation[None], httpx.Timeout]:
        """The request for the next connection, resuming after the last event seen, and its
        timeout. Every read of it ends by the deadline: its read timeout is the time left."""
        self.received = 0
        self._decoder.discard_partial()
        remaining = self.remaining()
        self._bounded = remaining is not None and remaining <= STREAM_READ_TIMEOUT
        self._read_timeout = (
            max(remaining, 0.001)
            if remaining is not None and self._bounded
            else STREAM_READ_TIMEOUT
        )
        operation = job_events(self.job_id, self._decoder.last_event_id)
        return operation, with_read_timeout(timeout, self._read_timeout)

    def feed(self, line: str) -> JobEvent | None:
        message = self._decoder.decode(line)
        if message is None or not message.event.startswith("job."):
            return None
        event = JobEvent.model_validate_json(message.data)
        event.id = message.id
        self.received += 1
        self._failures = 0
        self.finished = event.type in TERMINAL_EVENT_TYPES
        return event

    def should_reconnect(self) -> bool:
        """Leave this connection now: the deadline is nearer than its read timeout (the next
        connection's will be the time left), or has passed."""
        remaining = self.remaining()
        if remaining is None:
            return False
        return remaining <= 0 or (not self._bounded and remaining < self._read_timeout)

    def failed(self, error: Exception) -> None:
        """A connection broke. Raises `error` once too many broke in a row with no event."""
        self._failures += 1
        if self._failures > self._max_failures:
            raise error

    def pause(self) -> float:
        """How long to wait before reconnecting: the server's `retry`, backed off after
        failures, never past the deadline."""
        delay = (self._decoder.retry or DEFAULT_RECONNECT_DELAY) * (1 << max(self._failures - 1, 0))
        remaining = self.remaining()
        return delay if remaining is None else max(0.0, min(delay, remaining))

    def remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def expired(self) -> bool:
        remaining = self.remaining()
        return remaining is not None and remaining <= 0
