"""What the operator does with clients: set their limits, look at them, list them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg

from app.billing.usage import month_spend, month_start
from app.catalog.pricing import usd_text
from app.clients import repository
from app.clients.limits import LIMIT_NAMES, LimitDefaults, explain
from app.db.pool import Pool
from app.jobs import service as jobs
from app.webhooks import endpoints


class ClientNotFound(LookupError):
    pass


class AmbiguousClient(LookupError):
    pass


async def find_client(pool: Pool, name_or_id: str) -> asyncpg.Record:
    """The one client with this name (or id)."""
    rows = await repository.find_clients(pool, name_or_id)
    if not rows:
        raise ClientNotFound(f"no client is named {name_or_id!r}")
    if len(rows) > 1:
        ids = ", ".join(str(row["id"]) for row in rows)
        raise AmbiguousClient(
            f"{len(rows)} clients are named {name_or_id!r}; name one by its id: {ids}"
        )
    return rows[0]


async def set_limits(pool: Pool, name_or_id: str, changes: dict[str, Any]) -> asyncpg.Record:
    """`changes`: limit name → new value, or None to go back to the default."""
    unknown = set(changes) - set(LIMIT_NAMES)
    if unknown:
        raise ValueError(f"not limits: {sorted(unknown)}")
    client = await find_client(pool, name_or_id)
    row = await repository.update_limits(pool, client["id"], changes)
    if row is None:
        raise ClientNotFound(f"client {client['id']} was deleted")
    return row


async def usage(
    pool: Pool, client_id: uuid.UUID, defaults: LimitDefaults, now: datetime
) -> dict[str, Any]:
    """What the client holds now, next to its limits, and this UTC month's spend from the
    ledger the budget is checked against (decimal strings, as the API writes amounts)."""
    unfinished = await jobs.count_unfinished(pool, client_id)
    month = month_start(now).date()
    spend = await month_spend(pool, client_id, month, defaults.monthly_budget_usd)
    return {
        "endpoints": await endpoints.count(pool, client_id),
        "queued_jobs": unfinished.get("queued", 0),
        "in_flight_jobs": unfinished.get("submitted", 0) + unfinished.get("running", 0),
        "month": month.strftime("%Y-%m"),
        "spent_usd": usd_text(spend.spent_usd),
        "reserved_usd": usd_text(spend.reserved_usd),
        "budget_usd": None if spend.budget_usd is None else usd_text(spend.budget_usd),
    }


def _json_value(value: Any) -> Any:
    # Money stays an exact decimal string; JSON numbers would be binary floats to most readers.
    return str(value) if isinstance(value, Decimal) else value


def describe_limits(row: asyncpg.Record, defaults: LimitDefaults) -> dict[str, Any]:
    """Each limit's effective value (null: unlimited) and whether it is the client's own."""
    return {
        name: {"value": _json_value(value), "source": source}
        for name, (value, source) in explain(row, defaults).items()
    }


async def show(
    pool: Pool, name_or_id: str, defaults: LimitDefaults, now: datetime | None = None
) -> dict[str, Any]:
    client = await find_client(pool, name_or_id)
    return {
        "id": str(client["id"]),
        "name": client["name"],
        "created_at": client["created_at"].isoformat(),
        "limits": describe_limits(client, defaults),
        "usage": await usage(pool, client["id"], defaults, now or datetime.now(UTC)),
    }


async def list_all(pool: Pool) -> list[dict[str, Any]]:
    """Every client, oldest first, with the limits set on it (the rest are the defaults)."""
    return [
        {
            "id": str(row["id"]),
            "name": row["name"],
            "created_at": row["created_at"].isoformat(),
            "active_keys": row["active_keys"],
            "own_limits": {
                name: _json_value(row[name])
                for name in LIMIT_NAMES
                if row[name] is not None and not (name == "weight" and row[name] == 1)
            },
        }
        for row in await repository.list_clients(pool)
    ]
