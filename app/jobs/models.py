from __future__ import annotations

import enum
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    SmallInteger,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, CreatedAtMixin


class JobStatus(enum.StrEnum):
    QUEUED = "queued"  # stored, not yet at fal
    SUBMITTED = "submitted"  # fal said IN_QUEUE
    RUNNING = "running"  # fal said IN_PROGRESS
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED})

# A job's priority orders its client's own jobs for submission; stored as a number so that the
# claim reads them off an index in sending order.
PRIORITIES: dict[str, int] = {"high": 0, "normal": 1, "low": 2}
PRIORITY_NAMES: dict[int, str] = {number: name for name, number in PRIORITIES.items()}


class Job(CreatedAtMixin, Base):
    __tablename__ = "jobs"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    client_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("clients.id", ondelete="CASCADE"), nullable=False
    )
    model: Mapped[str] = mapped_column(Text, nullable=False)
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default=JobStatus.QUEUED)
    input: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    metadata_: Mapped[dict[str, str]] = mapped_column(
        "metadata", JSONB, nullable=False, server_default=text("'{}'::jsonb")
    )
    callback_url: Mapped[str | None] = mapped_column(Text)
    output: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONB)

    # What fal answered on submit: its request id and the URLs to use from then on (fal's docs:
    # "do not build these URLs yourself").
    fal_request_id: Mapped[str | None] = mapped_column(Text)
    fal_status_url: Mapped[str | None] = mapped_column(Text)
    fal_response_url: Mapped[str | None] = mapped_column(Text)
    fal_cancel_url: Mapped[str | None] = mapped_column(Text)

    idempotency_key: Mapped[str | None] = mapped_column(Text)
    # SHA-256 of the normalised request: same key + another body is refused.
    request_fingerprint: Mapped[bytes | None] = mapped_column()

    # The submission queue: a worker claims rows with status 'queued' whose next_attempt_at has
    # come and whose lease (locked_until) is empty or has run out.
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    # Status polls made at fal (the reconciler), and the last transient failure, for operators.
    polls: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), server_default=text("now()")
    )
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Fair submission: the order among the client's own jobs (PRIORITIES), and fal's start
    # deadline in seconds (X-Fal-Request-Timeout), NULL for none.
    priority: Mapped[int] = mapped_column(SmallInteger, nullable=False, server_default="1")
    start_timeout: Mapped[float | None] = mapped_column(Double)

    # Money (app.billing): what the job reserved at create, and once it is finished what it
    # cost (0 when it failed or was canceled) and the units fal billed, when fal said.
    estimated_cost_usd: Mapped[Decimal] = mapped_column(
        Numeric(14, 6), nullable=False, server_default=text("0")
    )
    cost_usd: Mapped[Decimal | None] = mapped_column(Numeric(14, 6))
    # The price of one billable unit for this job's input, fixed when it was accepted: the
    # final cost is what fal billed times this, whatever the catalog says by then. NULL on
    # jobs accepted before prices were kept (their model's price then applies).
    unit_price_usd: Mapped[Decimal | None] = mapped_column(Numeric(14, 6))
    billable_units: Mapped[Decimal | None] = mapped_column(Numeric)
    # Owned outputs (app.outputs): our copy of each output file, in the output's order, and
    # when a copy that failed is tried again (NULL: nothing left to copy).
    files: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB)
    mirror_retry_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Tracing (app.tracing): the W3C traceparent of the POST /v1/jobs that made the job, parent
    # of the spans of its submission, fal's callback and its deliveries; NULL with tracing off.
    trace_context: Mapped[str | None] = mapped_column(Text)

    submitted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=text("now()"), nullable=False
    )

    __table_args__ = (
        CheckConstraint(
            "status IN ('queued', 'submitted', 'running', 'succeeded', 'failed', 'canceled')",
            name="status",
        ),
        CheckConstraint("priority BETWEEN 0 AND 2", name="priority"),
        CheckConstraint("start_timeout > 1 AND start_timeout <= 86400", name="start_timeout"),
        # Listing, newest first, keyset on (created_at, id); with and without a status filter.
        Index("ix_jobs_client_created", "client_id", text("created_at DESC"), text("id DESC")),
        Index(
            "ix_jobs_client_status_created",
            "client_id",
            "status",
            text("created_at DESC"),
            text("id DESC"),
        ),
        # Idempotency comes from this constraint, not from a read before the insert.
        Index(
            "uq_jobs_client_idempotency_key",
            "client_id",
            "idempotency_key",
            unique=True,
            postgresql_where=text("idempotency_key IS NOT NULL"),
        ),
        Index(
            "uq_jobs_fal_request_id",
            "fal_request_id",
            unique=True,
            postgresql_where=text("fal_request_id IS NOT NULL"),
        ),
        # The submission claim: each client's due jobs in sending order (only rows still
        # waiting for fal), and its jobs at fal.
        Index(
            "ix_jobs_client_submission_due",
            "client_id",
            "priority",
            "next_attempt_at",
            postgresql_where=text("status = 'queued'"),
        ),
        Index(
            "ix_jobs_client_at_fal",
            "client_id",
            postgresql_where=text("status IN ('submitted', 'running')"),
        ),
        Index(
            "ix_jobs_client_submission_leased",
            "client_id",
            postgresql_where=text("status = 'queued' AND locked_until IS NOT NULL"),
        ),
        # The reconciler's rows at fal; for both claims, next_attempt_at is "look again at".
        Index(
            "ix_jobs_reconcile_due",
            "next_attempt_at",
            postgresql_where=text("status IN ('submitted', 'running')"),
        ),
        # Output arrived, copy to the operator's store due; and failed copies to try again.
        Index(
            "ix_jobs_mirror_due",
            "next_attempt_at",
            postgresql_where=text("status IN ('submitted', 'running') AND output IS NOT NULL"),
        ),
        Index(
            "ix_jobs_mirror_retry",
            "mirror_retry_at",
            postgresql_where=text("mirror_retry_at IS NOT NULL"),
        ),
    )


class ClientQueueCount(Base):
    """A client's way in and out of `queued`, counted on the shard of the database session
    that wrote it, so concurrent writers do not take turns on the client's one clients row:
    jobs taken in without a queued-jobs cap and places in a capped queue granted to the shard
    and not yet taken (intake, migration 0020), and jobs that left `queued` (a trigger on jobs,
    migration 0017). A client's queued jobs are its `clients.queue_entries` plus, over its
    shards, entries less exits less allowance (app.jobs.repository.INTAKE)."""

    __tablename__ = "client_queue_counts"

    client_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("clients.id", ondelete="CASCADE"), primary_key=True
    )
    shard: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    entries: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    allowance: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    exits: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
