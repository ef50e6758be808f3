"""fair submission: job priority and start timeout, and the index fair claims read

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # 0 high, 1 normal, 2 low: a number, so that a client's due jobs come off the index below
    # in the order they are sent (app.jobs.models.PRIORITIES names them).
    op.add_column(
        "jobs", sa.Column("priority", sa.SmallInteger(), server_default="1", nullable=False)
    )
    op.create_check_constraint(op.f("ck_jobs_priority"), "jobs", "priority BETWEEN 0 AND 2")
    # fal's start deadline (X-Fal-Request-Timeout), in seconds; NULL: none.
    op.add_column("jobs", sa.Column("start_timeout", sa.Double(), nullable=True))
    op.create_check_constraint(
        op.f("ck_jobs_start_timeout"), "jobs", "start_timeout > 1 AND start_timeout <= 86400"
    )
    # The fair claim reads each client's first due jobs in sending order...
    op.create_index(
        "ix_jobs_client_submission_due",
        "jobs",
        ["client_id", "priority", "next_attempt_at"],
        postgresql_where=sa.text("status = 'queued'"),
    )
    # ...and counts each client's requests in flight: its jobs at fal, and its queued jobs
    # leased for submission (every path that puts a job back in the queue clears the lease).
    op.create_index(
        "ix_jobs_client_at_fal",
        "jobs",
        ["client_id"],
        postgresql_where=sa.text("status IN ('submitted', 'running')"),
    )
    op.create_index(
        "ix_jobs_client_submission_leased",
        "jobs",
        ["client_id"],
        postgresql_where=sa.text("status = 'queued' AND locked_until IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_client_submission_leased", table_name="jobs")
    op.drop_index("ix_jobs_client_at_fal", table_name="jobs")
    op.drop_index("ix_jobs_client_submission_due", table_name="jobs")
    op.drop_constraint(op.f("ck_jobs_start_timeout"), "jobs", type_="check")
    op.drop_column("jobs", "start_timeout")
    op.drop_constraint(op.f("ck_jobs_priority"), "jobs", type_="check")
    op.drop_column("jobs", "priority")
