"""The transitions that many jobs make at about the same time, group-committed
(app.db.group_commit): fal's answers to submissions, as the submission loop records them, and
fal's callbacks with a job's result.

A submission claim hands its jobs to fal together, and fal answers them within moments of each
other; its callbacks come as its runners finish. Those that come while one is recorded are
recorded by the next statement, together, each job still by its own compare-and-set, with its
own event (`lifecycle.mark_submitted_many`, `lifecycle.mark_succeeded_at_fal_many`).
"""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

from app.db.group_commit import GroupCommit, each
from app.db.pool import Pool
from app.db.wakeup import Wakeup
from app.fal.client import Submitted
from app.fal.outcomes import Succeeded
from app.jobs import lifecycle

# The most jobs one statement records.
MAX_JOBS = 64

_Submission = tuple[uuid.UUID, Submitted, datetime]
_Success = tuple[uuid.UUID, Succeeded, str | None, str]
_Answer = asyncpg.Record | None


class Transitions:
    """Records fal's answers to submissions (`submitted`) and its successes
    (`succeeded_at_fal`), one statement at a time for each."""

    def __init__(self, pool: Pool, wakeup: Wakeup | None, *, max_jobs: int = MAX_JOBS) -> None:
        self._pool = pool
        self._wakeup = wakeup
        self._submitted: GroupCommit[None, _Submission, _Answer] = GroupCommit(
            self._record_submitted, max_items=max_jobs
        )
        self._succeeded: GroupCommit[None, _Success, _Answer] = GroupCommit(
            self._record_succeeded, max_items=max_jobs
        )

    async def submitted(
        self, job_id: uuid.UUID, submitted: Submitted, *, next_poll_at: datetime
    ) -> asyncpg.Record | None:
        """`lifecycle.mark_submitted`'s answer: the job's row, None if it had moved on."""
        return await self._submitted.do(None, (job_id, submitted, next_poll_at))

    async def _record_submitted(
        self, _: None, submissions: list[_Submission]
    ) -> list[_Answer | BaseException]:
        if len(submissions) > 1:
            try:
                return list(
                    await lifecycle.mark_submitted_many(
                        self._pool, submissions, wakeup=self._wakeup
                    )
                )
            except asyncpg.DeadlockDetectedError:
                # Its locks are taken in the jobs' order, but not every statement's are: each
                # alone then, as if it had come alone.
                pass
        return await each(
            [
                lifecycle.mark_submitted(
                    self._pool, job_id, submitted, next_poll_at=next_poll_at, wakeup=self._wakeup
                )
                for job_id, submitted, next_poll_at in submissions
            ]
        )

    async def succeeded_at_fal(
        self, job_id: uuid.UUID, outcome: Succeeded, *, fal_request_id: str | None, model: str
    ) -> asyncpg.Record | None:
        """`lifecycle.finish`'s answer for fal's success of a job at fal (`at_fal_only`) whose
        callback named `model`: the job's row, None if it was left as it was."""
        if outcome.billable_units is not None:
            # Its cost is worked out between the compare-and-set and the settle: alone.
            return await self._finish(job_id, outcome, fal_request_id, model)
        return await self._succeeded.do(None, (job_id, outcome, fal_request_id, model))

    async def _record_succeeded(
        self, _: None, successes: list[_Success]
    ) -> list[_Answer | BaseException]:
        if len(successes) > 1:
            try:
                return list(
                    await lifecycle.mark_succeeded_at_fal_many(
                        self._pool, successes, wakeup=self._wakeup
                    )
                )
            except asyncpg.DeadlockDetectedError:
                pass  # as above
        return await each([self._finish(*success) for success in successes])

    async def _finish(
        self, job_id: uuid.UUID, outcome: Succeeded, fal_request_id: str | None, model: str
    ) -> asyncpg.Record | None:
        return await lifecycle.finish(
            self._pool,
            job_id,
            outcome,
            fal_request_id=fal_request_id,
            wakeup=self._wakeup,
            at_fal_only=True,
            model=model,
        )

    async def aclose(self) -> None:
        await self._submitted.aclose()
        await self._succeeded.aclose()
