"""New jobs stored together: the creates of one client that arrive while its last intake
statement runs are stored by the next one, in one statement (app.db.group_commit).

Why: a job's intake statement costs Postgres far more than its one row (the client's queue
count and month's spend upserted; the statement planned, run and committed), and the API one
round trip; stored together, those are paid once for the jobs of a statement (bench/README.md,
issue 17, seventh pass).

Every job keeps the answer it would have had alone. The statement for several is all or none
(`repository.intake_many`); when it takes none of them (a full queue, or too near its cap; a
budget that does not fit them all; an Idempotency-Key taken), each is stored on its own, which
refuses exactly the ones that it refuses alone.
"""

from __future__ import annotations

import uuid
from decimal import Decimal

import asyncpg

from app.db.group_commit import GroupCommit, each
from app.db.pool import Pool
from app.jobs import repository
from app.jobs.repository import NewJob

# The most jobs one statement stores: each is about a kilobyte of parameters.
MAX_JOBS = 64

# Creates are stored together only when everything their statement reads besides their rows
# is the same: the client, its queued-jobs cap and the default budget.
_Group = tuple[uuid.UUID, int | None, Decimal | None]
_Create = tuple[NewJob, str | None, bytes | None]
_Answer = asyncpg.Record | None


class Intake:
    """Stores new jobs (`store`), one statement at a time per client and its settings."""

    def __init__(self, pool: Pool, *, max_jobs: int = MAX_JOBS) -> None:
        self._pool = pool
        self._statements: GroupCommit[_Group, _Create, _Answer] = GroupCommit(
            self._store, max_items=max_jobs
        )

    async def store(
        self,
        job: NewJob,
        *,
        key: str | None,
        fingerprint: bytes | None,
        max_queued_jobs: int | None,
        default_budget: Decimal | None,
    ) -> asyncpg.Record | None:
        """`repository.intake`'s answer for this job: its row, or None when the client's queue
        is full; raises BudgetRefused or KeyTaken."""
        group = (job.client_id, max_queued_jobs, default_budget)
        return await self._statements.do(group, (job, key, fingerprint))

    async def _store(self, group: _Group, creates: list[_Create]) -> list[_Answer | BaseException]:
        client_id, cap, budget = group
        if len(creates) > 1:
            rows = await repository.intake_many(
                self._pool, client_id, creates, max_queued_jobs=cap, default_budget=budget
            )
            if rows is not None:
                return list(rows)
        # One create, or several that were not all taken: each on its own, at once.
        return await each(
            [
                repository.intake(
                    self._pool,
                    job,
                    key=key,
                    fingerprint=fingerprint,
                    max_queued_jobs=cap,
                    default_budget=budget,
                )
                for job, key, fingerprint in creates
            ]
        )

    async def aclose(self) -> None:
        """Stop storing: creates still waiting are cancelled."""
        await self._statements.aclose()
