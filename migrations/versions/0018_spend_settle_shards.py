"""a finished job settles on a shard of its client's month, not on the row reservations lock

Revision ID: 0018
Revises: 0017
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A client's month was one row: every reservation (intake) and every settle (each finished job)
# updated it, so a client's finishing jobs committed one at a time, and intake waited behind
# them (measured: 163 ms mean for fal's callback's succeeded transition in the end-to-end
# benchmark, almost all of it waiting on that row). The month is now rows by `shard`: shard 0
# is the reservations' row, the one lock of the budget's compare-and-set, as before; a job
# settled with the cost its transition booked (the estimate, or 0) adds to shard
# 1 + pg_backend_pid() % 64, the session's own, releasing its estimate there (reserved goes
# negative on those rows) and booking its cost. The month's figures are the sums
# (app.billing.repository).
#
# Why the budget stays exact: such a settle never raises what the month has used (cost <= the
# estimate it releases), so a reservation that misses one committed meanwhile can only over-
# count the month and refuse a moment early. A settle with fal's billed cost, which may exceed
# the estimate, stays on shard 0 and is waited for, as before.


def upgrade() -> None:
    op.add_column(
        "client_spend",
        sa.Column("shard", sa.SmallInteger(), server_default="0", nullable=False),
    )
    op.drop_constraint("pk_client_spend", "client_spend", type_="primary")
    op.create_primary_key("pk_client_spend", "client_spend", ["client_id", "month", "shard"])


def downgrade() -> None:
    # The shards folded back into each month's row 0, with settles locked out meanwhile.
    op.execute("LOCK TABLE client_spend IN EXCLUSIVE MODE")
    op.execute(
        "INSERT INTO client_spend AS s (client_id, month, shard, reserved_usd, spent_usd) "
        "SELECT client_id, month, 0, sum(reserved_usd), sum(spent_usd) FROM client_spend "
        "WHERE shard <> 0 GROUP BY client_id, month "
        "ON CONFLICT (client_id, month, shard) DO UPDATE "
        "SET reserved_usd = s.reserved_usd + EXCLUDED.reserved_usd, "
        "spent_usd = s.spent_usd + EXCLUDED.spent_usd"
    )
    op.execute("DELETE FROM client_spend WHERE shard <> 0")
    op.drop_constraint("pk_client_spend", "client_spend", type_="primary")
    op.create_primary_key("pk_client_spend", "client_spend", ["client_id", "month"])
    op.drop_column("client_spend", "shard")
