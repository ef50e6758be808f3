"""Delivering webhooks: claim due deliveries, send each, record results in batches.

Claims lease more rows than there are send slots (LEASE_FACTOR), so the next rows are here
while the last ones are sent: a claim's round trip no longer leaves slots empty. A leased row
is sent once a slot is free, its client sends fewer than its share of the slots, and its
target fewer than its cap (`Deliverer._dispatch`); fair share thus holds for what is sent, not
only for what is leased.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from app import ids, logs, tracing
from app.db.availability import UNAVAILABLE
from app.ids import DELIVERY_ID_PREFIX, EVENT_ID_PREFIX
from app.metrics import DELIVERIES, DELIVERY_LATENCY, child
from app.runtime import Runtime
from app.webhooks import endpoints, policy, queue, signing
from app.webhooks.delivery import AttemptResult, Sender, send
from app.webhooks.models import DeliveryStatus

log = logging.getLogger(__name__)

# Delivery results sent but not yet committed, at most (see `Deliverer.work`).
MAX_UNRECORDED = 256
# Rows leased here per send slot. Measured in the fan-out benchmark with one lease per slot:
# a claim took 3 ms and a send 3.5 ms, so by the time a claim returned most of the sends it
# was claiming for had ended, and about 15 of 64 slots were busy on average.
LEASE_FACTOR = 2
_HAND_BACK_FAILED: tuple[type[Exception], ...] = (*UNAVAILABLE, asyncpg.PostgresError)


def reserve(capacity: int) -> int:
    """Slots no client's share includes: what a client with nothing in flight finds free while
    others' receivers hang. A quarter: the delivery loop claims once an eighth of its slots are
    free (app.worker.runner), so a client already sending still finds the next one."""
    return max(1, capacity // 4) if capacity > 1 else 0


@dataclass(slots=True, eq=False)
class _Waiting:
    """A leased row waiting for a send slot; `go` is set True to send it, False to hand it
    back unsent. Compared by identity: finding one in its deque compares no rows."""

    row: asyncpg.Record
    leased_at: float  # time.monotonic() before its claim was sent
    go: asyncio.Future[bool]


@dataclass(frozen=True, slots=True)
class _Sent:
    outcome: queue.Outcome
    # A target whose breaker state waits on this result (a half-open breaker's probe, or a
    # breaker failure, which may open it): see `Deliverer._held`.
    held_target: str | None


def _active_secrets(row: asyncpg.Record, now: datetime) -> list[str]:
    # A job's own callback_url is signed with the client's default secrets.
    column = "client_secrets" if row["endpoint_id"] is None else "endpoint_secrets"
    secrets: list[dict[str, Any]] = row[column] or []
    return endpoints.active_secrets(secrets, now)


class Deliverer:
    """One per worker process: its delivery sender, its per-target and per-client counts (of
    rows leased here, and of rows being sent), its leased rows waiting for a slot, its
    recorder."""

    def __init__(self, runtime: Runtime, sender: Sender) -> None:
        self.runtime = runtime
        self.sender = sender
        settings = runtime.settings
        self.slots = settings.delivery_concurrency
        # What the delivery loop claims against (app.worker.runner): leased rows, sent or not.
        self.lease_capacity = self.slots * LEASE_FACTOR
        self.per_target = settings.delivery_per_endpoint_concurrency
        self._fair_share = settings.delivery_fair_share
        # A leased row waits for a slot at most this long, then goes back unsent: half the
        # lease's slack past one send, the rest for recording the result. Waits that long
        # happen only behind receivers that hang (each send ends within the timeout).
        self._max_wait = (settings.delivery_lease_seconds - settings.delivery_timeout_seconds) / 2
        self._leased: Counter[str] = Counter()
        self._client_leased: Counter[uuid.UUID] = Counter()
        self._weights: dict[uuid.UUID, int] = {}
        self._leased_weight = 0  # the weight of every client with rows leased here
        self._sending = 0
        self._client_sending: Counter[uuid.UUID] = Counter()
        self._target_sending: Counter[str] = Counter()
        self._waiting: dict[uuid.UUID, deque[_Waiting]] = {}
        self._leased_at: dict[uuid.UUID, float] = {}
        self._stopping = False
        # Targets whose breaker is half-open: one delivery (the probe) leased at a time.
        self._probing: set[str] = set()
        # Endpoints with a result sent here whose recording decides their breaker's state: a
        # probe's, or a breaker failure's (no answer, or a 5xx), which may open it. Until it is
        # committed, claims skip them and their rows waiting here go back unsent: rows leased
        # before a breaker opened are not sent after it did (each another timeout, and
        # attempts the breaker is there to save), and no second probe goes out.
        self._held: Counter[str] = Counter()
        self._pending: list[_Sent] = []
        self._unrecorded = 0  # sent, not yet committed: pending plus the batch being written
        self._has_pending = asyncio.Event()
        self._recorded = asyncio.Event()
        # The last claim left a due delivery for what is leased here: a delivery that ends
        # may let the next claim take it (app.worker.runner wakes the loop only then).
        self.held_back = True

    async def claim(self, runtime: Runtime, limit: int) -> list[asyncpg.Record]:
        saturated = [t for t, n in self._leased.items() if n >= self._lease_cap(t)]
        saturated += self._held  # a target at its cap may be named twice: no matter
        leased_at = time.monotonic()
        claimed = await queue.claim_deliveries(
            runtime.pool,
            limit,
            runtime.settings.delivery_lease_seconds,
            saturated,
            in_flight=dict(self._client_leased),
            capacity=self.lease_capacity,
            reserve=reserve(self.lease_capacity),
            fair_share=self._fair_share,
            traced=tracing.enabled(),
        )
        taken: list[asyncpg.Record] = []
        over_cap: list[asyncpg.Record] = []
        taking: Counter[str] = Counter()
        for row in claimed.rows:
            target = row["target"]
            if row["probing"]:
                self._probing.add(target)
            else:
                self._probing.discard(target)
            leased = self._leased[target] + taking[target]
            if leased >= self._lease_cap(target) or target in self._held:
                over_cap.append(row)
                continue
            taking[target] += 1
            taken.append(row)
        if over_cap:
            await queue.release_deliveries(runtime.pool, over_cap)
        # Counted once nothing can fail before their steps start (each step uncounts its row).
        for row in taken:
            self._leased[row["target"]] += 1
            client = row["client_id"]
            if not self._client_leased[client]:
                self._weights[client] = row["client_weight"]
                self._leased_weight += row["client_weight"]
            self._client_leased[client] += 1
            self._leased_at[row["id"]] = leased_at
        # Targets skipped or handed back for their cap here come free as their deliveries end.
        self.held_back = claimed.held_back or bool(saturated) or bool(over_cap)
        return taken

    def _lease_cap(self, target: str) -> int:
        return 1 if target in self._probing else self.per_target * LEASE_FACTOR

    def _send_cap(self, target: str) -> int:
        return 1 if target in self._probing else self.per_target

    def _share(self, client: uuid.UUID) -> int:
        """The send slots `client` may fill: as the claim computes a share (the delivery claim,
        migration 0026), over the clients with rows leased here, so that the reserve stays free
        for a client that shows up while others' receivers hang."""
        if not self._fair_share:
            return self.slots
        weight = self._weights[client]
        return max(1, (self.slots - reserve(self.slots)) * weight // self._leased_weight)

    def _may_send(self, client: uuid.UUID, target: str) -> bool:
        return (
            self._sending < self.slots
            and self._client_sending[client] < self._share(client)
            and self._target_sending[target] < self._send_cap(target)
        )

    async def work(self, runtime: Runtime, row: asyncpg.Record) -> None:
        logs.delivery_id.set(ids.encode(DELIVERY_ID_PREFIX, row["id"]))
        client, target = row["client_id"], row["target"]
        leased_at = self._leased_at.pop(row["id"])
        try:
            if not await self._slot(row, leased_at):
                await self._hand_back(row)
                return
            try:
                outcome = await self._attempt(row)
            finally:
                self._finish(row)
            # A job's callback URL has no breaker: its rows would go out after a failure all
            # the same, and handing them back would only cost statements.
            held = row["probing"] or (
                row["endpoint_id"] is not None and policy.breaker_failure(outcome.result)
            )
            if held:
                self._held[target] += 1
        finally:
            self._leased[target] -= 1
            if self._leased[target] <= 0:
                del self._leased[target]
                self._probing.discard(target)
            self._client_leased[client] -= 1
            if self._client_leased[client] <= 0:
                del self._client_leased[client]
                self._leased_weight -= self._weights.pop(client)
            self._dispatch()
        self._pending.append(_Sent(outcome, target if held else None))
        self._unrecorded += 1
        self._has_pending.set()
        # The slot is free as soon as the receiver has answered: the result is committed by
        # the recorder loop behind us (a crash meanwhile is covered by the lease: the delivery
        # is sent again, never lost; `aclose` records what is left at a drain). Past
        # MAX_UNRECORDED results, a step waits for the recorder: a slow or absent database
        # slows sending rather than letting results pile up.
        while self._unrecorded > MAX_UNRECORDED:
            self._recorded.clear()
            await self._recorded.wait()

    async def _slot(self, row: asyncpg.Record, leased_at: float) -> bool:
        """Whether to send `row`, once it may: at once if a slot is free to it and no row of
        its client waits before it, else in its turn (`_dispatch`)."""
        if self._stopping:
            return False
        client = row["client_id"]
        waiting = self._waiting.get(client)
        if not waiting and self._may_send(client, row["target"]):
            self._start(row)
            return True
        if waiting is None:
            waiting = self._waiting[client] = deque()
        waiter = _Waiting(row, leased_at, asyncio.get_running_loop().create_future())
        waiting.append(waiter)
        # Rows of its client wait before it, but maybe only for their targets' caps.
        self._dispatch()
        try:
            return await waiter.go
        except asyncio.CancelledError:
            # Cancelled at a drain's end: unsent, and its lease brings it back later.
            if not waiter.go.cancelled() and waiter.go.result():
                self._finish(row)  # given a slot, cancelled before it could use it
            elif waiter in waiting:
                waiting.remove(waiter)
            raise

    def _start(self, row: asyncpg.Record) -> None:
        self._sending += 1
        self._client_sending[row["client_id"]] += 1
        self._target_sending[row["target"]] += 1

    def _finish(self, row: asyncpg.Record) -> None:
        self._sending -= 1
        client, target = row["client_id"], row["target"]
        self._client_sending[client] -= 1
        if not self._client_sending[client]:
            del self._client_sending[client]
        # Targets include every job's callback URL: no entry may outlive its sends.
        self._target_sending[target] -= 1
        if not self._target_sending[target]:
            del self._target_sending[target]

    def _dispatch(self) -> None:
        """Give free slots to waiting rows: each to the client sending the fewest for its
        weight, among those under their share (with fair share off, to the row leased first);
        within a client, its first row whose target is under its cap. A row that waited past
        its limit, or whose target is held, goes back unsent."""
        self._sweep()
        while self._sending < self.slots and self._waiting:
            best: tuple[float, uuid.UUID, int] | None = None
            for client, waiting in self._waiting.items():
                sending = self._client_sending[client]
                if sending >= self._share(client):
                    continue
                for i, waiter in enumerate(waiting):
                    target = waiter.row["target"]
                    if not waiter.go.done() and self._target_sending[target] < self._send_cap(
                        target
                    ):
                        if self._fair_share:
                            key = sending / self._weights[client]
                        else:
                            key = waiter.leased_at
                        if best is None or key < best[0]:
                            best = (key, client, i)
                        break
            if best is None:
                return
            _, client, i = best
            waiting = self._waiting[client]
            waiter = waiting[i]
            del waiting[i]
            if not waiting:
                del self._waiting[client]
            self._start(waiter.row)
            waiter.go.set_result(True)

    def _sweep(self) -> None:
        """Drop waiters cancelled at a drain's end (gone once their tasks run), and give back
        those that waited too long or whose target is held (`_held`)."""
        now = time.monotonic()
        for client, waiting in list(self._waiting.items()):
            # Leased in order: the first waiter of a client is its oldest.
            while waiting and (waiting[0].go.done() or now - waiting[0].leased_at > self._max_wait):
                waiter = waiting.popleft()
                if not waiter.go.done():
                    waiter.go.set_result(False)
            if self._held and waiting:
                for waiter in [w for w in waiting if w.row["target"] in self._held]:
                    waiting.remove(waiter)
                    if not waiter.go.done():
                        waiter.go.set_result(False)
            if not waiting:
                del self._waiting[client]

    async def _hand_back(self, row: asyncpg.Record) -> None:
        """A leased row not sent (the worker stops, it waited too long, or its target is held):
        its lease ends now, so that any worker may send it once it is due."""
        try:
            await queue.release_deliveries(self.runtime.pool, [row])
        except _HAND_BACK_FAILED as exc:
            # Its lease runs out by itself: sent later all the same.
            log.warning("could not hand back delivery %s: %r", row["id"], exc)

    def stop(self) -> None:
        """At a drain: rows waiting for a slot go back unsent rather than wait for one."""
        self._stopping = True
        for waiting in self._waiting.values():
            for waiter in waiting:
                if not waiter.go.done():
                    waiter.go.set_result(False)
        self._waiting.clear()
        self.wake()

    def wake(self) -> None:
        self._has_pending.set()

    async def _attempt(self, row: asyncpg.Record) -> queue.Outcome:
        if not tracing.enabled():
            return await self._deliver(row)
        # A span of the job's trace (app.tracing), child of its POST /v1/jobs: every attempt of
        # every delivery of the job's events is one. A ping has no job: a trace of its own.
        event_type = str(orjson.loads(row["payload"]).get("type", "event"))
        with tracing.job_span(
            f"deliver {event_type}",
            row.get("trace_context"),
            kind="client",
            attributes={
                "http.request.method": "POST",
                "url.full": tracing.scrub_url(row["target_url"]),
                "falrelay.delivery.id": ids.encode(DELIVERY_ID_PREFIX, row["id"]),
                "falrelay.delivery.attempt": row["attempt_count"],
                "falrelay.event.id": ids.encode(EVENT_ID_PREFIX, row["event_id"]),
                "falrelay.event.type": event_type,
            },
        ) as span:
            outcome = await self._deliver(row)
            result = outcome.result
            if result.status_code is not None:
                tracing.set_attributes(span, {"http.response.status_code": result.status_code})
            if not result.succeeded:
                tracing.set_error(span, result.error or str(result.status_code), result.error)
            return outcome

    async def _deliver(self, row: asyncpg.Record) -> queue.Outcome:
        now = self.runtime.now()
        secrets = _active_secrets(row, now)
        if not secrets and row["endpoint_id"] is None:
            # A client whose default secrets are not made yet (made by an earlier release):
            # make them now.
            secrets = await endpoints.default_secrets(self.runtime.pool, row["client_id"], now)
        if row["endpoint_id"] is not None and not row["endpoint_enabled"]:
            result = AttemptResult(duration_ms=0, error=policy.ENDPOINT_DISABLED)
        elif not secrets:
            result = AttemptResult(duration_ms=0, error=policy.NO_SIGNING_SECRET)
        else:
            # The event's JSON as Postgres renders it (migration 0028): sent as it is, not
            # decoded and encoded again.
            body = row["payload"].encode()
            message_id = ids.encode(EVENT_ID_PREFIX, row["event_id"])
            headers = signing.sign_headers(message_id, body, secrets, at=now)
            # The delivery span's context, so that the receiver's own spans join the job's
            # trace. Only with tracing on: a traceparent of a trace no one records is noise to
            # the receiver. Not signed (Standard Webhooks signs the id, time and body).
            tracing.inject(headers)
            result = await send(self.sender, row["target_url"], body, headers)
        return self._outcome(row, now, result)

    def _outcome(self, row: asyncpg.Record, now: datetime, result: AttemptResult) -> queue.Outcome:
        status, next_at = policy.next_attempt(
            result, row["attempt_count"], now=now, rng=self.runtime.rng
        )
        outcome = status.value if status != DeliveryStatus.PENDING else "retrying"
        child(DELIVERIES, outcome).inc()
        DELIVERY_LATENCY.observe(result.duration_ms / 1000)
        if not result.succeeded:
            log.info(
                "delivery attempt %d failed: %s",
                row["attempt_count"],
                result.error or result.status_code,
                extra={"outcome": status.value},
            )
        return queue.Outcome(
            delivery_id=row["id"],
            attempt_count=row["attempt_count"],
            endpoint_id=row["endpoint_id"],
            attempted_at=now,
            result=result,
            status=status,
            next_attempt_at=next_at,
        )

    async def record_pending(self) -> None:
        """One iteration of the recorder loop (supervised): commit the results sent so far.

        While the database is unreachable the batch stays pending and the error goes to the
        supervisor, whose backoff paces the retries; results are never dropped, so they are
        recorded within seconds of the database's return, long before their leases would
        send them again.
        """
        if not self._pending:
            self._has_pending.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._has_pending.wait(), timeout=self.runtime.settings.worker_poll_seconds
                )
            return
        batch, self._pending = self._pending, []
        try:
            await self._record_batch(batch)
        except BaseException:
            self._pending[:0] = batch
            raise
        self._unrecorded -= len(batch)
        for sent in batch:
            if sent.held_target is not None:
                self._held[sent.held_target] -= 1
                if self._held[sent.held_target] <= 0:
                    del self._held[sent.held_target]
        self._recorded.set()

    async def _record_batch(self, batch: list[_Sent]) -> None:
        try:
            await self._record(batch)
        except UNAVAILABLE:
            raise
        except asyncpg.PostgresError as exc:
            # One row the database refuses must not keep the whole batch unrecorded (and
            # resent forever): record them one by one, and let only that one go.
            log.warning("recording a batch of %d failed (%r); one by one", len(batch), exc)
            for sent in batch:
                try:
                    await self._record([sent])
                except UNAVAILABLE:
                    raise
                except asyncpg.PostgresError as row_exc:
                    log.error("could not record delivery %s: %r", sent.outcome.delivery_id, row_exc)

    async def _record(self, batch: list[_Sent]) -> None:
        settings = self.runtime.settings
        await queue.record(
            self.runtime.pool,
            [sent.outcome for sent in batch],
            now=self.runtime.now(),
            breaker_failures=settings.delivery_breaker_failures,
            breaker_cooldown=settings.delivery_breaker_cooldown_seconds,
        )

    async def aclose(self) -> None:
        """At a drain, after the recorder loop has stopped: one last try for what is left
        (unrecorded results are sent again once their lease runs out, never lost)."""
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        try:
            await self._record_batch(batch)
        except UNAVAILABLE as exc:
            log.warning("at shutdown, %d delivery results not recorded: %r", len(batch), exc)
