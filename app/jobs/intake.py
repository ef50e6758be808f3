"""New jobs stored together: the creates of one client that arrive while its last statement
runs are stored by the next one, in one statement (group commit).

Why: a job's intake statement costs Postgres far more than its one row (the client's queue
count and month's spend upserted, the statement planned, run and committed; bench/README.md,
issue 17, seventh pass). Stored together, those are paid once for the jobs of a statement, and
the API makes one round trip for them. A create waits for at most the statement before its own,
and only while one is running: alone, it goes at once.

Every job keeps the answer it would have had alone. The statement for several is all or none
(`repository.intake_many`); when it takes none of them (a full queue, or too near its cap; a
budget that does not fit them all; an Idempotency-Key taken), each is stored on its own, which
refuses exactly the ones that it refuses alone.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from decimal import Decimal

import asyncpg

from app.db.pool import Pool
from app.jobs import repository
from app.jobs.repository import NewJob

# The most jobs one statement stores: each is about a kilobyte of parameters.
MAX_JOBS = 64


@dataclass(frozen=True, slots=True)
class _Create:
    job: NewJob
    key: str | None
    fingerprint: bytes | None
    answer: asyncio.Future[asyncpg.Record | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


# Creates are stored together only when everything their statement reads besides their rows
# is the same: the client, its queued-jobs cap and the default budget.
_Group = tuple[uuid.UUID, int | None, Decimal | None]


class Intake:
    """Stores new jobs (`store`), one statement at a time per client and its settings."""

    def __init__(self, pool: Pool, *, max_jobs: int = MAX_JOBS) -> None:
        self._pool = pool
        self._max_jobs = max_jobs
        # Creates waiting for their client's running statement to end, by group; a group is
        # here for as long as a task stores its creates.
        self._waiting: dict[_Group, list[_Create]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

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
        group: _Group = (job.client_id, max_queued_jobs, default_budget)
        create = _Create(job, key, fingerprint)
        waiting = self._waiting.get(group)
        if waiting is None:
            self._waiting[group] = [create]
            task = asyncio.create_task(self._run(group))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            waiting.append(create)
        # The statement goes on without a caller that stops waiting: its job may be stored, as
        # when a request is dropped during its own statement.
        return await asyncio.shield(create.answer)

    async def _run(self, group: _Group) -> None:
        """Store the group's creates until none waits, as many as fit in each statement."""
        waiting = self._waiting[group]
        creates: list[_Create] = []
        try:
            while waiting:
                creates = waiting[: self._max_jobs]
                del waiting[: self._max_jobs]
                await self._store(group, creates)
        finally:
            del self._waiting[group]
            # Unanswered only when cancelled (the process is stopping).
            for create in (*creates, *waiting):
                create.answer.cancel()

    async def _store(self, group: _Group, creates: list[_Create]) -> None:
        client_id, cap, budget = group
        if len(creates) > 1:
            try:
                rows = await repository.intake_many(
                    self._pool,
                    client_id,
                    [(c.job, c.key, c.fingerprint) for c in creates],
                    max_queued_jobs=cap,
                    default_budget=budget,
                )
            except Exception as exc:
                for create in creates:
                    _settle(create.answer, exception=exc)
                return
            if rows is not None:
                for create, row in zip(creates, rows, strict=True):
                    _settle(create.answer, row)
                return
        # One create, or several that were not all taken: each on its own, at once.
        await asyncio.gather(*(self._store_one(create, cap, budget) for create in creates))

    async def _store_one(self, create: _Create, cap: int | None, budget: Decimal | None) -> None:
        try:
            row = await repository.intake(
                self._pool,
                create.job,
                key=create.key,
                fingerprint=create.fingerprint,
                max_queued_jobs=cap,
                default_budget=budget,
            )
        except Exception as exc:
            _settle(create.answer, exception=exc)
        else:
            _settle(create.answer, row)

    async def aclose(self) -> None:
        """Stop storing: creates still waiting are cancelled."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _settle(
    answer: asyncio.Future[asyncpg.Record | None],
    row: asyncpg.Record | None = None,
    *,
    exception: BaseException | None = None,
) -> None:
    if answer.done():
        return
    if exception is not None:
        answer.set_exception(exception)
    else:
        answer.set_result(row)
