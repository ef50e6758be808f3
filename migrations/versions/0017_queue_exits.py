"""a job leaving `queued` is counted on a shard of its client's own, not on the clients row

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The kept count of a client's queued jobs (0015) took one back on the clients row as each job
# left `queued`: every submission of a client's jobs updated that one row and held its lock
# until commit, so a client's submissions ran one commit at a time (measured: 47.5 ms of lock
# wait per `mark_submitted` in the queue benchmark, 32 in flight). The count is now two
# monotonic figures: `clients.queue_entries`, a job's intake adding one as before (and a job
# coming back to `queued`), and `client_queue_exits`, a job leaving `queued` adding one on the
# shard of the session that moved it (`pg_backend_pid() % 64`), so concurrent submissions
# write different rows (64: a pool's sessions, opened together, have consecutive pids, so up to
# 64 of them fall on different shards; with 16, the end-to-end benchmark's submissions still
# waited 2.6 ms each on one another). Queued = entries - the sum of the exits
# (app.jobs.repository.INTAKE). Both are bigint: they grow for as long as the client lives.
#
# A queued job deleted (its client deleted, which cascades) is taken off the entries, as
# before: its client's row may be gone, and the exits row would need it.
FUNCTION = """
CREATE OR REPLACE FUNCTION jobs_count_queued() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.status = 'queued' THEN
        UPDATE clients SET queue_entries = queue_entries + 1 WHERE id = NEW.client_id;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO client_queue_exits AS x (client_id, shard, exits)
        VALUES (OLD.client_id, pg_backend_pid() % 64, 1)
        ON CONFLICT (client_id, shard) DO UPDATE SET exits = x.exits + 1;
    ELSE
        UPDATE clients SET queue_entries = queue_entries - 1 WHERE id = OLD.client_id;
    END IF;
    RETURN NULL;
END
$$
"""

PREVIOUS_FUNCTION = """
CREATE OR REPLACE FUNCTION jobs_count_queued() RETURNS trigger LANGUAGE plpgsql AS $$
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
    op.create_table(
        "client_queue_exits",
        sa.Column("client_id", sa.Uuid(), nullable=False),
        sa.Column("shard", sa.SmallInteger(), nullable=False),
        sa.Column("exits", sa.BigInteger(), server_default="0", nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.id"],
            name=op.f("fk_client_queue_exits_client_id_clients"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("client_id", "shard", name=op.f("pk_client_queue_exits")),
    )
    # Exits start at zero, so the entries start at what is queued now (the kept count).
    op.alter_column("clients", "queued_jobs", new_column_name="queue_entries")
    op.alter_column("clients", "queue_entries", type_=sa.BigInteger(), existing_type=sa.Integer())
    op.execute(FUNCTION)


def downgrade() -> None:
    # Takes the exits back off the entries, then drops them, with jobs locked against moves.
    op.execute("LOCK TABLE jobs IN SHARE MODE")
    op.execute(
        "UPDATE clients SET queue_entries = queue_entries - x.n FROM "
        "(SELECT client_id, sum(exits) AS n FROM client_queue_exits GROUP BY client_id) x "
        "WHERE clients.id = x.client_id"
    )
    op.alter_column("clients", "queue_entries", type_=sa.Integer(), existing_type=sa.BigInteger())
    op.alter_column("clients", "queue_entries", new_column_name="queued_jobs")
    op.execute(PREVIOUS_FUNCTION)
    op.drop_table("client_queue_exits")
