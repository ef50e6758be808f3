from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Double,
    ForeignKey,
    Integer,
    LargeBinary,
    Numeric,
    String,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, CreatedAtMixin


class Client(CreatedAtMixin, Base):
    """A tenant: everything a key can see hangs off one client."""

    __tablename__ = "clients"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    # Sign deliveries to jobs' own callback_url (endpoints have secrets of their own):
    # [{"secret": "whsec_...", "expires_at": null | ISO time}], like an endpoint's, so the
    # default secret rotates with a grace period too (app.webhooks.endpoints).
    webhook_secrets: Mapped[list[dict[str, Any]]] = mapped_column(
        JSONB, nullable=False, server_default=text("'[]'::jsonb")
    )
    # The current one of those, for a previous release during a rolling upgrade (it read
    # only this column); to be dropped in a later release.
    webhook_secret: Mapped[str | None] = mapped_column(Text)

    # Limits the operator sets (`falrelay clients limits`). NULL means the FALRELAY_DEFAULT_*
    # setting, which may itself be unlimited: read them through app.clients.limits, never raw.
    requests_per_second: Mapped[float | None] = mapped_column(Double)
    burst: Mapped[int | None] = mapped_column(Integer)
    max_endpoints: Mapped[int | None] = mapped_column(Integer)
    max_queued_jobs: Mapped[int | None] = mapped_column(Integer)
    max_in_flight: Mapped[int | None] = mapped_column(Integer)
    monthly_budget_usd: Mapped[Decimal | None] = mapped_column(Numeric(14, 4))
    # A client's share of contended capacity relative to the others (fair share).
    weight: Mapped[int] = mapped_column(Integer, server_default="1", nullable=False)
    # Places in the client's queue taken under the lock of this row: a capped intake's grant
    # (one statement, migrations 0016 and 0020), a job coming back to `queued`. The rest of the
    # count is on the client's shards, so that its creates and its submissions do not all
    # update this row (app.jobs.models.ClientQueueCount, migrations 0017 and 0020).
    queue_entries: Mapped[int] = mapped_column(BigInteger, server_default="0", nullable=False)

    __table_args__ = (
        CheckConstraint("requests_per_second > 0", name="requests_per_second_positive"),
        CheckConstraint("burst >= 1", name="burst_positive"),
        CheckConstraint("max_endpoints >= 0", name="max_endpoints_not_negative"),
        CheckConstraint("max_queued_jobs >= 0", name="max_queued_jobs_not_negative"),
        CheckConstraint("max_in_flight >= 0", name="max_in_flight_not_negative"),
        CheckConstraint("monthly_budget_usd >= 0", name="monthly_budget_usd_not_negative"),
        CheckConstraint("weight >= 1", name="weight_positive"),
    )


class RateLimit(Base):
    """GCRA state shared by every replica: per client and policy, the theoretical arrival time
    of the next request. The table is UNLOGGED (see migration 0007): losing it in a crash only
    hands every client a full burst again."""

    __tablename__ = "rate_limits"
    __table_args__ = ({"prefixes": ["UNLOGGED"]},)

    client_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("clients.id", ondelete="CASCADE"), primary_key=True
    )
    policy: Mapped[str] = mapped_column(Text, primary_key=True)
    tat: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    # The verdict on the last request, so that one upsert both decides and reports.
    allowed: Mapped[bool] = mapped_column(Boolean, nullable=False)


class ApiKey(CreatedAtMixin, Base):
    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    client_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("clients.id", ondelete="CASCADE"), index=True, nullable=False
    )
    # SHA-256 of the whole key: keys carry 256 random bits, so a slow hash buys nothing.
    key_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True, nullable=False)
    # The first characters of the key, for people to recognise it in listings and logs.
    prefix: Mapped[str] = mapped_column(String(16), nullable=False)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
