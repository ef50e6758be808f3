"""drop ix_deliveries_due: every delivery paid an entry in it, and nothing needs it

Revision ID: 0022
Revises: 0021
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As ix_jobs_submission_due (0021): the delivery claim reads each client's due deliveries on
# ix_deliveries_client_due, fair share on or off, and the metrics' count of due deliveries
# reads every due row either way, as an index-only scan of that index now. Each delivery paid
# an entry here when it was made and at each attempt that left it pending.


def upgrade() -> None:
    op.drop_index("ix_deliveries_due", table_name="deliveries")


def downgrade() -> None:
    op.execute(
        "CREATE INDEX ix_deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending'"
    )
