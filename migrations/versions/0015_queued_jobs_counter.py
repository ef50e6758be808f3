"""each client's count of queued jobs, kept by triggers: the queued-jobs cap in O(1)

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Counting a client's queued jobs on every create read up to the cap's worth of index entries
# (10,000 by default): intake slowed as the queue grew. The count is kept instead, by row
# triggers that fire only when a job enters or leaves `queued` (their WHEN clauses cost no
# function call on any other change). The clients row a create already locks for the cap check
# is the row the insert's trigger updates, so the two never wait on each other.
FUNCTION = """
CREATE FUNCTION jobs_count_queued() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND NEW.status = 'queued') THEN
        UPDATE clients SET queued_jobs = queued_jobs + 1 WHERE id = NEW.client_id;
    ELSE
        UPDATE clients SET queued_jobs = queued_jobs - 1 WHERE id = OLD.client_id;
    END IF;
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    op.add_column(
        "clients",
        sa.Column("queued_jobs", sa.Integer(), server_default="0", nullable=False),
    )
    op.execute(FUNCTION)
    op.execute(
        "CREATE TRIGGER jobs_queued_insert AFTER INSERT ON jobs FOR EACH ROW "
        "WHEN (NEW.status = 'queued') EXECUTE FUNCTION jobs_count_queued()"
    )
    op.execute(
        "CREATE TRIGGER jobs_queued_update AFTER UPDATE OF status ON jobs FOR EACH ROW "
        "WHEN ((OLD.status = 'queued') <> (NEW.status = 'queued')) "
        "EXECUTE FUNCTION jobs_count_queued()"
    )
    op.execute(
        "CREATE TRIGGER jobs_queued_delete AFTER DELETE ON jobs FOR EACH ROW "
        "WHEN (OLD.status = 'queued') EXECUTE FUNCTION jobs_count_queued()"
    )
    # The jobs queued now; a create waiting on this table's lock counts after it.
    op.execute("LOCK TABLE jobs IN SHARE MODE")
    op.execute(
        "UPDATE clients SET queued_jobs = q.n FROM "
        "(SELECT client_id, count(*) AS n FROM jobs WHERE status = 'queued' GROUP BY client_id) q "
        "WHERE clients.id = q.client_id"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER jobs_queued_delete ON jobs")
    op.execute("DROP TRIGGER jobs_queued_update ON jobs")
    op.execute("DROP TRIGGER jobs_queued_insert ON jobs")
    op.execute("DROP FUNCTION jobs_count_queued()")
    op.drop_column("clients", "queued_jobs")
