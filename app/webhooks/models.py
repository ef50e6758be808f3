from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, CreatedAtMixin


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"  # due now or later, or being sent
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # every attempt of the schedule failed, or the endpoint is gone


class WebhookEndpoint(CreatedAtMixin, Base):
    __tablename__ = "webhook_endpoints"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    client_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("clients.id", ondelete="CASCADE"), nullable=False
    )
    url: Mapped[str] = mapped_column(Text, nullable=False)
    description: Mapped[str | None] = mapped_column(Text)
    event_types: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False)
    # [{"secret": "whsec_...", "expires_at": null | ISO time}]: every unexpired secret signs,
    # so a receiver can switch to a rotated secret at its own pace.
    secrets: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, nullable=False)
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    # Set at the first failed attempt after a success; an endpoint failing for 5 days is disabled.
    failing_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The circuit breaker (app.webhooks.policy): breaker failures in a row, and until
    # when the endpoint's deliveries are held (NULL: closed; in the past: half-open, probing).
    consecutive_failures: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    breaker_open_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=text("now()"), nullable=False
    )

    __table_args__ = (
        Index(
            "ix_webhook_endpoints_client_created",
            "client_id",
            text("created_at DESC"),
            text("id DESC"),
        ),
    )


class Delivery(CreatedAtMixin, Base):
    """One event to one target: a registered endpoint, or a job's own callback_url."""

    __tablename__ = "deliveries"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    # The client and the job are the event's, copied from its row; the event's key removes the
    # delivery with either (migration 0033).
    client_id: Mapped[uuid.UUID] = mapped_column(nullable=False)
    event_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("events.id", ondelete="CASCADE"), nullable=False
    )
    job_id: Mapped[uuid.UUID | None] = mapped_column()
    endpoint_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("webhook_endpoints.id", ondelete="CASCADE")
    )
    # Only for a job's callback_url; an endpoint's deliveries go to its current url.
    url: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default=DeliveryStatus.PENDING)
    attempt_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    next_attempt_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), server_default=text("now()")
    )
    # The previous release's lease, kept for its processes during a rolling upgrade; the lease
    # is the delivery queue's since migration 0030, and the next release drops this column.
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_status_code: Mapped[int | None] = mapped_column(SmallInteger)
    last_error: Mapped[str | None] = mapped_column(Text)
    succeeded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=text("now()"), nullable=False
    )

    __table_args__ = (
        CheckConstraint("status IN ('pending', 'succeeded', 'failed')", name="status"),
        CheckConstraint("(endpoint_id IS NULL) <> (url IS NULL)", name="one_target"),
        Index(
            "ix_deliveries_endpoint_created",
            "endpoint_id",
            text("created_at DESC"),
            text("id DESC"),
        ),
        Index("ix_deliveries_job_created", "job_id", text("created_at DESC"), text("id DESC")),
        Index("ix_deliveries_event_id", "event_id"),
    )


class QueuedDelivery(Base):
    """A pending delivery, as the delivery claim reads and leases it (migration 0030): one row
    per delivery whose status is pending, gone once it succeeds or fails. Apart from the log
    (`deliveries`), so that neither a lease nor a result changes a column an index names."""

    __tablename__ = "delivery_queue"

    id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("deliveries.id", ondelete="CASCADE"), primary_key=True
    )
    client_id: Mapped[uuid.UUID] = mapped_column(nullable=False)
    event_id: Mapped[uuid.UUID] = mapped_column(nullable=False)
    endpoint_id: Mapped[uuid.UUID | None] = mapped_column()
    url: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    # The lease: until when a worker is sending it. attempt_count is the lease's token, each
    # claim's count one more (app.webhooks.queue).
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    attempt_count: Mapped[int] = mapped_column(Integer, nullable=False)

    __table_args__ = (
        # The delivery claim: each client's first due deliveries.
        Index("ix_delivery_queue_client_due", "client_id", "next_attempt_at"),
    )


class DeliveryAttempt(Base):
    __tablename__ = "delivery_attempts"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    delivery_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("deliveries.id", ondelete="CASCADE"), nullable=False
    )
    attempted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    duration_ms: Mapped[int] = mapped_column(Integer, nullable=False)
    status_code: Mapped[int | None] = mapped_column(SmallInteger)
    # The error class when there was no answer: timeout, connection, refused_address, ...
    error: Mapped[str | None] = mapped_column(Text)
    # The first 2 KB of the answer, for the person debugging their receiver.
    response_body: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index("ix_delivery_attempts_delivery_attempted", "delivery_id", "attempted_at"),
    )
