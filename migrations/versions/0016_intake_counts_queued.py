"""intake counts its own queued job: the cap as a conditional increment in one statement

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A create's cap check was a locked read of the clients row, then the insert's trigger added
# one: the row stayed locked for the whole intake transaction, several round trips long. Intake
# is now one statement whose first step is the increment itself, conditional on room
# (app.jobs.repository.INTAKE), so the insert trigger's +1 would count each job twice. The
# triggers for leaving `queued`, coming back to it and deletes stay as they were.
#
# `intake_refused` lets that statement abort itself when a later step refuses after the
# increment (the budget): raising rolls the whole implicit transaction back.
REFUSED = """
CREATE FUNCTION intake_refused(reason text) RETURNS numeric LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'FR001', MESSAGE = reason;
END
$$
"""


def upgrade() -> None:
    op.execute("DROP TRIGGER jobs_queued_insert ON jobs")
    op.execute(REFUSED)


def downgrade() -> None:
    op.execute("DROP FUNCTION intake_refused(text)")
    op.execute(
        "CREATE TRIGGER jobs_queued_insert AFTER INSERT ON jobs FOR EACH ROW "
        "WHEN (NEW.status = 'queued') EXECUTE FUNCTION jobs_count_queued()"
    )
