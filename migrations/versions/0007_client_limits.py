"""per-client limits (rate, caps, in flight, budget, weight) and shared rate-limit state

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# NULL in a limit column means "the FALRELAY_DEFAULT_* setting", which may itself be unlimited
# (app.clients.limits resolves both into a client's effective limits).
LIMIT_CHECKS = {
    "requests_per_second_positive": "requests_per_second > 0",
    "burst_positive": "burst >= 1",
    "max_endpoints_not_negative": "max_endpoints >= 0",
    "max_queued_jobs_not_negative": "max_queued_jobs >= 0",
    "max_in_flight_not_negative": "max_in_flight >= 0",
    "monthly_budget_usd_not_negative": "monthly_budget_usd >= 0",
    "weight_positive": "weight >= 1",
}


def upgrade() -> None:
    op.add_column("clients", sa.Column("requests_per_second", sa.Double(), nullable=True))
    op.add_column("clients", sa.Column("burst", sa.Integer(), nullable=True))
    op.add_column("clients", sa.Column("max_endpoints", sa.Integer(), nullable=True))
    op.add_column("clients", sa.Column("max_queued_jobs", sa.Integer(), nullable=True))
    op.add_column("clients", sa.Column("max_in_flight", sa.Integer(), nullable=True))
    op.add_column("clients", sa.Column("monthly_budget_usd", sa.Numeric(14, 4), nullable=True))
    op.add_column("clients", sa.Column("weight", sa.Integer(), server_default="1", nullable=False))
    for name, condition in LIMIT_CHECKS.items():
        op.create_check_constraint(op.f(f"ck_clients_{name}"), "clients", condition)

    # GCRA state: per client and policy, the theoretical arrival time of the next request.
    # UNLOGGED: every limited request writes it, and WAL for it would buy nothing worth having.
    # A crash empties the table, which only gives every client a full burst again; a standby
    # (or a failover) starts from empty for the same reason.
    op.create_table(
        "rate_limits",
        sa.Column("client_id", sa.Uuid(), nullable=False),
        sa.Column("policy", sa.Text(), nullable=False),
        sa.Column("tat", sa.DateTime(timezone=True), nullable=False),
        sa.Column("allowed", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.id"],
            name=op.f("fk_rate_limits_client_id_clients"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("client_id", "policy", name=op.f("pk_rate_limits")),
        prefixes=["UNLOGGED"],
    )


def downgrade() -> None:
    op.drop_table("rate_limits")
    for name in LIMIT_CHECKS:
        op.drop_constraint(op.f(f"ck_clients_{name}"), "clients", type_="check")
    for column in (
        "weight",
        "monthly_budget_usd",
        "max_in_flight",
        "max_queued_jobs",
        "max_endpoints",
        "burst",
        "requests_per_second",
    ):
        op.drop_column("clients", column)
