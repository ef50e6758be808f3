"""a client's creates count their place in its queue on shards, not all on the clients row

Revision ID: 0020
Revises: 0019
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Every intake added its entry on the client's clients row, cap or no cap, and held that row's
# lock until its commit: one client's creates committed one at a time (measured: the intake
# statement 18-23 ms mean from one client at 64 connections, 0.27 ms from 16 clients). The
# shards' table, where the exits already go (`pg_backend_pid() % 64`), now holds two more
# figures, and is renamed for it:
#  - `entries`: jobs taken in without a cap, which have nothing to decide;
#  - `allowance`: places in a capped queue granted to the shard (counted on the clients row
#    when granted) and not yet taken, which the shard's creates spend without the clients row
#    (app.jobs.repository.INTAKE).
# Queued = clients.queue_entries + the shards' entries - exits - allowance. A job coming back
# to `queued` still counts on the clients row, under its lock, as a capped intake's grant does.
FUNCTION = """
CREATE OR REPLACE FUNCTION jobs_count_queued() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.status = 'queued' THEN
        UPDATE clients SET queue_entries = queue_entries + 1 WHERE id = NEW.client_id;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO client_queue_counts AS q (client_id, shard, exits)
        VALUES (OLD.client_id, pg_backend_pid() % 64, 1)
        ON CONFLICT (client_id, shard) DO UPDATE SET exits = q.exits + 1;
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


def upgrade() -> None:
    op.rename_table("client_queue_exits", "client_queue_counts")
    op.execute(
        "ALTER TABLE client_queue_counts RENAME CONSTRAINT pk_client_queue_exits "
        "TO pk_client_queue_counts"
    )
    op.execute(
        "ALTER TABLE client_queue_counts RENAME CONSTRAINT "
        "fk_client_queue_exits_client_id_clients TO fk_client_queue_counts_client_id_clients"
    )
    for column in ("entries", "allowance"):
        op.add_column(
            "client_queue_counts",
            sa.Column(column, sa.BigInteger(), server_default="0", nullable=False),
        )
    op.execute(FUNCTION)


def downgrade() -> None:
    # Folds the shards' entries back into the clients rows, and takes back the places granted
    # and not taken, with jobs and counts locked against moves.
    op.execute("LOCK TABLE jobs, client_queue_counts IN SHARE MODE")
    op.execute(
        "UPDATE clients SET queue_entries = queue_entries + q.n FROM "
        "(SELECT client_id, sum(entries - allowance) AS n FROM client_queue_counts "
        "GROUP BY client_id) q WHERE clients.id = q.client_id"
    )
    op.execute(PREVIOUS_FUNCTION)
    op.drop_column("client_queue_counts", "allowance")
    op.drop_column("client_queue_counts", "entries")
    op.execute(
        "ALTER TABLE client_queue_counts RENAME CONSTRAINT "
        "fk_client_queue_counts_client_id_clients TO fk_client_queue_exits_client_id_clients"
    )
    op.execute(
        "ALTER TABLE client_queue_counts RENAME CONSTRAINT pk_client_queue_counts "
        "TO pk_client_queue_exits"
    )
    op.rename_table("client_queue_counts", "client_queue_exits")
