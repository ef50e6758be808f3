"""owned outputs: each job's mirrored files, and the retry of those that failed

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # app.outputs: one entry per file of the output, in the output's order: where our copy is
    # (`key`, `thumbnail_key`), what it is (`size`, `sha256`, `content_type`), or why it is not
    # there yet (`error`). NULL: the job has no mirrored output (mirroring off, or not done).
    op.add_column("jobs", sa.Column("files", postgresql.JSONB(astext_type=sa.Text())))
    # When a job whose copy failed is tried again; NULL when nothing is left to copy.
    op.add_column("jobs", sa.Column("mirror_retry_at", sa.DateTime(timezone=True)))
    op.create_index(
        "ix_jobs_mirror_retry",
        "jobs",
        ["mirror_retry_at"],
        postgresql_where=sa.text("mirror_retry_at IS NOT NULL"),
    )
    # Jobs whose output has arrived and awaits its copy (status still running): claimed by the
    # mirror loop in due order, never by reconciliation.
    op.create_index(
        "ix_jobs_mirror_due",
        "jobs",
        ["next_attempt_at"],
        postgresql_where=sa.text("status IN ('submitted', 'running') AND output IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_mirror_due", table_name="jobs")
    op.drop_index("ix_jobs_mirror_retry", table_name="jobs")
    op.drop_column("jobs", "mirror_retry_at")
    op.drop_column("jobs", "files")
