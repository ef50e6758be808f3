"""tracing: the trace context of each job's POST /v1/jobs

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # app.tracing: the W3C traceparent of the request that created the job, the parent of its
    # submission, fal's callback and its deliveries. NULL when tracing was off. Nullable with no
    # default: a change to the catalog only, no rewrite of the table and no long lock.
    op.add_column("jobs", sa.Column("trace_context", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("jobs", "trace_context")
