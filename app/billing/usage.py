"""A client's usage over a time range, from its jobs: how many, their images, what they cost,
what unfinished ones reserve, and the same per day or per model."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal

from app.billing import repository
from app.billing.repository import GroupBy
from app.db.pool import Pool
from app.errors import ValidationFailed, ValidationIssue


@dataclass(frozen=True, slots=True)
class UsageGroup:
    key: str  # a UTC day (YYYY-MM-DD) or a model id
    jobs: int
    images: int
    cost_usd: Decimal


@dataclass(frozen=True, slots=True)
class Usage:
    start: datetime
    end: datetime
    jobs: int
    images: int
    cost_usd: Decimal
    reserved_usd: Decimal
    budget_usd: Decimal | None
    groups: list[UsageGroup]


def month_start(at: datetime, months_later: int = 0) -> datetime:
    utc = at.astimezone(UTC)
    index = utc.year * 12 + utc.month - 1 + months_later
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


async def usage(
    pool: Pool,
    client_id: uuid.UUID,
    *,
    start: datetime | None,
    end: datetime | None,
    group_by: GroupBy,
    default_budget: Decimal | None,
    now: datetime,
) -> Usage:
    """Jobs created in [start, end); by default the current UTC month."""
    start = start if start is not None else month_start(now)
    end = end if end is not None else month_start(now, 1)
    if end <= start:
        raise ValidationFailed(
            [ValidationIssue(loc=["query", "to"], msg="must be later than `from`", type="range")]
        )
    rows = await repository.usage_rows(pool, client_id, start, end, group_by)
    groups = [
        UsageGroup(row["key"], row["jobs"], int(row["images"]), row["cost_usd"]) for row in rows
    ]
    return Usage(
        start=start,
        end=end,
        jobs=sum(group.jobs for group in groups),
        images=sum(group.images for group in groups),
        cost_usd=sum((group.cost_usd for group in groups), Decimal(0)),
        reserved_usd=sum((row["reserved_usd"] for row in rows), Decimal(0)),
        budget_usd=await repository.budget(pool, client_id, default_budget),
        groups=groups,
    )


@dataclass(frozen=True, slots=True)
class DaySpend:
    day: str
    by_model: dict[str, Decimal]

    @property
    def total(self) -> Decimal:
        return sum(self.by_model.values(), Decimal(0))


async def spend_per_day(
    pool: Pool, client_id: uuid.UUID, start: datetime, end: datetime
) -> list[DaySpend]:
    """What finished jobs cost per UTC day and model, days with none left out."""
    days: dict[str, dict[str, Decimal]] = {}
    for row in await repository.spend_by_day_and_model(pool, client_id, start, end):
        days.setdefault(row["day"], {})[row["model"]] = row["amount"]
    return [DaySpend(day, by_model) for day, by_model in days.items()]


@dataclass(frozen=True, slots=True)
class MonthSpend:
    spent_usd: Decimal
    reserved_usd: Decimal
    budget_usd: Decimal | None  # None: unlimited


async def month_spend(
    pool: Pool, client_id: uuid.UUID, month: date, default_budget: Decimal | None
) -> MonthSpend:
    """The ledger's figures for the client's month (its first day): the ones every
    reservation is checked against, so what the console and the operator see is what the
    next 402 would say."""
    reserved, spent = await repository.month_figures(pool, client_id, month)
    budget = await repository.budget(pool, client_id, default_budget)
    return MonthSpend(spent_usd=spent, reserved_usd=reserved, budget_usd=budget)
