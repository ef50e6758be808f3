"""The delivery log: listing, one delivery with its attempts, retry, recover."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

from app import ids
from app.db.pool import Pool
from app.db.wakeup import Wakeup
from app.errors import NotFound
from app.ids import DELIVERY_ID_PREFIX
from app.pagination import Page, decode_cursor, page_of
from app.webhooks import repository
from app.webhooks.models import DeliveryStatus


def _uuid(public_id: str) -> uuid.UUID:
    value = ids.decode(DELIVERY_ID_PREFIX, public_id)
    if value is None:
        raise NotFound(f"No delivery {public_id!r}.")
    return value


async def list_page(
    pool: Pool,
    client_id: uuid.UUID,
    *,
    endpoint_id: uuid.UUID | None = None,
    job_id: uuid.UUID | None = None,
    status: DeliveryStatus | None,
    limit: int,
    cursor: str | None,
) -> Page:
    rows = await repository.list_deliveries(
        pool,
        client_id,
        endpoint_id=endpoint_id,
        job_id=job_id,
        status=status.value if status is not None else None,
        after=decode_cursor(cursor) if cursor else None,
        limit=limit + 1,
    )
    return page_of(rows, limit)


async def get(
    pool: Pool, client_id: uuid.UUID, public_id: str
) -> tuple[asyncpg.Record, list[asyncpg.Record]]:
    delivery_id = _uuid(public_id)
    row = await repository.get_delivery(pool, client_id, delivery_id)
    if row is None:
        raise NotFound(f"No delivery {public_id!r}.")
    return row, await repository.attempts(pool, delivery_id)


async def retry(pool: Pool, client_id: uuid.UUID, public_id: str, *, wakeup: Wakeup) -> None:
    if not await repository.retry_delivery(pool, client_id, _uuid(public_id)):
        raise NotFound(f"No delivery {public_id!r}.")
    wakeup.notify("deliver")


async def recover(
    pool: Pool, client_id: uuid.UUID, endpoint_id: uuid.UUID, since: datetime, *, wakeup: Wakeup
) -> int:
    count = await repository.recover_failed(pool, client_id, endpoint_id, since)
    if count:
        wakeup.notify("deliver")
    return count
