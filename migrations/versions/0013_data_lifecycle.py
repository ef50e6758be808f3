"""data lifecycle: the outbox of files to delete, and retention's index of finished jobs

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # app.lifecycle: keys of mirrored files whose job was deleted, until the store confirms.
    op.create_table(
        "file_deletions",
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column(
            "due_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_file_deletions")),
    )
    op.create_index("ix_file_deletions_due_at", "file_deletions", ["due_at"])
    # Built CONCURRENTLY: a plain CREATE INDEX would hold off every insert into jobs (intake)
    # for as long as it takes to read the whole table. A concurrent build that failed leaves an
    # invalid index behind, so a second run drops it first.
    with op.get_context().autocommit_block():
        op.drop_index(
            "ix_jobs_finished_completed",
            table_name="jobs",
            postgresql_concurrently=True,
            if_exists=True,
        )
        op.create_index(
            "ix_jobs_finished_completed",
            "jobs",
            ["completed_at"],
            postgresql_where=sa.text("status IN ('succeeded', 'failed', 'canceled')"),
            postgresql_concurrently=True,
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index(
            "ix_jobs_finished_completed",
            table_name="jobs",
            postgresql_concurrently=True,
            if_exists=True,
        )
    op.drop_index("ix_file_deletions_due_at", table_name="file_deletions")
    op.drop_table("file_deletions")
