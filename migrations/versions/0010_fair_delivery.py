"""fair delivery: each endpoint's circuit breaker, and the index fair claims read

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # app.webhooks.retry_policy: breaker failures in a row (no answer, or a 5xx), and until
    # when the breaker holds the endpoint's deliveries (NULL: closed; past: half-open).
    op.add_column(
        "webhook_endpoints",
        sa.Column("consecutive_failures", sa.Integer(), server_default="0", nullable=False),
    )
    op.add_column(
        "webhook_endpoints",
        sa.Column("breaker_open_until", sa.DateTime(timezone=True), nullable=True),
    )
    # The fair claim reads each client's first due deliveries (app.worker.queue).
    op.create_index(
        "ix_deliveries_client_due",
        "deliveries",
        ["client_id", "next_attempt_at"],
        postgresql_where=sa.text("status = 'pending'"),
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_client_due", table_name="deliveries")
    op.drop_column("webhook_endpoints", "breaker_open_until")
    op.drop_column("webhook_endpoints", "consecutive_failures")
