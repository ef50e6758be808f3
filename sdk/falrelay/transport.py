"""Sending operations over httpx: the request each one makes, retries, and errors. One loop
for the sync client and one for the async client, both driven by the same `RetryPolicy`."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from importlib import metadata
from typing import TypeVar

import httpx

from falrelay.errors import APIConnectionError, APITimeoutError, FalrelayError, error_for
from falrelay.operations import Operation
from falrelay.retries import RetryPolicy

T = TypeVar("T")

DEFAULT_BASE_URL = "http://127.0.0.1:8000"  # where `falrelay dev` listens
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)


def _version() -> str:
    try:
        return metadata.version("falrelay")
    except metadata.PackageNotFoundError:
        return "0"


USER_AGENT = f"falrelay-python/{_version()}"


@dataclass(frozen=True)
class Config:
    base_url: str
    api_key: str
    timeout: httpx.Timeout
    retry: RetryPolicy

    @classmethod
    def resolve(
        cls,
        api_key: str | None,
        base_url: str | None,
        timeout: float | httpx.Timeout | None,
        max_retries: int,
    ) -> Config:
        """Arguments first, then FALRELAY_API_KEY and FALRELAY_URL."""
        key = api_key or os.environ.get("FALRELAY_API_KEY")
        if not key:
            raise FalrelayError("no API key: pass api_key=... or set FALRELAY_API_KEY")
        url = base_url or os.environ.get("FALRELAY_URL") or DEFAULT_BASE_URL
        if timeout is None:
            resolved = DEFAULT_TIMEOUT
        elif isinstance(timeout, httpx.Timeout):
            resolved = timeout
        else:
            resolved = httpx.Timeout(timeout)
        return cls(url.rstrip("/"), key, resolved, RetryPolicy(max_retries=max_retries))

    def timeout_for(self, operation: Operation[T]) -> httpx.Timeout:
        if not operation.held_for or self.timeout.read is None:
            return self.timeout
        return with_read_timeout(self.timeout, self.timeout.read + operation.held_for)

    def build(
        self,
        http: httpx.Client | httpx.AsyncClient,
        operation: Operation[T],
        timeout: httpx.Timeout,
    ) -> httpx.Request:
        headers = {
            "Authorization": f"Bearer {self.api_key}",
            "User-Agent": USER_AGENT,
            **operation.headers,
        }
        return http.build_request(
            operation.method,
            self.base_url + operation.path,
            params=operation.params or None,
            json=operation.json,
            headers=headers,
            timeout=timeout,
        )


def with_read_timeout(timeout: httpx.Timeout, read: float | None) -> httpx.Timeout:
    return httpx.Timeout(connect=timeout.connect, read=read, write=timeout.write, pool=timeout.pool)


def _connection_error(exc: httpx.TransportError) -> APIConnectionError:
    cls = APITimeoutError if isinstance(exc, httpx.TimeoutException) else APIConnectionError
    return cls(f"{type(exc).__name__}: {exc}", request=_request_of(exc))


def _request_of(exc: httpx.TransportError) -> httpx.Request | None:
    try:
        return exc.request
    except RuntimeError:  # raised when no request was attached
        return None


class SyncTransport:
    def __init__(self, config: Config, http: httpx.Client | None) -> None:
        self.config = config
        self._owned = http is None
        self.http = http or httpx.Client(timeout=config.timeout)

    def call(self, operation: Operation[T]) -> T:
        response = self._send(operation, self.config.timeout_for(operation), stream=False)
        return operation.parse(response)

    @contextmanager
    def stream(self, operation: Operation[T], timeout: httpx.Timeout) -> Iterator[httpx.Response]:
        """The answer, open for reading line by line; a break in it is an APIConnectionError."""
        response = self._send(operation, timeout, stream=True)
        try:
            yield response
        except httpx.TransportError as exc:
            raise _connection_error(exc) from exc
        finally:
            response.close()

    def _send(
        self, operation: Operation[T], timeout: httpx.Timeout, *, stream: bool
    ) -> httpx.Response:
        policy = self.config.retry
        attempt = 0
        while True:
            request = self.config.build(self.http, operation, timeout)
            try:
                response = self.http.send(request, stream=stream)
            except httpx.TransportError as exc:
                delay = policy.delay(operation.resend, attempt, error=exc)
                if delay is None:
                    raise _connection_error(exc) from exc
            else:
                if response.is_success:
                    return response
                try:
                    response.read()
                except httpx.TransportError as exc:
                    raise _connection_error(exc) from exc
                finally:
                    response.close()
                delay = policy.delay(operation.resend, attempt, response=response)
                if delay is None:
                    raise error_for(response)
            time.sleep(delay)
            attempt += 1

    def close(self) -> None:
        if self._owned:
            self.http.close()


class AsyncTransport:
    def __init__(self, config: Config, http: httpx.AsyncClient | None) -> None:
        self.config = config
        self._owned = http is None
        self.http = http or httpx.AsyncClient(timeout=config.timeout)

    async def call(self, operation: Operation[T]) -> T:
        response = await self._send(operation, self.config.timeout_for(operation), stream=False)
        return operation.parse(response)

    @asynccontextmanager
    async def stream(
        self, operation: Operation[T], timeouts: httpx.Timeout
    ) -> AsyncIterator[httpx.Response]:
        response = await self._send(operation, timeouts, stream=True)
        try:
            yield response
        except httpx.TransportError as exc:
            raise _connection_error(exc) from exc
        finally:
            await response.aclose()

    async def _send(
        self, operation: Operation[T], timeouts: httpx.Timeout, *, stream: bool
    ) -> httpx.Response:
        policy = self.config.retry
        attempt = 0
        while True:
            request = self.config.build(self.http, operation, timeouts)
            try:
                response = await self.http.send(request, stream=stream)
            except httpx.TransportError as exc:
                delay = policy.delay(operation.resend, attempt, error=exc)
                if delay is None:
                    raise _connection_error(exc) from exc
            else:
                if response.is_success:
                    return response
                try:
                    await response.aread()
                except httpx.TransportError as exc:
                    raise _connection_error(exc) from exc
                finally:
                    await response.aclose()
                delay = policy.delay(operation.resend, attempt, response=response)
                if delay is None:
                    raise error_for(response)
            await asyncio.sleep(delay)
            attempt += 1

    async def aclose(self) -> None:
        if self._owned:
            await self.http.aclose()
