"""The fake fal: an ASGI app that speaks fal's protocols (protocol notes section 6, addendum).

On one port it serves every fal host a client talks to: the queue (`https://queue.fal.run/` maps
to its root), sync runs and streams (`https://fal.run/` maps to `/run/`, see sync.py), and the
REST API's storage calls and the CDN (`https://rest.fal.ai/`, `https://v3.fal.media/` map to its
root, see cdn.py). Queue, run and storage routes need `Authorization: Key <anything>`; CDN uploads
need a token from `storage/auth/token`; files, the JWKS and the `/_fake/` control API need none.
Only known models are served (registry.py). Every URL it hands out starts where the caller reached
it, mount prefix included.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from app.fakefal import cdn, control, sync
from app.fakefal.config import FakeFalConfig
from app.fakefal.endpoints import RESERVED_ROOTS, Endpoint, RequestPath
from app.fakefal.failures import FAILURES, Failure
from app.fakefal.images import RenderCache
from app.fakefal.media import file_from_name
from app.fakefal.models import Generation, generate, invalid_json, typical_seconds
from app.fakefal.registry import catalog_ids, known_model
from app.fakefal.signing import WebhookSigner
from app.fakefal.stats import Stats
from app.fakefal.storage import CdnTokens, FileStore
from app.fakefal.store import (
    NO_WEBHOOK_FAULTS,
    FakeRequest,
    Mode,
    RequestStore,
    State,
    WebhookPlan,
)
from app.fakefal.webhooks import WebhookSender, webhook_body

logger = logging.getLogger(__name__)

REQUEST_ID_HEADER = "x-fal-request-id"
BILLABLE_UNITS_HEADER = "X-Fal-Billable-Units"
# fal_client treats a 502/503/504 without x-fal-request-id and with "nginx" in the body as an
# ingress error and retries it; this is the page nginx answers with.
_NGINX_PAGE = (
    "<html>\r\n<head><title>{code} {reason}</title></head>\r\n<body>\r\n"
    "<center><h1>{code} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)
_INGRESS_REASONS = {502: "Bad Gateway", 503: "Service Temporarily Unavailable"}
_TRUE = ("1", "true", "yes", "on")
# Seeds drawn for "random" stay below 2**53, so every JSON parser reads them back exactly.
_MAX_DRAWN_SEED = 2**53 - 1


class FakeFal:
    """One fake fal: its requests, knobs, signing key and counters. `app` can be served alone
    or mounted under a prefix. Call `aclose()` on the loop that serves it when done with it; a
    root-served app does that itself at lifespan shutdown."""

    def __init__(
        self,
        config: FakeFalConfig | None = None,
        *,
        also_serves: Callable[[str], bool] | None = None,
    ) -> None:
        """`also_serves(model_id)` names more models to serve, asked at each request: a process
        that runs falrelay beside the fake (`falrelay dev`) passes its live catalog, so a model
        imported at run time is served at once."""
        self.config = config if config is not None else FakeFalConfig()
        self._also_serves = also_serves
        self.stats = Stats()
        self.requests = RequestStore()
        self.signer = WebhookSigner()
        self._files = RenderCache()
        # Files made for a request that set X-Fal-Object-Lifecycle-Preference: their name and
        # when they expire (monotonic). Past it they answer 404, as fal's deleted files do.
        self._expiring: dict[str, float] = {}
        # Uploaded files (fal's CDN), and the tokens that let a client upload them.
        self.files = FileStore(self.config.storage_max_bytes)
        self.cdn_tokens = CdnTokens()
        # The catalog is fixed for the process; further ids come from the `models` knob.
        self.catalog = catalog_ids()
        self._sender = WebhookSender(self.signer, self.stats)
        self._tasks: set[asyncio.Task[None]] = set()
        self._rng = random.Random(self.config.random_seed)
        # Under a concurrency limit: requests waiting for a slot, and those holding one.
        self._held: list[FakeRequest] = []
        self._slotted: list[FakeRequest] = []
        # Every route through Starlette's router; `app` serves queue submits before it.
        self.routed: Starlette = Starlette(
            routes=[
                Route("/.well-known/jwks.json", self._jwks, methods=["GET"]),
                Route("/files/{name}", self._file, methods=["GET"]),
                *control.routes(self),
                *cdn.routes(self),
                *sync.routes(self),
                Route("/{path:path}", self._queue, methods=["GET", "POST", "PUT"]),
            ],
            lifespan=self._lifespan,
        )
        # An exception in a submit is answered as Starlette's app answers one: a plain 500.
        self._submits: ASGIApp = ServerErrorMiddleware(self._submit_asgi)
        self.app: ASGIApp = _FakeFalApp(self._serve)

    def configure(self, changes: dict[str, Any]) -> FakeFalConfig:
        """Apply a partial config, all or nothing; raises pydantic's ValidationError."""
        unknown = sorted(set(changes) - set(FakeFalConfig.model_fields))
        if unknown:
            raise ValueError(f"unknown settings: {', '.join(unknown)}")
        # Every field given explicitly, so the environment cannot leak into the result.
        merged = FakeFalConfig(**{**self.config.model_dump(), **changes})
        for name in changes:
            setattr(self.config, name, getattr(merged, name))
        if "random_seed" in changes:
            self._rng.seed(self.config.random_seed)
        self.files.max_bytes = self.config.storage_max_bytes
        return self.config

    def register_models(self, model_ids: list[str]) -> list[str]:
        """Serve these ids too (on top of the catalog's); answers every registered id. Raises
        pydantic's ValidationError for a string that is not a model id."""
        return self.configure({"models": [*self.config.models, *model_ids]}).models

    def serves(self, endpoint: Endpoint) -> bool:
        if known_model(endpoint, self.catalog, self.config.models):
            return True
        also = self._also_serves
        return also is not None and (also(endpoint.model_id) or also(endpoint.app_id))

    def reset(self) -> None:
        """Forget every request and count, stop pending webhooks; keep the config."""
        for task in self._tasks:
            task.cancel()
        for request in self.requests:
            request.signal_changed()  # ends their status streams
            request.signal_done()  # and answers their sync runs
        self.requests.clear()
        self._held.clear()
        self._slotted.clear()
        self.stats.reset()
        self._files.clear()
        self.files.clear()
        self._rng.seed(self.config.random_seed)

    async def aclose(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._sender.aclose()
        self.files.close()

    @asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await self.aclose()

    # -- queue routes ---------------------------------------------------------------------

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A queue submit goes straight to its handler; anything else through the router.

        Why: Starlette's router (its routes tried in turn) and its middleware wrappers were
        about a tenth of the fake's CPU per job end to end, for the one request per job that
        reaches the fake. A POST whose first path segment is not one of the other hosts'
        roots (`RESERVED_ROOTS`, where every other route lives) only ever matched the
        catch-all route, so it gets the same handler and the same answers, which
        tests/fakefal/test_fast_submit.py checks byte for byte."""
        if scope["type"] == "http" and scope["method"] == "POST":
            path = _route_path(scope)
            # `.` in the catch-all's pattern stops at a newline: such a path is the router's.
            if (
                path.startswith("/")
                and "\n" not in path
                and path[1:].partition("/")[0] not in RESERVED_ROOTS
            ):
                await self._submits(scope, receive, send)
                return
        await self.routed(scope, receive, send)

    async def _submit_asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        path = _route_path(scope)[1:]
        response = self.refuse_key(request)
        if response is None:
            response = await self._submit(request, path)
        await response(scope, receive, send)

    async def _queue(self, request: Request) -> Response:
        if (refusal := self.refuse_key(request)) is not None:
            return refusal
        path: str = request.path_params["path"]
        if request.method == "POST":
            return await self._submit(request, path)
        target = RequestPath.parse(path)
        if target is None:
            return JSONResponse({"detail": "Not Found"}, 404)
        allowed = ("PUT",) if target.operation == "cancel" else ("GET", "HEAD")
        if request.method not in allowed:
            headers = {"Allow": ", ".join(allowed)}
            return JSONResponse({"detail": "Method Not Allowed"}, 405, headers=headers)
        fake_request = self.requests.get(target.request_id)
        # A sync run or stream is not in the queue API, and a request only under its own app.
        if fake_request is not None and (
            fake_request.mode != "queue" or not fake_request.endpoint.serves(target.app_part)
        ):
            fake_request = None
        if target.operation == "result":
            if fake_request is None:
                return JSONResponse({"detail": "Request not found"}, 404)
            return self.result_response(fake_request)
        if fake_request is None:
            return JSONResponse({"status": "NOT_FOUND"}, 404)
        if target.operation == "status":
            return self._status(request, fake_request)
        if target.operation == "stream":
            return self._stream(request, fake_request)
        return self._cancel(fake_request)

    async def _submit(self, request: Request, path: str) -> Response:
        accepted = await self.accept(request, path, mode="queue")
        if isinstance(accepted, Response):
            return accepted
        fake_request, ahead = accepted
        body: dict[str, Any] = {
            "status": State.IN_QUEUE.value,
            "request_id": fake_request.id,
            "gateway_request_id": fake_request.id,
            **fake_request.urls(),
            "queue_position": ahead,
            "logs": None,
            "metrics": {},
        }
        return JSONResponse(body, headers={REQUEST_ID_HEADER: fake_request.id})

    async def accept(
        self, request: Request, path: str, *, mode: Mode
    ) -> tuple[FakeRequest, int] | Response:
        """Take a request for the model at `path` (a queue submit, a sync run or a stream: the
        same request to fal): the new request and how many wait ahead of it, or the refusal."""
        endpoint = Endpoint.parse(path)
        if endpoint is None or not self.serves(endpoint):
            return JSONResponse({"detail": f"Application '{path.strip('/')}' not found"}, 404)
        # Only a queue submit has a webhook; a run answers the caller itself.
        webhook_url = request.query_params.get("fal_webhook") if mode == "queue" else None
        if webhook_url is not None and not webhook_url.startswith(("http://", "https://")):
            return JSONResponse({"detail": "fal_webhook must be an http(s) URL"}, 422)
        max_queue = request.query_params.get("fal_max_queue_length")
        if max_queue is not None and not max_queue.isdigit():
            return JSONResponse({"detail": "fal_max_queue_length must be an integer"}, 422)
        priority = request.headers.get("x-fal-queue-priority", "normal").strip().lower()
        if priority not in ("normal", "low"):
            return JSONResponse({"detail": "X-Fal-Queue-Priority must be normal or low"}, 422)
        start_timeout: float | None = None
        if (raw_timeout := request.headers.get("x-fal-request-timeout")) is not None:
            try:
                start_timeout = float(raw_timeout)
            except ValueError:
                start_timeout = math.nan
            # fal's documented floor; NaN and infinity are refused with it.
            if not (0.1 < start_timeout < math.inf):
                detail = "X-Fal-Request-Timeout must be a number of seconds above 0.1"
                return JSONResponse({"detail": detail}, 422)
        raw_body = await request.body()
        config, rng = self.config, self._rng

        # Faults are drawn in a fixed order from one generator, so a random_seed replays a run.
        if rng.random() < config.submit_5xx_rate:
            self.stats.submit_5xx += 1
            code = rng.choice(sorted(_INGRESS_REASONS))
            page = _NGINX_PAGE.format(code=code, reason=_INGRESS_REASONS[code])
            return HTMLResponse(page, code)
        if rng.random() < config.submit_429_rate:
            self.stats.submit_429 += 1
            return JSONResponse({"detail": "Too many requests, slow down"}, 429)
        now = time.monotonic()
        ahead = len(self.requests.waiting(endpoint.app_id, now))
        if max_queue is not None and ahead > int(max_queue):
            self.stats.submit_429 += 1
            detail = f"Queue is full: more than {max_queue} requests are waiting"
            return JSONResponse({"detail": detail}, 429)

        drawn_seed = rng.randint(1, _MAX_DRAWN_SEED)
        fails = rng.random() < config.error_rate
        drawn_failure = FAILURES[rng.choice(config.error_types)]
        plan = WebhookPlan(
            drop=rng.random() < config.webhook_drop_rate,
            duplicate=rng.random() < config.webhook_duplicate_rate,
            payload_error=rng.random() < config.payload_error_rate,
            delay=config.webhook_delay + rng.uniform(0.0, config.webhook_reorder),
        )
        if plan == NO_WEBHOOK_FAULTS:
            plan = NO_WEBHOOK_FAULTS  # one shared object for the requests that keep it
        model_input: Any = None
        outcome: Generation | Failure
        try:
            model_input = json.loads(raw_body) if raw_body.strip() else {}
        except json.JSONDecodeError as exc:
            outcome = invalid_json(exc.msg, exc.pos)
        except UnicodeDecodeError as exc:
            outcome = invalid_json(str(exc), exc.start)
        else:
            outcome = generate(endpoint.model_id, model_input, drawn_seed)
            if fails and not isinstance(outcome, Failure):
                outcome = drawn_failure

        fake_request = FakeRequest(
            id=str(uuid.uuid4()),
            endpoint=endpoint,
            input=model_input,
            fal_webhook=webhook_url,
            base_url=_base_url(request),
            submitted_at=time.time(),
            queued_at=now,
            queue_latency=config.queue_latency,
            run_latency=config.run_time(typical_seconds(endpoint.model_id)),
            outcome=outcome,
            webhook=plan,
            priority=priority,
            start_timeout=start_timeout,
            held=config.concurrency is not None,
            mode=mode,
        )
        self.requests.add(fake_request, max_requests=config.max_requests)
        ttl = _media_ttl(request.headers.get("x-fal-object-lifecycle-preference"))
        if ttl is not None and isinstance(outcome, Generation):
            # Counted from when the files are made: the end of the request's run.
            made_at = now + fake_request.queue_latency + fake_request.run_latency
            for file in outcome.files:
                self._expiring.pop(file.file_name, None)
                self._expiring[file.file_name] = made_at + ttl
            while len(self._expiring) > _MAX_EXPIRING:
                self._expiring.pop(next(iter(self._expiring)))
        if mode == "queue":
            self.stats.submitted += 1
        else:
            self.stats.runs += 1
        if fake_request.held:
            self._held.append(fake_request)
            self._time(fake_request)
            if fake_request.queue_latency > 0:
                self._spawn(self._schedule_at(fake_request.ready_at))
            self._schedule(now)
        else:
            fake_request.timer = self._spawn(self._complete_on_time(fake_request))
        return fake_request, ahead

    async def wait_started(self, fake_request: FakeRequest) -> None:
        """Until the request leaves the queue (it may complete at once), or a reset forgets it."""
        while self.requests.get(fake_request.id) is fake_request:
            now = time.monotonic()
            if fake_request.state(now) is not State.IN_QUEUE:
                return
            wake = self._next_change(fake_request, now)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, wake - now)):
                    await fake_request.done.wait()

    async def wait_finished(self, fake_request: FakeRequest) -> bool:
        """Until the request completes; False when a reset forgot it first."""
        await fake_request.done.wait()
        return fake_request.finished

    def _status(self, request: Request, fake_request: FakeRequest) -> Response:
        body = self._status_body(fake_request, _logs_wanted(request))
        code = 200 if body["status"] == State.COMPLETED else 202
        return JSONResponse(body, code, headers={REQUEST_ID_HEADER: fake_request.id})

    def _stream(self, request: Request, fake_request: FakeRequest) -> Response:
        with_logs = _logs_wanted(request)

        async def events() -> AsyncIterator[str]:
            last: tuple[Any, ...] | None = None
            last_sent = time.monotonic()
            logged = 0  # log lines already sent: each event carries only new ones, as fal's do
            # Ends when the request completes, or is forgotten by a reset.
            while self.requests.get(fake_request.id) is fake_request:
                now = time.monotonic()
                body = self._status_body(fake_request, with_logs, now)
                lines = body["logs"] or []
                key = (body["status"], body.get("queue_position"), len(lines))
                if key != last:
                    last, last_sent = key, now
                    if body["logs"] is not None:
                        body["logs"], logged = lines[logged:], len(lines)
                    yield f"data: {json.dumps(body)}\n\n"
                if body["status"] == State.COMPLETED:
                    return
                ping = self.config.stream_ping_interval
                wake = min(self._next_change(fake_request, now), last_sent + ping)
                try:
                    async with asyncio.timeout(max(0.0, wake - now)):
                        await fake_request.changed.wait()
                except TimeoutError:
                    pass
                if time.monotonic() - last_sent >= ping:
                    last_sent = time.monotonic()
                    yield ": ping\n\n"

        headers = {"Cache-Control": "no-cache", REQUEST_ID_HEADER: fake_request.id}
        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)

    def result_response(self, fake_request: FakeRequest) -> Response:
        """What the queue's result URL answers, and a sync run once its request completes."""
        headers = {REQUEST_ID_HEADER: fake_request.id}
        if fake_request.state(time.monotonic()) is not State.COMPLETED:
            return JSONResponse({"detail": "Request is still in progress"}, 400, headers=headers)
        outcome = fake_request.result()
        if isinstance(outcome, Failure):
            headers.update(outcome.headers)
            return JSONResponse(outcome.body, outcome.status_code, headers=headers)
        headers[BILLABLE_UNITS_HEADER] = self.billable_units(outcome)
        return JSONResponse(fake_request.output(), headers=headers)

    def billable_units(self, outcome: Generation) -> str:
        """What fal billed for a model's result (its `X-Fal-Billable-Units` platform header), in
        the model's unit (images, megapixels or seconds). No charge for errors, so no header on
        those."""
        units = self.config.billable_units
        return str(outcome.billable_units if units is None else units)

    def _cancel(self, fake_request: FakeRequest) -> Response:
        headers = {REQUEST_ID_HEADER: fake_request.id}
        now = time.monotonic()
        if fake_request.finished or fake_request.state(now) is State.COMPLETED:
            return JSONResponse({"status": "ALREADY_COMPLETED"}, 400, headers=headers)
        # Queued or running alike: it completes now, as cancelled (fal signals a running one's
        # runner; the model decides, and this fake's models always stop).
        fake_request.cancelled_at = now
        if fake_request.timer is not None:
            fake_request.timer.cancel()
        fake_request.signal_changed()
        fake_request.timer = self._spawn(self._finish(fake_request))
        return JSONResponse({"status": "CANCELLATION_REQUESTED"}, 202, headers=headers)

    def _status_body(
        self, fake_request: FakeRequest, with_logs: bool, now: float | None = None
    ) -> dict[str, Any]:
        now = time.monotonic() if now is None else now
        position = 0
        if fake_request.state(now) is State.IN_QUEUE:
            position = self.requests.queue_position(fake_request, now)
        return fake_request.status_body(now, queue_position=position, with_logs=with_logs)

    def _next_change(self, fake_request: FakeRequest, now: float) -> float:
        """When the request's status (or its place in the queue) next changes."""
        if fake_request.state(now) is not State.IN_QUEUE:
            return fake_request.completes_at
        if fake_request.held:
            # Its start waits for a slot, which the clock cannot tell: look again soon.
            return min(now + 0.05, fake_request.completes_at)
        queue = self.requests.waiting(fake_request.endpoint.app_id, now)
        ahead = queue[: queue.index(fake_request)] if fake_request in queue else []
        return min(
            [fake_request.completes_at, fake_request.started_at, *(r.started_at for r in ahead)]
        )

    # -- the account's concurrency limit -------------------------------------------------

    def _schedule(self, now: float) -> None:
        """Give free slots to waiting requests: normal priority before low, each in submit
        order (fal's queue; protocol notes 1.8, 1.9)."""
        self._held = [r for r in self._held if r.slot_at is None and not r.finished]
        self._slotted = [r for r in self._slotted if r.state(now) is not State.COMPLETED]
        limit = self.config.concurrency
        free = len(self._held) if limit is None else limit - len(self._slotted)
        if free <= 0:
            return
        ready = [r for r in self._held if r.ready_at <= now and r.state(now) is State.IN_QUEUE]
        ready.sort(key=lambda r: (r.priority == "low", r.queued_at))
        for fake_request in ready[:free]:
            fake_request.slot_at = now
            self._slotted.append(fake_request)
            self._time(fake_request)

    def _time(self, fake_request: FakeRequest) -> None:
        """(Re)start the timer that finishes the request when its timeline says."""
        if fake_request.timer is not None:
            fake_request.timer.cancel()
        fake_request.timer = None
        if not math.isinf(fake_request.completes_at):
            fake_request.timer = self._spawn(self._complete_on_time(fake_request))

    async def _schedule_at(self, at: float) -> None:
        while (delay := at - time.monotonic()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(delay)
        self._schedule(time.monotonic())

    # -- completion and webhooks ---------------------------------------------------------

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("fake fal background task failed", exc_info=task.exception())

    async def _complete_on_time(self, fake_request: FakeRequest) -> None:
        # A loop, not one sleep: the loop's timer may fire a hair early, and the status must
        # read COMPLETED before the webhook goes out.
        while (delay := fake_request.completes_at - time.monotonic()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(delay)
        await self._finish(fake_request)

    async def _finish(self, fake_request: FakeRequest) -> None:
        if fake_request.finished:
            return
        fake_request.finished = True
        # Nothing cancels or restarts a finished request's timer: the request need not keep it.
        fake_request.timer = None
        fake_request.signal_changed()
        fake_request.signal_done()
        if fake_request.held:
            self._schedule(time.monotonic())  # its slot (if it had one) is free
        outcome = fake_request.result()
        if fake_request.cancelled_at is not None:
            self.stats.completed_cancelled += 1
        elif isinstance(outcome, Failure):
            self.stats.completed_error += 1
        else:
            self.stats.completed_ok += 1
        if fake_request.fal_webhook is not None:
            await self._deliver(fake_request, fake_request.fal_webhook)

    async def _deliver(self, fake_request: FakeRequest, url: str) -> None:
        plan = fake_request.webhook
        if plan.drop:
            self.stats.webhooks_dropped += 1
            return
        if plan.delay:
            await asyncio.sleep(plan.delay)
        outcome = fake_request.result()
        payload_error = plan.payload_error and not isinstance(outcome, Failure)
        if payload_error:
            self.stats.webhooks_payload_error += 1
        content = outcome if isinstance(outcome, Failure) else fake_request.output()
        body = json.dumps(
            webhook_body(fake_request.id, content, payload_error=payload_error)
        ).encode()
        for copy in range(2 if plan.duplicate else 1):
            config = self.config
            delivered = await self._sender.send(
                url,
                fake_request.id,
                body,
                user_id=config.user_id,
                retry_delays=config.webhook_retry_delays,
            )
            if not delivered:
                fake_request.webhook_abandoned = True
                return
            fake_request.webhook_delivered_at += (time.time(),)
            if copy == 1:
                self.stats.webhooks_duplicated += 1

    # -- files and keys --------------------------------------------------------------------

    async def _file(self, request: Request) -> Response:
        name: str = request.path_params["name"]
        spec = file_from_name(name)
        expires_at = self._expiring.get(name)
        if spec is None or (expires_at is not None and time.monotonic() >= expires_at):
            return JSONResponse({"detail": "File not found"}, 404)
        data = self._files.get(name)
        if data is None:
            data = await asyncio.to_thread(spec.render)
            self.stats.files_rendered += 1
            self._files.put(name, data)
        # The name fixes the bytes, so they can be cached for good.
        headers = {"Cache-Control": "public, max-age=31536000, immutable"}
        return Response(data, media_type=spec.content_type, headers=headers)

    async def _jwks(self, request: Request) -> Response:
        return JSONResponse(self.signer.jwks())

    def refuse_key(self, request: Request) -> Response | None:
        """A 401 unless the request has fal's `Authorization: Key <key>` (any key)."""
        return _check_auth(request)

    def base_url(self, request: Request) -> str:
        """Where the caller reached the fake: scheme, host and mount prefix."""
        return _base_url(request)


class _FakeFalApp:
    """`FakeFal.app`: an ASGI 3 app as servers detect one (a class with an async `__call__`;
    a bound method reads as ASGI 2 to uvicorn)."""

    __slots__ = ("_serve",)

    def __init__(self, serve: ASGIApp) -> None:
        self._serve = serve

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._serve(scope, receive, send)


# Files with an expiry the fake remembers; beyond this, the oldest are forgotten (they then
# never expire, which no test of a few thousand requests reaches).
_MAX_EXPIRING = 100_000


def _media_ttl(header: str | None) -> float | None:
    """`expiration_duration_seconds` from X-Fal-Object-Lifecycle-Preference, if it names one."""
    if header is None:
        return None
    try:
        value = json.loads(header).get("expiration_duration_seconds")
    except (ValueError, AttributeError):
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return None
    return float(value)


def _route_path(scope: Scope) -> str:
    """The path below the mount prefix, as Starlette's router reads it (`get_route_path`)."""
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    if not root_path or not path.startswith(root_path):
        return path
    if path == root_path:
        return ""
    return path[len(root_path) :] if path[len(root_path)] == "/" else path


def _check_auth(request: Request) -> Response | None:
    header = request.headers.get("authorization")
    if header is None:
        return JSONResponse({"detail": "Missing authorization header"}, 401)
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() != "key" or not credentials.strip():
        return JSONResponse({"detail": "Invalid authorization header, expected 'Key <key>'"}, 401)
    return None


def _logs_wanted(request: Request) -> bool:
    return request.query_params.get("logs", "").lower() in _TRUE


def _base_url(request: Request) -> str:
    """Scheme, host and mount prefix. Starlette's `request.base_url` would drop the prefix of a
    Mount (it is the top-level app's root); `root_path` has it."""
    scope = request.scope
    root_path = scope.get("root_path", "")
    host = request.headers.get("host")
    # Without a Host header or a server address, the URL is the path alone, and the path
    # decides what it parses as: not worth keeping.
    if host is None and scope.get("server") is None:
        return _url_base(request, root_path)
    key = (scope.get("scheme", "http"), host, scope.get("server"), root_path)
    base = _BASE_URLS.get(key)
    if base is None:
        if len(_BASE_URLS) >= _MAX_BASE_URLS:
            _BASE_URLS.clear()
        base = _BASE_URLS[key] = _url_base(request, root_path)
    return base


def _url_base(request: Request, root_path: str) -> str:
    url = request.url.replace(path=root_path, query="", fragment="")
    return str(url).rstrip("/")


# Base URLs by what they are made of (scheme, Host header, server address, mount prefix): the
# same few for every request, and a parse and a rebuild of its URL each (see _base_url).
_BASE_URLS: dict[tuple[Any, ...], str] = {}
_MAX_BASE_URLS = 256
