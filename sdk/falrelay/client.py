"""`Client` and `AsyncClient`: the falrelay API over httpx.

Both run the operations of `falrelay.operations` through a transport (`falrelay.transport`)
with the same retry policy; what differs between them is only `await`. Resources mirror the
API: `jobs`, `webhook_endpoints`, `deliveries`, `models`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Generator,
    Iterator,
    Mapping,
    Sequence,
)
from datetime import datetime
from types import TracebackType
from typing import Any, Literal, TypeVar

import httpx
from pydantic import BaseModel

from falrelay import operations
from falrelay.errors import APIConnectionError, WaitTimeoutError
from falrelay.models import (
    Delivery,
    DeliveryStatus,
    EventType,
    Job,
    JobEvent,
    JobPriority,
    JobStatus,
    Model,
    Page,
    Usage,
    WebhookEndpoint,
    WebhookEndpointWithSecret,
)
from falrelay.operations import Operation
from falrelay.sse import EventFollower
from falrelay.transport import AsyncTransport, Config, SyncTransport

M = TypeVar("M", bound=BaseModel)

# `wait=True` waits this long at most; then WaitTimeoutError (the job goes on regardless).
DEFAULT_WAIT_TIMEOUT = 600.0


def _wait_timeout(wait: bool | float) -> float | None:
    """`wait=` of `jobs.create` as seconds, or None for no wait."""
    if wait is True:
        return DEFAULT_WAIT_TIMEOUT
    if wait is False or wait <= 0:
        return None
    return float(wait)


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def _updates(
    url: str | None,
    event_types: Sequence[EventType] | None,
    description: str | None,
    enabled: bool | None,
) -> dict[str, Any]:
    changes = {
        "url": url,
        "event_types": event_types,
        "description": description,
        "enabled": enabled,
    }
    return {name: value for name, value in changes.items() if value is not None}


PageOf = Callable[[str | None], Operation[Page[M]]]


# The sync client


def _pages(transport: SyncTransport, page_of: PageOf[M]) -> Iterator[M]:
    """Every item of a listing, a page at a time, following `next_cursor`."""
    cursor: str | None = None
    while True:
        page = transport.call(page_of(cursor))
        yield from page.data
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


class Jobs:
    def __init__(self, transport: SyncTransport) -> None:
        self._transport = transport

    def create(
        self,
        input: Mapping[str, Any],
        *,
        model: str | None = None,
        metadata: Mapping[str, str] | None = None,
        callback_url: str | None = None,
        priority: JobPriority | None = None,
        start_timeout: float | None = None,
        idempotency_key: str | None = None,
        wait: bool | float = False,
    ) -> Job:
        """Store a job. Resent after a failure with the same Idempotency-Key (a uuid4 unless
        you give one), so it is made once. `priority` orders your own jobs (`low` also waits
        behind normal work at fal); `start_timeout` is the seconds fal has to start it.
        `wait=True` (or seconds) returns it finished, or raises WaitTimeoutError."""
        timeout = _wait_timeout(wait)
        deadline = _deadline(timeout)
        job = self._transport.call(
            operations.create_job(
                input,
                model=model,
                metadata=metadata,
                callback_url=callback_url,
                priority=priority,
                start_timeout=start_timeout,
                idempotency_key=idempotency_key,
                prefer_wait=timeout,
            )
        )
        if timeout is None or job.is_terminal:
            return job
        return self._wait(job, deadline, timeout)

    def get(self, job_id: str) -> Job:
        return self._transport.call(operations.get_job(job_id))

    def list(
        self,
        *,
        status: JobStatus | str | None = None,
        model: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        limit: int | None = None,
    ) -> Iterator[Job]:
        """The client's jobs, newest first; pages (of `limit`) are fetched as you iterate."""

        def page_of(cursor: str | None) -> Operation[Page[Job]]:
            return operations.list_jobs(
                status=status,
                model=model,
                created_after=created_after,
                created_before=created_before,
                limit=limit,
                cursor=cursor,
            )

        return _pages(self._transport, page_of)

    def cancel(self, job_id: str) -> Job:
        return self._transport.call(operations.cancel_job(job_id))

    def delete(self, job_id: str) -> None:
        """Delete a finished job with its events, deliveries and files. NotFoundError for an
        unknown id; ConflictError while it is unfinished (cancel it first)."""
        self._transport.call(operations.delete_job(job_id))

    def events(
        self, job_id: str, *, last_event_id: str | None = None
    ) -> Generator[JobEvent, None, None]:
        """The job's events in order (after `last_event_id`), live, ending after the terminal
        one. A dropped connection is resumed where it broke. Leaving the loop early leaves the
        connection open until the generator is closed (`.close()`, or `contextlib.closing`)."""
        follower = EventFollower(
            job_id,
            last_event_id=last_event_id,
            max_failures=self._transport.config.retry.max_retries,
        )
        return self._follow(follower)

    def wait(self, job_id: str, *, timeout: float | None = DEFAULT_WAIT_TIMEOUT) -> Job:
        """The job once finished; WaitTimeoutError after `timeout` seconds (None: no limit)."""
        deadline = _deadline(timeout)
        return self._wait(self.get(job_id), deadline, timeout)

    def _wait(self, job: Job, deadline: float | None, waited: float | None) -> Job:
        if not job.is_terminal:
            follower = EventFollower(
                job.id, deadline=deadline, max_failures=self._transport.config.retry.max_retries
            )
            for event in self._follow(follower):
                if event.data.is_terminal:
                    return event.data
            job = self.get(job.id)
        if job.is_terminal:
            return job
        raise WaitTimeoutError(job, waited or 0.0)

    def _follow(self, follower: EventFollower) -> Generator[JobEvent, None, None]:
        while True:
            operation, timeout = follower.connect(self._transport.config.timeout)
            closed_cleanly = True
            try:
                with self._transport.stream(operation, timeout) as response:
                    for line in response.iter_lines():
                        event = follower.feed(line)
                        if event is not None:
                            yield event
                        if follower.finished or follower.should_reconnect():
                            break
            except APIConnectionError as exc:
                closed_cleanly = False
                if not follower.expired():
                    follower.failed(exc)
            if follower.finished or follower.expired():
                return
            # Closed with nothing new: either the job was over already (the stream of a
            # finished job is empty), or the server is going away; a read says which.
            if closed_cleanly and follower.received == 0 and self.get(follower.job_id).is_terminal:
                return
            time.sleep(follower.pause())


class WebhookEndpoints:
    def __init__(self, transport: SyncTransport) -> None:
        self._transport = transport

    def create(
        self,
        url: str,
        *,
        event_types: Sequence[EventType] | None = None,
        description: str | None = None,
    ) -> WebhookEndpointWithSecret:
        """Register a URL for job events; keep the returned `secret`, it is shown once."""
        return self._transport.call(
            operations.create_endpoint(url, event_types=event_types, description=description)
        )

    def get(self, endpoint_id: str) -> WebhookEndpoint:
        return self._transport.call(operations.get_endpoint(endpoint_id))

    def list(self, *, limit: int | None = None) -> Iterator[WebhookEndpoint]:
        return _pages(
            self._transport, lambda cursor: operations.list_endpoints(limit=limit, cursor=cursor)
        )

    def update(
        self,
        endpoint_id: str,
        *,
        url: str | None = None,
        event_types: Sequence[EventType] | None = None,
        description: str | None = None,
        enabled: bool | None = None,
    ) -> WebhookEndpoint:
        """Change what is given; `enabled=True` re-enables a disabled endpoint."""
        changes = _updates(url, event_types, description, enabled)
        return self._transport.call(operations.update_endpoint(endpoint_id, changes))

    def delete(self, endpoint_id: str) -> None:
        self._transport.call(operations.delete_endpoint(endpoint_id))

    def rotate_secret(self, endpoint_id: str, *, grace_period_seconds: int | None = None) -> str:
        """A new secret; the old one keeps signing too for the grace period (default 24 h)."""
        return self._transport.call(
            operations.rotate_endpoint_secret(endpoint_id, grace_period_seconds)
        )

    def test(self, endpoint_id: str) -> Delivery:
        """Send a `ping` event to the endpoint; returns its delivery, queued."""
        return self._transport.call(operations.test_endpoint(endpoint_id))

    def recover(self, endpoint_id: str, *, since: datetime) -> int:
        """Queue again every failed delivery since `since`; returns how many."""
        return self._transport.call(operations.recover_endpoint(endpoint_id, since))


class Deliveries:
    def __init__(self, transport: SyncTransport) -> None:
        self._transport = transport

    def get(self, delivery_id: str) -> Delivery:
        """One delivery with every attempt."""
        return self._transport.call(operations.get_delivery(delivery_id))

    def list(
        self,
        *,
        endpoint_id: str | None = None,
        job_id: str | None = None,
        status: DeliveryStatus | None = None,
        limit: int | None = None,
    ) -> Iterator[Delivery]:
        """The deliveries to one endpoint, or of one job's events; newest first."""

        def page_of(cursor: str | None) -> Operation[Page[Delivery]]:
            return operations.list_deliveries(
                endpoint_id=endpoint_id, job_id=job_id, status=status, limit=limit, cursor=cursor
            )

        page_of(None)  # a wrong combination of arguments fails here, not on first iteration
        return _pages(self._transport, page_of)

    def retry(self, delivery_id: str) -> Delivery:
        """Attempt the delivery again now (same event, same `webhook-id`)."""
        return self._transport.call(operations.retry_delivery(delivery_id))


class Models:
    def __init__(self, transport: SyncTransport) -> None:
        self._transport = transport

    def list(self) -> list[Model]:
        return self._transport.call(operations.list_models())


class Client:
    """The falrelay API. `api_key` and `base_url` default to FALRELAY_API_KEY and
    FALRELAY_URL (else http://127.0.0.1:8000, where `falrelay dev` listens). Reads and creates
    are retried `max_retries` times on connection failures, 429 and 502-504."""

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        timeout: float | httpx.Timeout | None = None,
        max_retries: int = 2,
        http_client: httpx.Client | None = None,
    ) -> None:
        self._transport = SyncTransport(
            Config.resolve(api_key, base_url, timeout, max_retries), http_client
        )
        self.jobs = Jobs(self._transport)
        self.webhook_endpoints = WebhookEndpoints(self._transport)
        self.deliveries = Deliveries(self._transport)
        self.models = Models(self._transport)

    @property
    def base_url(self) -> str:
        return self._transport.config.base_url

    def webhook_secret(self) -> str:
        """The client's default secret: it signs deliveries to jobs' own `callback_url`."""
        return self._transport.call(operations.webhook_secret())

    def rotate_webhook_secret(self, *, grace_period_seconds: int | None = None) -> str:
        """A new default secret; the old one keeps signing too for the grace period (default
        24 h)."""
        return self._transport.call(operations.rotate_webhook_secret(grace_period_seconds))

    def usage(
        self,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        group_by: Literal["day", "model"] = "day",
    ) -> Usage:
        """Jobs, images and cost of the jobs created in [start, end) (default: this UTC
        month), what unfinished ones reserve, the monthly budget, and per day or model."""
        return self._transport.call(operations.usage(start=start, end=end, group_by=group_by))

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# The async client: the same, awaited


async def _apages(transport: AsyncTransport, page_of: PageOf[M]) -> AsyncIterator[M]:
    cursor: str | None = None
    while True:
        page = await transport.call(page_of(cursor))
        for item in page.data:
            yield item
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


class AsyncJobs:
    def __init__(self, transport: AsyncTransport) -> None:
        self._transport = transport

    async def create(
        self,
        input: Mapping[str, Any],
        *,
        model: str | None = None,
        metadata: Mapping[str, str] | None = None,
        callback_url: str | None = None,
        priority: JobPriority | None = None,
        start_timeout: float | None = None,
        idempotency_key: str | None = None,
        wait: bool | float = False,
    ) -> Job:
        """See `Jobs.create`."""
        timeout = _wait_timeout(wait)
        deadline = _deadline(timeout)
        job = await self._transport.call(
            operations.create_job(
                input,
                model=model,
                metadata=metadata,
                callback_url=callback_url,
                priority=priority,
                start_timeout=start_timeout,
                idempotency_key=idempotency_key,
                prefer_wait=timeout,
            )
        )
        if timeout is None or job.is_terminal:
            return job
        return await self._wait(job, deadline, timeout)

    async def get(self, job_id: str) -> Job:
        return await self._transport.call(operations.get_job(job_id))

    def list(
        self,
        *,
        status: JobStatus | str | None = None,
        model: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[Job]:
        """See `Jobs.list`: `async for job in client.jobs.list(...)`."""

        def page_of(cursor: str | None) -> Operation[Page[Job]]:
            return operations.list_jobs(
                status=status,
                model=model,
                created_after=created_after,
                created_before=created_before,
                limit=limit,
                cursor=cursor,
            )

        return _apages(self._transport, page_of)

    async def cancel(self, job_id: str) -> Job:
        return await self._transport.call(operations.cancel_job(job_id))

    async def delete(self, job_id: str) -> None:
        """See `Jobs.delete`."""
        await self._transport.call(operations.delete_job(job_id))

    def events(
        self, job_id: str, *, last_event_id: str | None = None
    ) -> AsyncGenerator[JobEvent, None]:
        """See `Jobs.events`: `async for event in client.jobs.events(job_id)`; wrap it in
        `contextlib.aclosing` to close the connection when you leave the loop early."""
        follower = EventFollower(
            job_id,
            last_event_id=last_event_id,
            max_failures=self._transport.config.retry.max_retries,
        )
        return self._follow(follower)

    # `timeout` as in `Jobs.wait`, so code moves between the two clients unchanged.
    async def wait(
        self,
        job_id: str,
        *,
        timeout: float | None = DEFAULT_WAIT_TIMEOUT,  # noqa: ASYNC109
    ) -> Job:
        """See `Jobs.wait`."""
        deadline = _deadline(timeout)
        return await self._wait(await self.get(job_id), deadline, timeout)

    async def _wait(self, job: Job, deadline: float | None, waited: float | None) -> Job:
        if not job.is_terminal:
            follower = EventFollower(
                job.id, deadline=deadline, max_failures=self._transport.config.retry.max_retries
            )
            async for event in self._follow(follower):
                if event.data.is_terminal:
                    return event.data
            job = await self.get(job.id)
        if job.is_terminal:
            return job
        raise WaitTimeoutError(job, waited or 0.0)

    async def _follow(self, follower: EventFollower) -> AsyncGenerator[JobEvent, None]:
        while True:
            operation, timeout = follower.connect(self._transport.config.timeout)
            closed_cleanly = True
            try:
                async with self._transport.stream(operation, timeout) as response:
                    async for line in response.aiter_lines():
                        event = follower.feed(line)
                        if event is not None:
                            yield event
                        if follower.finished or follower.should_reconnect():
                            break
            except APIConnectionError as exc:
                closed_cleanly = False
                if not follower.expired():
                    follower.failed(exc)
            if follower.finished or follower.expired():
                return
            if (
                closed_cleanly
                and follower.received == 0
                and (await self.get(follower.job_id)).is_terminal
            ):
                return
            await asyncio.sleep(follower.pause())


class AsyncWebhookEndpoints:
    def __init__(self, transport: AsyncTransport) -> None:
        self._transport = transport

    async def create(
        self,
        url: str,
        *,
        event_types: Sequence[EventType] | None = None,
        description: str | None = None,
    ) -> WebhookEndpointWithSecret:
        return await self._transport.call(
            operations.create_endpoint(url, event_types=event_types, description=description)
        )

    async def get(self, endpoint_id: str) -> WebhookEndpoint:
        return await self._transport.call(operations.get_endpoint(endpoint_id))

    def list(self, *, limit: int | None = None) -> AsyncIterator[WebhookEndpoint]:
        return _apages(
            self._transport, lambda cursor: operations.list_endpoints(limit=limit, cursor=cursor)
        )

    async def update(
        self,
        endpoint_id: str,
        *,
        url: str | None = None,
        event_types: Sequence[EventType] | None = None,
        description: str | None = None,
        enabled: bool | None = None,
    ) -> WebhookEndpoint:
        changes = _updates(url, event_types, description, enabled)
        return await self._transport.call(operations.update_endpoint(endpoint_id, changes))

    async def delete(self, endpoint_id: str) -> None:
        await self._transport.call(operations.delete_endpoint(endpoint_id))

    async def rotate_secret(
        self, endpoint_id: str, *, grace_period_seconds: int | None = None
    ) -> str:
        return await self._transport.call(
            operations.rotate_endpoint_secret(endpoint_id, grace_period_seconds)
        )

    async def test(self, endpoint_id: str) -> Delivery:
        return await self._transport.call(operations.test_endpoint(endpoint_id))

    async def recover(self, endpoint_id: str, *, since: datetime) -> int:
        return await self._transport.call(operations.recover_endpoint(endpoint_id, since))


class AsyncDeliveries:
    def __init__(self, transport: AsyncTransport) -> None:
        self._transport = transport

    async def get(self, delivery_id: str) -> Delivery:
        return await self._transport.call(operations.get_delivery(delivery_id))

    def list(
        self,
        *,
        endpoint_id: str | None = None,
        job_id: str | None = None,
        status: DeliveryStatus | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[Delivery]:
        def page_of(cursor: str | None) -> Operation[Page[Delivery]]:
            return operations.list_deliveries(
                endpoint_id=endpoint_id, job_id=job_id, status=status, limit=limit, cursor=cursor
            )

        page_of(None)
        return _apages(self._transport, page_of)

    async def retry(self, delivery_id: str) -> Delivery:
        return await self._transport.call(operations.retry_delivery(delivery_id))


class AsyncModels:
    def __init__(self, transport: AsyncTransport) -> None:
        self._transport = transport

    async def list(self) -> list[Model]:
        return await self._transport.call(operations.list_models())


class AsyncClient:
    """`Client`, for asyncio: the same resources and methods, awaited."""

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        timeout: float | httpx.Timeout | None = None,
        max_retries: int = 2,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self._transport = AsyncTransport(
            Config.resolve(api_key, base_url, timeout, max_retries), http_client
        )
        self.jobs = AsyncJobs(self._transport)
        self.webhook_endpoints = AsyncWebhookEndpoints(self._transport)
        self.deliveries = AsyncDeliveries(self._transport)
        self.models = AsyncModels(self._transport)

    @property
    def base_url(self) -> str:
        return self._transport.config.base_url

    async def webhook_secret(self) -> str:
        return await self._transport.call(operations.webhook_secret())

    async def rotate_webhook_secret(self, *, grace_period_seconds: int | None = None) -> str:
        return await self._transport.call(operations.rotate_webhook_secret(grace_period_seconds))

    async def usage(
        self,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        group_by: Literal["day", "model"] = "day",
    ) -> Usage:
        return await self._transport.call(operations.usage(start=start, end=end, group_by=group_by))

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
