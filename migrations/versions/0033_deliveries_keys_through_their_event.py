"""a delivery's client and job are its event's: their own foreign keys go

Revision ID: 0033
Revises: 0032
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0033"
down_revision: str | None = "0032"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A delivery's client_id and job_id are copies of its event's, written from the event's row in
# the statement that records both (app/webhooks/fanout.py). Its foreign key to the event
# (ON DELETE CASCADE) already removes it with the event, and the event goes with its job and
# with its client, through the event's own keys. The two keys dropped here only checked again,
# on every delivery inserted, what that statement just copied, and cascaded a second time:
# - an insert probed `clients` and `jobs` once more. The client's row is shared by every
#   transaction of that client at once (FOR KEY SHARE), which makes its check several times
#   dearer than the others (about 19 us against 8, measured with pg_stat_statements);
# - deleting a job ran one more cascade query, `deliveries` by job_id, found empty by then.
# No code deletes a client; an operator who deletes one by hand still loses its deliveries,
# through its events. The purge deletes a job's deliveries itself, by job
# (ix_deliveries_job_created, which stays).
#
# The previous release runs on this schema unchanged: it writes the same rows and relies on
# neither key.

_KEYS = (
    ("fk_deliveries_client_id_clients", "client_id", "clients"),
    ("fk_deliveries_job_id_jobs", "job_id", "jobs"),
)


def upgrade() -> None:
    for name, _, _ in _KEYS:
        op.drop_constraint(name, "deliveries", type_="foreignkey")


def downgrade() -> None:
    for name, column, table in _KEYS:
        op.create_foreign_key(name, "deliveries", table, [column], ["id"], ondelete="CASCADE")
