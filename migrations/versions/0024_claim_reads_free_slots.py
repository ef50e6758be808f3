"""the submission claim reads each client's due jobs up to the free slots, not the worker's

Revision ID: 0024
Revises: 0023
Create Date: 2026-11-30
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

from alembic import op

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The claim ranked each client's first $1 due jobs, $1 being the worker's free slots, however
# few the account-wide cap left free. No client can be given more than the free slots, so the
# rest was read for nothing, under the claims' lock. With FALRELAY_WORKER_CONCURRENCY at 128
# (it was 32) and many clients with a backlog, that would have been four times the rows ranked
# per claim at the default cap of 40. The function of migration 0023, this one LIMIT changed.
# With fair share on, the picks are the same: a client's picks are its first ranks. With it
# off (first due first, across clients), a client's job that is due earlier but ranked past the
# free slots by its lower priority is no longer picked before its own higher-priority ones.


def _0023_function() -> str:
    path = Path(__file__).with_name("0023_claim_submissions_function.py")
    spec = importlib.util.spec_from_file_location("falrelay_migration_0023", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    function: str = module.FUNCTION
    return function.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)


_BEFORE = "            LIMIT $1\n        ) AS j"
_AFTER = "            LIMIT (SELECT slots FROM free)\n        ) AS j"


def upgrade() -> None:
    function = _0023_function()
    assert function.count(_BEFORE) == 1
    op.execute(function.replace(_BEFORE, _AFTER))


def downgrade() -> None:
    op.execute(_0023_function())
