"""Webhook endpoints: registration (with the SSRF check), changes, secrets, test events."""

from __future__ import annotations

import socket
import uuid
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from app import ids
from app.db.pool import Pool
from app.db.wakeup import Wakeup
from app.errors import Conflict, NotFound, ValidationFailed, ValidationIssue
from app.events.payloads import event_body
from app.ids import ENDPOINT_ID_PREFIX
from app.pagination import Page, decode_cursor, page_of
from app.webhooks import fanout, repository, signing, ssrf
from app.webhooks.schemas import EndpointCreate, EndpointUpdate


def _not_found(public_id: str) -> NotFound:
    return NotFound(f"No webhook endpoint {public_id!r}.")


def _uuid(public_id: str) -> uuid.UUID:
    value = ids.decode(ENDPOINT_ID_PREFIX, public_id)
    if value is None:
        raise _not_found(public_id)
    return value


async def check_target(url: str, *, allow_private: bool) -> None:
    """Refuses a URL whose host is, or resolves to, a non-public address."""
    if allow_private:
        return
    try:
        await ssrf.check_url(url)
    except ssrf.RefusedAddress as exc:
        msg = (
            f"resolves to {exc.address}, a private, loopback, link-local or otherwise "
            "non-public address"
        )
        raise ValidationFailed(
            [ValidationIssue(loc=["body", "url"], msg=msg, type="url_not_public")]
        ) from exc
    except (socket.gaierror, UnicodeError) as exc:
        raise ValidationFailed(
            [
                ValidationIssue(
                    loc=["body", "url"], msg="the host does not resolve", type="url_unresolvable"
                )
            ]
        ) from exc


class EndpointLimitReached(Conflict):
    title = "Endpoint limit reached"
    slug = "endpoint-limit-reached"


async def create(
    pool: Pool,
    client_id: uuid.UUID,
    body: EndpointCreate,
    *,
    allow_private: bool,
    max_endpoints: int | None = None,
) -> tuple[asyncpg.Record, str]:
    """A new endpoint; refused (EndpointLimitReached, nothing stored) when the client has
    `max_endpoints` already: every job's events fan out to each of them."""
    await check_target(body.url, allow_private=allow_private)
    secret = signing.new_secret()
    row = await repository.insert_endpoint(
        pool,
        endpoint_id=ids.uuid7(),
        client_id=client_id,
        url=body.url,
        description=body.description,
        event_types=list(body.event_types),
        secret=secret,
        cap=max_endpoints,
    )
    if row is None:
        raise EndpointLimitReached(
            f"This client has {max_endpoints} webhook endpoints, its limit; delete one first."
        )
    return row, secret


async def get(pool: Pool, client_id: uuid.UUID, public_id: str) -> asyncpg.Record:
    row = await repository.get_endpoint(pool, client_id, _uuid(public_id))
    if row is None:
        raise _not_found(public_id)
    return row


async def list_page(pool: Pool, client_id: uuid.UUID, *, limit: int, cursor: str | None) -> Page:
    after = decode_cursor(cursor) if cursor else None
    rows = await repository.list_endpoints(pool, client_id, after, limit + 1)
    return page_of(rows, limit)


async def count(pool: Pool, client_id: uuid.UUID) -> int:
    return await repository.count_endpoints(pool, client_id)


async def update(
    pool: Pool,
    client_id: uuid.UUID,
    public_id: str,
    body: EndpointUpdate,
    *,
    allow_private: bool,
) -> asyncpg.Record:
    if body.url is not None:
        await check_target(body.url, allow_private=allow_private)
    row = await repository.update_endpoint(
        pool,
        client_id,
        _uuid(public_id),
        url=body.url,
        description=("description" in body.model_fields_set, body.description),
        event_types=list(body.event_types) if body.event_types is not None else None,
        enabled=body.enabled,
    )
    if row is None:
        raise _not_found(public_id)
    return row


async def delete(pool: Pool, client_id: uuid.UUID, public_id: str) -> None:
    if not await repository.delete_endpoint(pool, client_id, _uuid(public_id)):
        raise _not_found(public_id)


async def rotate_secret(
    pool: Pool, client_id: uuid.UUID, public_id: str, *, grace_seconds: int, now: datetime
) -> str:
    """A new secret; the current one keeps signing for `grace_seconds` more."""
    secret = signing.new_secret()
    rotated = await repository.rotate_secret(
        pool,
        client_id,
        _uuid(public_id),
        old_expires_at=now + timedelta(seconds=grace_seconds),
        now=now,
        secret=secret,
        keep=signing.MAX_ACTIVE_SECRETS,
    )
    if not rotated:
        raise _not_found(public_id)
    return secret


async def send_test(
    pool: Pool, client_id: uuid.UUID, public_id: str, *, wakeup: Wakeup, now: datetime
) -> uuid.UUID:
    """Queues a `ping` event to this endpoint alone; returns the delivery's id."""
    endpoint = await get(pool, client_id, public_id)
    delivery_id = ids.uuid7()
    payload = event_body(
        "ping", now, {"endpoint_id": public_id, "message": "A test event from falrelay."}
    )
    async with pool.acquire() as conn, conn.transaction():
        await fanout.record_ping(
            conn,
            event_id=ids.uuid7(),
            delivery_id=delivery_id,
            client_id=client_id,
            endpoint_id=endpoint["id"],
            payload=payload,
            at=now,
        )
    wakeup.notify("deliver")
    return delivery_id


def active_secrets(secrets: list[dict[str, Any]], now: datetime) -> list[str]:
    """The secrets of a list (an endpoint's, a client's default) that sign at `now`, newest
    last; at most MAX_ACTIVE_SECRETS, also for a list written before that bound."""
    active = [
        s["secret"]
        for s in secrets
        if s.get("expires_at") is None or datetime.fromisoformat(s["expires_at"]) > now
    ]
    return active[-signing.MAX_ACTIVE_SECRETS :]


def _current(secrets: list[dict[str, Any]]) -> str:
    current: str = next(s["secret"] for s in reversed(secrets) if s.get("expires_at") is None)
    return current


async def default_secret(pool: Pool, client_id: uuid.UUID) -> str:
    """The client's current secret for per-job callback_url deliveries, made on first use."""
    return _current(await repository.client_secrets(pool, client_id, signing.new_secret()))


async def default_secrets(pool: Pool, client_id: uuid.UUID, now: datetime) -> list[str]:
    """Every default secret that signs at `now` (the current one and those in grace)."""
    secrets = await repository.client_secrets(pool, client_id, signing.new_secret())
    return active_secrets(secrets, now)


async def rotate_default_secret(
    pool: Pool, client_id: uuid.UUID, *, grace_seconds: int, now: datetime
) -> str:
    """A new default secret; the current one keeps signing for `grace_seconds` more."""
    secret = signing.new_secret()
    await repository.rotate_client_secret(
        pool,
        client_id,
        old_expires_at=now + timedelta(seconds=grace_seconds),
        now=now,
        secret=secret,
        keep=signing.MAX_ACTIVE_SECRETS,
    )
    return secret
