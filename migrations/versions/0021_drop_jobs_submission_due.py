"""drop ix_jobs_submission_due: every job paid an entry in it twice, and nothing needs it

Revision ID: 0021
Revises: 0020
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The submission claim has read each client's due jobs on ix_jobs_client_submission_due since
# fair share came in; this index on next_attempt_at alone was left to the metrics' count of
# due jobs, which reads every due row either way and does so on the client index as well.
# Each job paid an entry at intake and another at its claim's lease (a lease is never a HOT
# update: locked_until is in ix_jobs_client_submission_leased's predicate).


def upgrade() -> None:
    op.drop_index("ix_jobs_submission_due", table_name="jobs")


def downgrade() -> None:
    op.execute(
        "CREATE INDEX ix_jobs_submission_due ON jobs (next_attempt_at) WHERE status = 'queued'"
    )
