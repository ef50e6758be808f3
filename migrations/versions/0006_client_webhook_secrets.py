"""clients' default webhook secrets: a bounded list with expiry, like endpoints'

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29

`clients.webhook_secret` (one secret, no rotation) becomes `clients.webhook_secrets`, a jsonb
list `[{"secret": "whsec_...", "expires_at": null | time}]` like `webhook_endpoints.secrets`,
so the default secret can be rotated with a grace period. The old column stays (migrations
only add): this release keeps it equal to the current secret, so a replica of the previous
release signs with the current secret during a rolling upgrade; it is dropped in a later
release.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "clients",
        sa.Column(
            "webhook_secrets",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
    )
    # Every existing default secret becomes its client's current one (no expiry).
    op.execute(
        """
        UPDATE clients
        SET webhook_secrets = jsonb_build_array(
            jsonb_build_object('secret', webhook_secret, 'expires_at', NULL))
        WHERE webhook_secret IS NOT NULL
        """
    )


def downgrade() -> None:
    # The current secret goes back to the single column; grace secrets are forgotten.
    op.execute(
        """
        UPDATE clients SET webhook_secret = COALESCE(
            (SELECT s->>'secret' FROM jsonb_array_elements(webhook_secrets) AS s
             WHERE s->>'expires_at' IS NULL LIMIT 1),
            webhook_secret)
        """
    )
    op.drop_column("clients", "webhook_secrets")
