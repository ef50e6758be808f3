"""The shape of an event's webhook body. Events are written by `app.webhooks.fanout`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from app.db.pool import json_timestamp_sql
from app.events.types import EventType


def event_body(event_type: EventType, at: datetime, data: dict[str, Any]) -> dict[str, Any]:
    """`{"type", "timestamp", "data"}`: data is the job object (or, for a ping, a note)."""
    return {"type": event_type, "timestamp": at, "data": data}


def event_body_sql(event_type: EventType, at: str, data: str) -> str:
    """`event_body` as an SQL expression (jsonb): `at` a timestamptz expression, `data` a jsonb
    one."""
    timestamp = json_timestamp_sql(at)
    return (
        f"jsonb_build_object('type', '{event_type}', 'timestamp', to_jsonb({timestamp}), "
        f"'data', {data})"
    )
