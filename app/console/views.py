"""Rows shaped for the console's templates: the API's views plus what a page shows around them."""

from __future__ import annotations

import calendar
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg

from app.jobs.models import JobStatus
from app.jobs.schemas import job_view
from app.webhooks.views import delivery_view

# A page showing work that is about to happen reloads itself until it has happened.
SOON = timedelta(seconds=30)


def job_card(row: asyncpg.Record) -> dict[str, Any]:
    job = job_view(row)
    images = (job["output"] or {}).get("images") or []
    return {
        **job,
        "prompt": job["input"].get("prompt", ""),
        "thumbnail": images[0] if images else None,
        "image_count": len(images),
    }


@dataclass(frozen=True, slots=True)
class Moment:
    at: datetime
    label: str
    kind: str  # the status it marks, for its colour
    since_created: timedelta


def timeline(job: Mapping[str, Any], events: Sequence[asyncpg.Record]) -> list[Moment]:
    """The job's life: stored, then each event in the order it happened."""
    created: datetime = job["created_at"]
    moments = [Moment(created, "created", "queued", timedelta(0))]
    for event in events:
        at: datetime = event["created_at"]
        moments.append(Moment(at, event["type"], event["type"].split(".")[-1], at - created))
    return moments


@dataclass
class Target:
    """Where a job's deliveries go: a registered endpoint, or the job's own callback_url."""

    url: str
    endpoint_id: str | None
    deliveries: list[dict[str, Any]] = field(default_factory=list)


def deliveries_with_attempts(
    rows: Sequence[asyncpg.Record], attempts: Mapping[uuid.UUID, Sequence[asyncpg.Record]]
) -> list[dict[str, Any]]:
    return [delivery_view(row, attempts.get(row["id"], [])) for row in rows]


def by_target(deliveries: Sequence[dict[str, Any]]) -> list[Target]:
    """Deliveries grouped per target, each group's in the order the events happened."""
    targets: dict[tuple[str | None, str], Target] = {}
    for delivery in sorted(deliveries, key=lambda d: (d["created_at"], d["id"])):
        key = (delivery["endpoint_id"], delivery["url"])
        target = targets.setdefault(key, Target(delivery["url"], delivery["endpoint_id"]))
        target.deliveries.append(delivery)
    return list(targets.values())


def settling(
    deliveries: Sequence[dict[str, Any]], now: datetime, job: Mapping[str, Any] | None = None
) -> bool:
    """Whether something shown is about to change: a job still at work, or a delivery due
    within moments (a retry just asked for, the schedule's first quick attempts)."""
    if job is not None and not JobStatus(job["status"]).is_terminal:
        return True
    return any(
        d["status"] == "pending"
        and (d["next_attempt_at"] is None or d["next_attempt_at"] <= now + SOON)
        for d in deliveries
    )


_MONTH = re.compile(r"(\d{4})-(\d{2})")


def parse_month(text: str | None) -> datetime | None:
    """`YYYY-MM` as the start of that UTC month; None for anything else (the page then shows
    the current month rather than an error)."""
    match = _MONTH.fullmatch(text or "")
    if match is None or not (1 <= int(match[2]) <= 12 and 1970 <= int(match[1]) <= 9998):
        return None
    return datetime(int(match[1]), int(match[2]), 1, tzinfo=UTC)


def month_days(first: date) -> list[date]:
    """Every day of the month that starts on `first`."""
    count = calendar.monthrange(first.year, first.month)[1]
    return [first.replace(day=day) for day in range(1, count + 1)]
