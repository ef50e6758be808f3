"""job cost: estimated reservation and final cost

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Jobs stored before this release reserved nothing and cost nothing we know of.
    op.add_column(
        "jobs",
        sa.Column(
            "estimated_cost_usd", sa.Numeric(14, 6), server_default=sa.text("0"), nullable=False
        ),
    )
    op.add_column("jobs", sa.Column("cost_usd", sa.Numeric(14, 6), nullable=True))
    op.add_column("jobs", sa.Column("billable_units", sa.Numeric(), nullable=True))
    op.create_table(
        "client_spend",
        sa.Column("client_id", sa.Uuid(), nullable=False),
        sa.Column("month", sa.Date(), nullable=False),
        sa.Column("reserved_usd", sa.Numeric(14, 6), server_default=sa.text("0"), nullable=False),
        sa.Column("spent_usd", sa.Numeric(14, 6), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.id"],
            name=op.f("fk_client_spend_client_id_clients"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("client_id", "month", name=op.f("pk_client_spend")),
    )


def downgrade() -> None:
    op.drop_table("client_spend")
    op.drop_column("jobs", "billable_units")
    op.drop_column("jobs", "cost_usd")
    op.drop_column("jobs", "estimated_cost_usd")
