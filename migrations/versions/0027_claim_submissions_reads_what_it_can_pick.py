"""the submission claim reads each client's due jobs only as far as they could be picked

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-01
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from alembic import op

revision: str = "0027"
down_revision: str | None = "0026"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As migration 0026 did for the delivery claim. The claim ranked each client's first due jobs
# up to the free slots, for every client with any: with 1,000 clients each with 20 queued, a
# claim of 16 ranked 16,000 rows and cost 32 ms of Postgres CPU, under the claims' lock
# (bench: `python -m bench claims`). By fair share, a job is picked in order of its key
# (n + r) / weight, and each client's first due job has key (n + 1) / weight: no job with a key
# past the free-slots-th smallest of those is picked, as that many come before it (each client
# here is under its cap, so each first job fits). Each client's read stops at that key, and
# one past its cap (enough to see it is held back). The bound is skipped with fair share off:
# a client's jobs are read in priority order there, not in the order they are picked.
#
# A read cut by the bound can hide a client past its cap from `held_back`, but only when the
# claim took every free slot: then the worker claims again at once, and that claim sees it.


def _migration(name: str) -> ModuleType:
    path = Path(__file__).with_name(name)
    spec = importlib.util.spec_from_file_location(f"falrelay_migration_{path.stem}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _0024_function() -> str:
    """The function as migrations 0023 and 0024 left it, as CREATE OR REPLACE."""
    m0024 = _migration("0024_claim_reads_free_slots.py")
    function: str = m0024._0023_function()
    return function.replace(m0024._BEFORE, m0024._AFTER)


# What is replaced: from `ranked` (each client's due jobs, ranked) up to `picked`, which follows
# it, by _CTES.
_FROM, _TO = "    ranked AS (\n", "    picked AS (\n"
_CTES = """\
    -- The clients under their cap with a job due: a probe of ix_jobs_client_submission_due each
    -- (LATERAL ... LIMIT 1: as EXISTS, the planner may read the whole index in one join).
    heads AS (
        SELECT t.id, t.n, t.weight, t.cap FROM tenants t
        CROSS JOIN LATERAL (
            SELECT FROM jobs
            WHERE client_id = t.id AND status = 'queued' AND next_attempt_at <= now()
              AND (locked_until IS NULL OR locked_until <= now())
            LIMIT 1
        ) AS due
        WHERE t.cap IS NULL OR t.n < t.cap
    ),
    -- The free-slots-th smallest first key (NULL if fewer clients): nothing past it is picked.
    bound AS (
        SELECT (SELECT (n + 1)::float8 / weight FROM heads
                ORDER BY 1 OFFSET GREATEST((SELECT slots FROM free) - 1, 0) LIMIT 1) AS key
    ),
    ranked AS (
        SELECT j.id, j.next_attempt_at, h.n, h.weight, h.cap,
               row_number() OVER (PARTITION BY h.id ORDER BY j.priority, j.next_attempt_at, j.id)
                   AS r
        FROM heads h
        CROSS JOIN LATERAL (
            SELECT id, priority, next_attempt_at FROM jobs
            WHERE client_id = h.id AND status = 'queued' AND next_attempt_at <= now()
              AND (locked_until IS NULL OR locked_until <= now())
            ORDER BY priority, next_attempt_at
            -- Up to the bound's key and one past the cap (LEAST ignores a NULL of either); the
            -- margin keeps float rounding from cutting a job whose key ties with the bound.
            LIMIT CASE WHEN $5::bool
                       THEN GREATEST(0, LEAST((SELECT slots FROM free), h.cap - h.n + 1,
                                              floor((SELECT key FROM bound) * h.weight
                                                    - h.n + 1e-9)::int))
                       ELSE (SELECT slots FROM free) END
        ) AS j
    ),
"""


def upgrade() -> None:
    function = _0024_function()
    assert function.count(_FROM) == function.count(_TO) == 1
    start, end = function.index(_FROM), function.index(_TO)
    op.execute(function[:start] + _CTES + function[end:])


def downgrade() -> None:
    op.execute(_0024_function())
