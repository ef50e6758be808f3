"""events outbox, reconciliation bookkeeping

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("client_id", sa.Uuid(), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("payload", postgresql.JSONB(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.id"],
            name=op.f("fk_events_client_id_clients"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_events_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
    )
    op.create_index("ix_events_job_created", "events", ["job_id", sa.text("created_at")])

    op.add_column("jobs", sa.Column("polls", sa.Integer(), server_default="0", nullable=False))
    op.add_column("jobs", sa.Column("last_error", sa.Text(), nullable=True))
    op.create_index(
        "ix_jobs_reconcile_due",
        "jobs",
        ["next_attempt_at"],
        postgresql_where=sa.text("status IN ('submitted', 'running')"),
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_reconcile_due", table_name="jobs")
    op.drop_column("jobs", "last_error")
    op.drop_column("jobs", "polls")
    op.drop_table("events")
