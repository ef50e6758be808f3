from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import Date, DateTime, ForeignKey, Numeric, SmallInteger, func, text
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base


class ClientSpend(Base):
    """A client's month, in UTC (a job counts in the month it was created): what its unfinished
    jobs reserve and what its finished ones cost, as the sums of its rows. Shard 0 is the lock
    every reservation of that client and month takes, so the budget check and the reservation
    are one compare-and-set; jobs settled at their booked cost add to shards 1-64, one per
    database session, so that finishing jobs do not wait for each other (migration 0018)."""

    __tablename__ = "client_spend"

    client_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("clients.id", ondelete="CASCADE"), primary_key=True
    )
    month: Mapped[date] = mapped_column(Date, primary_key=True)  # its first day
    shard: Mapped[int] = mapped_column(SmallInteger, primary_key=True, server_default="0")
    reserved_usd: Mapped[Decimal] = mapped_column(
        Numeric(14, 6), nullable=False, server_default=text("0")
    )
    spent_usd: Mapped[Decimal] = mapped_column(
        Numeric(14, 6), nullable=False, server_default=text("0")
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
