"""the submission claim leases its picks by primary key, whatever the statistics

Revision ID: 0032
Revises: 0031
Create Date: 2026-12-01
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from alembic import op

revision: str = "0032"
down_revision: str | None = "0031"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The claim's lease (its `claimed` step) named the status as a subquery so that the partial
# index of queued jobs would not match it, but the status stayed an index condition: the
# second column of ix_jobs_client_status_created. A plan made while `jobs` was small and never
# analysed (a new deployment's first claims: plpgsql keeps a statement's generic plan from
# its sixth call) read that whole index for the picks, every queued job's entry on each claim,
# as the queue grew, until autovacuum's first ANALYZE (its naptime is a minute). In the
# end-to-end benchmark (a database made for the run) the claim went from 0.36 to 0.94 ms over
# 30 s, 387 buffers read to lease 7 jobs; in the test, 6,000 rows read for a claim of 16 with
# 3,000 queued.
#
# The status is now compared in a CASE, which is neither an index condition nor a proof of a
# partial index's predicate: the primary key (`id = ANY(...)`) is the one index left to read,
# and sequential scans are not considered while the claim runs (below).
#
# The same plan, made on a small or empty `jobs`, also counted what is in flight by a
# sequential scan of the table. The function now runs with them off, as the delivery claim
# does (migration 0026): every read it makes has an index that bounds it.

_BEFORE = """\
        -- = ANY(ARRAY(...)), not IN (SELECT ...): the planner guesses a hundred-odd picks and
        -- hash-joins every queued row against them (measured: 5 ms with 10,000 queued); by primary
        -- key it costs nothing. The status as a subquery: as a literal it matches the partial
        -- index of queued jobs, which the planner then reads whole to filter the picks from it.
        WHERE id = ANY(ARRAY(SELECT id FROM picked)) AND status = (SELECT 'queued'::text)
"""
_AFTER = """\
        -- = ANY(ARRAY(...)), not IN (SELECT ...): the planner guesses a hundred-odd picks and
        -- hash-joins every queued row against them (measured: 5 ms with 10,000 queued); by primary
        -- key it costs nothing. The status in a CASE: as a condition of its own it matches an
        -- index (the partial one of queued jobs, or one naming the status), which a plan made
        -- on a small table then reads whole to filter the picks from it (migration 0032).
        WHERE id = ANY(ARRAY(SELECT id FROM picked))
          AND CASE status WHEN 'queued' THEN true ELSE false END
"""
_SETTINGS_BEFORE = "SET enable_bitmapscan = off\n"
_SETTINGS_AFTER = "SET enable_bitmapscan = off\nSET enable_seqscan = off\n"


def _0027() -> ModuleType:
    path = Path(__file__).with_name("0027_claim_submissions_reads_what_it_can_pick.py")
    spec = importlib.util.spec_from_file_location("falrelay_migration_0027", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _0027_function() -> str:
    """The function as migration 0027 left it, as CREATE OR REPLACE."""
    m0027 = _0027()
    function = m0027._0024_function()
    start, end = function.index(m0027._FROM), function.index(m0027._TO)
    return function[:start] + m0027._CTES + function[end:]


def upgrade() -> None:
    function = _0027_function()
    assert function.count(_BEFORE) == function.count(_SETTINGS_BEFORE) == 1
    function = function.replace(_BEFORE, _AFTER).replace(_SETTINGS_BEFORE, _SETTINGS_AFTER)
    op.execute(function)


def downgrade() -> None:
    op.execute(_0027_function())
