"""each client's jobs at fal are counted on its shards, not counted over again by every claim

Revision ID: 0025
Revises: 0024
Create Date: 2026-11-30
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision: str = "0025"
down_revision: str | None = "0024"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Every submission claim counted each client's jobs at fal (`submitted` or `running`) off
# ix_jobs_client_at_fal, under the claims' lock: its cost grew with what was at fal, not with
# what it claimed. In the queue benchmark, where jobs stay at fal, falrelay's rate fell from
# 2,899 to 2,444 jobs/s over three runs (15,500 jobs) while Postgres's CPU per job rose from
# 0.10 to 0.29 ms. A deployment with thousands of jobs at fal pays the same on every claim.
#
# Now the trigger that counts a job's way out of `queued` (0017, 0020) counts its way in and
# out of fal too, on the same shard rows (`pg_backend_pid() % 64`):
#  - `fal_entries`: queued -> submitted or running. The same row and statement as the job's
#    exit from `queued`, so a submission's record writes nothing more than before.
#  - `fal_exits`: submitted or running -> anything else (finished, or back to `queued`), and a
#    job at fal deleted while its client lives (a client's delete cascades to its shards).
# A job inserted at fal counts too: intake only ever inserts `queued`, but an operator's or a
# test's INSERT must not leave the count short.
# A client's jobs at fal = the sum over its shards of fal_entries - fal_exits. The claim reads
# that sum (a row per shard in use, whatever is at fal); the leased queued jobs are still
# counted, as they are few (at most the workers' slots) and leases expire without a write.
# ix_jobs_client_at_fal had no other reader and goes.
COUNTER = """
CREATE OR REPLACE FUNCTION jobs_count_queued() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    was_queued bool := OLD.status = 'queued';
    was_at_fal bool := OLD.status IN ('submitted', 'running');
    is_at_fal bool;
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO client_queue_counts AS q (client_id, shard, fal_entries)
        VALUES (NEW.client_id, pg_backend_pid() % 64, 1)
        ON CONFLICT (client_id, shard) DO UPDATE SET fal_entries = q.fal_entries + 1;
        RETURN NULL;
    ELSIF TG_OP = 'DELETE' THEN
        IF was_queued THEN
            UPDATE clients SET queue_entries = queue_entries - 1 WHERE id = OLD.client_id;
        ELSE
            -- At fal. In a client's delete, its row is already gone, and its shards go too.
            INSERT INTO client_queue_counts AS q (client_id, shard, fal_exits)
            SELECT OLD.client_id, pg_backend_pid() % 64, 1
            WHERE EXISTS (SELECT FROM clients WHERE id = OLD.client_id)
            ON CONFLICT (client_id, shard) DO UPDATE SET fal_exits = q.fal_exits + 1;
        END IF;
        RETURN NULL;
    END IF;
    is_at_fal := NEW.status IN ('submitted', 'running');
    -- The shard's row before the clients row: intake locks them in that order.
    IF was_queued OR was_at_fal <> is_at_fal THEN
        INSERT INTO client_queue_counts AS q (client_id, shard, exits, fal_entries, fal_exits)
        VALUES (OLD.client_id, pg_backend_pid() % 64, was_queued::int,
                (is_at_fal AND NOT was_at_fal)::int, (was_at_fal AND NOT is_at_fal)::int)
        ON CONFLICT (client_id, shard) DO UPDATE
        SET exits = q.exits + EXCLUDED.exits, fal_entries = q.fal_entries + EXCLUDED.fal_entries,
            fal_exits = q.fal_exits + EXCLUDED.fal_exits;
    END IF;
    IF NEW.status = 'queued' THEN
        UPDATE clients SET queue_entries = queue_entries + 1 WHERE id = NEW.client_id;
    END IF;
    RETURN NULL;
END
$$
"""

PREVIOUS_COUNTER = """
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

_AT_FAL = "status IN ('submitted', 'running')"
TRIGGERS = (
    "CREATE TRIGGER jobs_at_fal_insert AFTER INSERT ON jobs FOR EACH ROW "
    f"WHEN (NEW.{_AT_FAL}) EXECUTE FUNCTION jobs_count_queued()",
    "CREATE TRIGGER jobs_queued_update AFTER UPDATE OF status ON jobs FOR EACH ROW "
    "WHEN ((OLD.status = 'queued') <> (NEW.status = 'queued') "
    f"OR (OLD.{_AT_FAL}) <> (NEW.{_AT_FAL})) EXECUTE FUNCTION jobs_count_queued()",
    "CREATE TRIGGER jobs_queued_delete AFTER DELETE ON jobs FOR EACH ROW "
    "WHEN (OLD.status IN ('queued', 'submitted', 'running')) EXECUTE FUNCTION jobs_count_queued()",
)
PREVIOUS_TRIGGERS = (
    "CREATE TRIGGER jobs_queued_update AFTER UPDATE OF status ON jobs FOR EACH ROW "
    "WHEN ((OLD.status = 'queued') <> (NEW.status = 'queued')) "
    "EXECUTE FUNCTION jobs_count_queued()",
    "CREATE TRIGGER jobs_queued_delete AFTER DELETE ON jobs FOR EACH ROW "
    "WHEN (OLD.status = 'queued') EXECUTE FUNCTION jobs_count_queued()",
)

_COUNTED_FLIGHT = """\
        SELECT client_id, sum(n)::bigint AS n FROM (
            SELECT client_id, fal_entries - fal_exits AS n FROM client_queue_counts
            UNION ALL
            SELECT client_id, 1 FROM jobs
            WHERE status = 'queued' AND locked_until IS NOT NULL AND locked_until > now()
        ) AS f
"""
_COUNTED_BY_ROW = """\
        SELECT client_id, count(*) AS n FROM (
            SELECT client_id FROM jobs WHERE status IN ('submitted', 'running')
            UNION ALL
            SELECT client_id FROM jobs
            WHERE status = 'queued' AND locked_until IS NOT NULL AND locked_until > now()
        ) AS f
"""


def _previous_claim() -> str:
    """The claim function as migration 0024 left it."""
    path = Path(__file__).with_name("0024_claim_reads_free_slots.py")
    spec = importlib.util.spec_from_file_location("falrelay_migration_0024", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    function: str = module._0023_function()
    return function.replace(module._BEFORE, module._AFTER)


def upgrade() -> None:
    for column in ("fal_entries", "fal_exits"):
        op.add_column(
            "client_queue_counts",
            sa.Column(column, sa.BigInteger(), server_default="0", nullable=False),
        )
    # What is at fal now, on shard 0; a transition waiting on this lock counts after it.
    op.execute("LOCK TABLE jobs IN SHARE MODE")
    op.execute(
        "INSERT INTO client_queue_counts AS q (client_id, shard, fal_entries) "
        f"SELECT client_id, 0, count(*) FROM jobs WHERE {_AT_FAL} GROUP BY client_id "
        "ON CONFLICT (client_id, shard) DO UPDATE SET fal_entries = EXCLUDED.fal_entries"
    )
    op.execute(COUNTER)
    op.execute("DROP TRIGGER jobs_queued_update ON jobs")
    op.execute("DROP TRIGGER jobs_queued_delete ON jobs")
    for trigger in TRIGGERS:
        op.execute(trigger)
    claim = _previous_claim()
    assert claim.count(_COUNTED_BY_ROW) == 1
    op.execute(claim.replace(_COUNTED_BY_ROW, _COUNTED_FLIGHT))
    op.drop_index("ix_jobs_client_at_fal", table_name="jobs")


def downgrade() -> None:
    op.create_index(
        "ix_jobs_client_at_fal",
        "jobs",
        ["client_id"],
        postgresql_where=sa.text(_AT_FAL),
    )
    op.execute(_previous_claim())
    op.execute("DROP TRIGGER jobs_at_fal_insert ON jobs")
    op.execute("DROP TRIGGER jobs_queued_update ON jobs")
    op.execute("DROP TRIGGER jobs_queued_delete ON jobs")
    for trigger in PREVIOUS_TRIGGERS:
        op.execute(trigger)
    op.execute(PREVIOUS_COUNTER)
    op.drop_column("client_queue_counts", "fal_exits")
    op.drop_column("client_queue_counts", "fal_entries")
