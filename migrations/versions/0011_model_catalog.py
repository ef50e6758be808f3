"""the model catalog: imported models, and the unit price each job was accepted at

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Models imported with `falrelay models import`; the shipped ones are package data.
    op.create_table(
        "models",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("document", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_models")),
    )
    # Fixed at acceptance, so a price change in the catalog never reprices a job in flight.
    op.add_column("jobs", sa.Column("unit_price_usd", sa.Numeric(14, 6), nullable=True))


def downgrade() -> None:
    op.drop_column("jobs", "unit_price_usd")
    op.drop_table("models")
