"""The shape of an event's webhook body. Events are written by `app.webhooks.fanout`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from app.events.types import EventType


def event_body(event_type: EventType, at: datetime, data: dict[str, Any]) -> dict[str, Any]:
    """`{"type", "timestamp", "data"}`: data is the job object (or, for a ping, a note)."""
    return {"type": event_type, "timestamp": at, "data": data}
