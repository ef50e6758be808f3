"""Rows in the shape of the webhook schemas (built by hand: these are read often)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from app import ids
from app.ids import DELIVERY_ID_PREFIX, ENDPOINT_ID_PREFIX, EVENT_ID_PREFIX, JOB_ID_PREFIX


def endpoint_view(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": ids.encode(ENDPOINT_ID_PREFIX, row["id"]),
        "url": row["url"],
        "event_types": list(row["event_types"]),
        "description": row["description"],
        "enabled": row["enabled"],
        "disabled_reason": row["disabled_reason"],
        "failing_since": row["failing_since"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def attempt_view(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "attempted_at": row["attempted_at"],
        "duration_ms": row["duration_ms"],
        "status_code": row["status_code"],
        "error": row["error"],
        "response_body": row["response_body"],
    }


def delivery_view(
    row: asyncpg.Record, attempts: Sequence[asyncpg.Record] | None = None
) -> dict[str, Any]:
    view = {
        "id": ids.encode(DELIVERY_ID_PREFIX, row["id"]),
        "event_id": ids.encode(EVENT_ID_PREFIX, row["event_id"]),
        "event_type": row["event_type"],
        "job_id": ids.encode(JOB_ID_PREFIX, row["job_id"]) if row["job_id"] else None,
        "endpoint_id": (
            ids.encode(ENDPOINT_ID_PREFIX, row["endpoint_id"]) if row["endpoint_id"] else None
        ),
        "url": row["url"],
        "status": row["status"],
        "attempt_count": row["attempt_count"],
        "next_attempt_at": row["next_attempt_at"],
        "last_status_code": row["last_status_code"],
        "last_error": row["last_error"],
        "created_at": row["created_at"],
        "succeeded_at": row["succeeded_at"],
    }
    if attempts is not None:
        view["attempts"] = [attempt_view(attempt) for attempt in attempts]
    return view
