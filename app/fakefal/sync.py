"""fal's sync host (`https://fal.run/`), served under `/run/`: runs and streams.

A run and a queue submit are the same request to fal, so both go through the fake's one queue
(latencies, concurrency, priority, `X-Fal-Request-Timeout`, faults); a run only answers the caller
itself once the request completes:

- `POST /run/{model_id}` answers what the queue's result URL would: the output with
  `x-fal-request-id` and `X-Fal-Billable-Units`, or the model's error.
- `POST /run/{model_id}/stream` (fal_client's `stream(path="/stream")`, `fal.stream` in JS)
  answers `text/event-stream` once the model starts: partial events, then the output as the last
  event. A request that fails answers its error as a plain response instead, as an app that raises
  before streaming does.

The fake's models have no intermediate outputs, so a partial event says how far the run is:
`{"partial": true, "progress": 0.0}` when it starts and `0.5` halfway (when it takes any time).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from app.fakefal.endpoints import Endpoint
from app.fakefal.failures import Failure
from app.fakefal.store import FakeRequest

if TYPE_CHECKING:
    from app.fakefal.server import FakeFal

STREAM_SUFFIX = "/stream"
REQUEST_ID_HEADER = "x-fal-request-id"
BILLABLE_UNITS_HEADER = "X-Fal-Billable-Units"


def routes(fake: FakeFal) -> list[BaseRoute]:
    async def run(request: Request) -> Response:
        if (refusal := fake.refuse_key(request)) is not None:
            return refusal
        path: str = request.path_params["path"].strip("/")
        streaming = _is_stream(fake, path)
        model_path = path.removesuffix(STREAM_SUFFIX) if streaming else path
        accepted = await fake.accept(request, model_path, mode="stream" if streaming else "run")
        if isinstance(accepted, Response):
            return accepted
        fake_request, _ = accepted
        if streaming:
            await fake.wait_started(fake_request)
            if not _fails(fake_request):
                return _event_stream(fake, fake_request)
        if not await fake.wait_finished(fake_request):
            return _forgotten(fake_request)
        return fake.result_response(fake_request)

    return [Route("/run/{path:path}", run, methods=["POST"])]


def _is_stream(fake: FakeFal, path: str) -> bool:
    """`{model}/stream`, unless the whole path is itself a model id the fake knows by name."""
    if not path.endswith(STREAM_SUFFIX) or path in fake.catalog or path in fake.config.models:
        return False
    endpoint = Endpoint.parse(path.removesuffix(STREAM_SUFFIX))
    return endpoint is not None and fake.serves(endpoint)


def _fails(fake_request: FakeRequest) -> bool:
    """Whether the request, now started (or ended before it could), ends with an error."""
    return isinstance(fake_request.result(), Failure)


def _forgotten(fake_request: FakeRequest) -> Response:
    detail = "The request was dropped by a reset of the fake"
    return JSONResponse({"detail": detail}, 503, headers={REQUEST_ID_HEADER: fake_request.id})


def _event_stream(fake: FakeFal, fake_request: FakeRequest) -> Response:
    async def events() -> AsyncIterator[str]:
        yield _event({"partial": True, "progress": 0.0})
        started, ends = fake_request.started_at, fake_request.completes_at
        if ends > started:  # the same events however late this loop runs
            await _until(fake_request, started + (ends - started) / 2)
            yield _event({"partial": True, "progress": 0.5})
        if not await fake.wait_finished(fake_request):
            return  # forgotten by a reset: the stream just ends
        outcome = fake_request.result()
        yield _event(outcome.body if isinstance(outcome, Failure) else fake_request.output())

    outcome = fake_request.result()
    headers = {"Cache-Control": "no-cache", REQUEST_ID_HEADER: fake_request.id}
    if not isinstance(outcome, Failure):
        headers[BILLABLE_UNITS_HEADER] = fake.billable_units(outcome)
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


async def _until(fake_request: FakeRequest, moment: float) -> None:
    """Sleep until `moment` (monotonic), or until the request is done sooner."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(0.0, moment - time.monotonic())):
            await fake_request.done.wait()


def _event(body: Any) -> str:
    return f"data: {json.dumps(body)}\n\n"
