"""uuid7(): deliveries made in SQL get time-ordered ids, as every row made in Python does

Revision ID: 0025
Revises: 0024
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0025"
down_revision: str | None = "0024"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The one row kind still made with gen_random_uuid() was the delivery (app.webhooks.fanout):
# random ids scatter its primary key's entries over every leaf of the index. Each delivery's
# primary key is written when it is made and again at its result (that update changes an
# indexed column, so it is not HOT), and read by the claim's lease and by the recording: with
# random ids each of those visits a leaf page of its own, and the index's pages are touched
# anew after each checkpoint (full-page images in the WAL). UUIDv7, as app.ids.uuid7 makes
# them: 48 bits of Unix milliseconds, version 7, the RFC 4122 variant, the rest random (from
# a v4, whose variant bits are already right). Postgres 18's uuidv7() is the same; this one runs
# on 15 and 16. Inlined by the planner (one SQL expression).
FUNCTION = """
CREATE FUNCTION uuid7() RETURNS uuid
LANGUAGE sql VOLATILE PARALLEL SAFE
AS $$
    SELECT encode(
        set_bit(set_bit(
            overlay(uuid_send(gen_random_uuid())
                    PLACING substring(int8send(
                        floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
                    FROM 1 FOR 6),
            52, 1), 53, 1),
        'hex')::uuid
$$
"""


def upgrade() -> None:
    op.execute(FUNCTION)


def downgrade() -> None:
    op.execute("DROP FUNCTION uuid7()")
