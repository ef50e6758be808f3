"""deliveries keep free space on each page, so a claim's lease is a HOT update

Revision ID: 0019
Revises: 0018
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A delivery claim's lease changes only `locked_until` and `attempt_count`, which no index
# holds: with room on the row's page, Postgres updates it in place (HOT) without an entry in
# each of the table's six indexes. Measured on the fan-out benchmark with the setting applied
# by hand: the claim's WAL records per delivery 4.9 -> 2.5, its buffers 22.9 -> 16.2. Pages
# written from now on keep 30 % free; those there already fill as they are rewritten.
FILLFACTOR = 70


def upgrade() -> None:
    op.execute(f"ALTER TABLE deliveries SET (fillfactor = {FILLFACTOR})")


def downgrade() -> None:
    op.execute("ALTER TABLE deliveries RESET (fillfactor)")
