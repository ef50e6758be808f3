"""Delivering webhooks: claim due deliveries, send each, record results in batches."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp
import asyncpg
import orjson

from app import ids, logs, tracing
from app.db.availability import UNAVAILABLE
from app.ids import DELIVERY_ID_PREFIX, EVENT_ID_PREFIX
from app.metrics import DELIVERIES, DELIVERY_LATENCY, child
from app.runtime import Runtime
from app.webhooks import endpoints, policy, queue, signing
from app.webhooks.delivery import AttemptResult, send
from app.webhooks.models import DeliveryStatus

log = logging.getLogger(__name__)

# Delivery results sent but not yet committed, at most (see `Deliverer.work`).
MAX_UNRECORDED = 256


def reserve(capacity: int) -> int:
    """Slots no client's share includes: what a client with nothing in flight finds free while
    others' receivers hang. A quarter: the delivery loop claims once an eighth of its slots are
    free (app.worker.runner), so a client already sending still finds the next one."""
    return max(1, capacity // 4) if capacity > 1 else 0


@dataclass(frozen=True, slots=True)
class _Sent:
    outcome: queue.Outcome
    probe_target: str | None  # a half-open breaker's probe: its target's state waits


def _active_secrets(row: asyncpg.Record, now: datetime) -> list[str]:
    # A job's own callback_url is signed with the client's default secrets.
    column = "client_secrets" if row["endpoint_id"] is None else "endpoint_secrets"
    secrets: list[dict[str, Any]] = row[column] or []
    return endpoints.active_secrets(secrets, now)


class Deliverer:
    """One per worker process: its aiohttp session, its per-target counts, its recorder."""

    def __init__(self, runtime: Runtime, session: aiohttp.ClientSession) -> None:
        self.runtime = runtime
        self.session = session
        self.per_target = runtime.settings.delivery_per_endpoint_concurrency
        self._in_flight: Counter[str] = Counter()
        self._client_in_flight: Counter[uuid.UUID] = Counter()
        # Targets whose breaker is half-open: one delivery (the probe) in flight at a time,
        # and none until the probe's result is committed (it decides the breaker's state).
        self._probing: set[str] = set()
        self._probes_unrecorded: Counter[str] = Counter()
        self._pending: list[_Sent] = []
        self._unrecorded = 0  # sent, not yet committed: pending plus the batch being written
        self._has_pending = asyncio.Event()
        self._recorded = asyncio.Event()
        # The last claim left a due delivery for what is in flight here: a delivery that ends
        # may let the next claim take it (app.worker.runner wakes the loop only then).
        self.held_back = True

    async def claim(self, runtime: Runtime, limit: int) -> list[asyncpg.Record]:
        saturated = [t for t, n in self._in_flight.items() if n >= self._cap(t)]
        saturated += [t for t in self._probes_unrecorded if t not in self._in_flight]
        capacity = runtime.settings.delivery_concurrency
        claimed = await queue.claim_deliveries(
            runtime.pool,
            limit,
            runtime.settings.delivery_lease_seconds,
            saturated,
            in_flight=dict(self._client_in_flight),
            capacity=capacity,
            reserve=reserve(capacity),
            fair_share=runtime.settings.delivery_fair_share,
            traced=tracing.enabled(),
        )
        taken: list[asyncpg.Record] = []
        over_cap: list[uuid.UUID] = []
        for row in claimed.rows:
            target = row["target"]
            if row["probing"]:
                self._probing.add(target)
            else:
                self._probing.discard(target)
            if self._in_flight[target] >= self._cap(target) or target in self._probes_unrecorded:
                over_cap.append(row["id"])
                continue
            self._in_flight[target] += 1
            self._client_in_flight[row["client_id"]] += 1
            taken.append(row)
        if over_cap:
            await queue.release_deliveries(runtime.pool, over_cap)
        # Targets skipped or handed back for their cap here come free as their deliveries end.
        self.held_back = claimed.held_back or bool(saturated) or bool(over_cap)
        return taken

    def _cap(self, target: str) -> int:
        return 1 if target in self._probing else self.per_target

    async def work(self, runtime: Runtime, row: asyncpg.Record) -> None:
        logs.delivery_id.set(ids.encode(DELIVERY_ID_PREFIX, row["id"]))
        try:
            outcome = await self._attempt(row)
        finally:
            self._in_flight[row["target"]] -= 1
            if self._in_flight[row["target"]] <= 0:
                del self._in_flight[row["target"]]
                self._probing.discard(row["target"])
            self._client_in_flight[row["client_id"]] -= 1
            if self._client_in_flight[row["client_id"]] <= 0:
                del self._client_in_flight[row["client_id"]]
        probe_target = row["target"] if row["probing"] else None
        if probe_target is not None:
            self._probes_unrecorded[probe_target] += 1
        self._pending.append(_Sent(outcome, probe_target))
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

    def wake(self) -> None:
        self._has_pending.set()

    async def _attempt(self, row: asyncpg.Record) -> queue.Outcome:
        if not tracing.enabled():
            return await self._deliver(row)
        # A span of the job's trace (app.tracing), child of its POST /v1/jobs: every attempt of
        # every delivery of the job's events is one. A ping has no job: a trace of its own.
        event_type = str(row["payload"].get("type", "event"))
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
            body = orjson.dumps(row["payload"])
            message_id = ids.encode(EVENT_ID_PREFIX, row["event_id"])
            headers = signing.sign_headers(message_id, body, secrets, at=now)
            # The delivery span's context, so that the receiver's own spans join the job's
            # trace. Only with tracing on: a traceparent of a trace no one records is noise to
            # the receiver. Not signed (Standard Webhooks signs the id, time and body).
            tracing.inject(headers)
            result = await send(self.session, row["target_url"], body, headers)
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
            if sent.probe_target is not None:
                self._probes_unrecorded[sent.probe_target] -= 1
                if self._probes_unrecorded[sent.probe_target] <= 0:
                    del self._probes_unrecorded[sent.probe_target]
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
