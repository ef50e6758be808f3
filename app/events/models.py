from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import ForeignKey, Index, Text, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, CreatedAtMixin


class Event(CreatedAtMixin, Base):
    """One job state change, written in the transaction that makes the change (an outbox).

    Its id is the `webhook-id` of every delivery of it, the same on every retry.
    """

    __tablename__ = "events"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    client_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("clients.id", ondelete="CASCADE"), nullable=False
    )
    # None for a `ping` (an endpoint's test event).
    job_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(Text, nullable=False)  # an `app.events.types.EventType`
    # The webhook body, fixed when the event happens: {"type", "timestamp", "data": job}.
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)

    __table_args__ = (Index("ix_events_job_created", "job_id", text("created_at")),)
