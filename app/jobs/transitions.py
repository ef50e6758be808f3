"""The transitions that many jobs make at about the same time, group-committed
(app.db.group_commit): fal's answers to submissions, as the submission loop records them, and
fal's callbacks with a job's result.

A submission claim hands its jobs to fal together, and fal answers them within moments of each
other; its callbacks come as its runners finish. Those that come while one is recorded are
recorded by the next statement, together, each job still by its own compare-and-set, with its
own event (`lifecycle.mark_submitted_many`, `lifecycle.mark_succeeded_at_fal_many`).

fal's answer to a job can come before this process has recorded fal's answer to the job's
submission (a fast model, a busy loop). Its callback then waits for that record
(`submission_recorded`): the job is at fal by then, and the callback is the one statement it
is when it comes later. Finding the job still queued instead costs a compare-and-set that
fails, a read, the request adopted in a transaction of its own, and a record of the submission
that fails in turn (app.jobs.callbacks); measured in the end-to-end benchmark, whose fake fal
answers at once, that was seven callbacks in ten.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
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
# The longest a callback waits for its job's submission to be recorded: fal's call and a
# commit take milliseconds, and fal gives a webhook 15 s to be answered. Past it, the callback
# adopts the request as it would have without waiting.
SUBMISSION_WAIT_SECONDS = 5.0

_Submission = tuple[uuid.UUID, Submitted, datetime]
_Success = tuple[uuid.UUID, Succeeded, str | None, str]
_Answer = asyncpg.Record | None


class Transitions:
    """Records fal's answers to submissions (`submitted`) and its successes
    (`succeeded_at_fal`), one statement at a time for each."""

    def __init__(
        self,
        pool: Pool,
        wakeup: Wakeup | None,
        *,
        max_jobs: int = MAX_JOBS,
        submission_wait: float = SUBMISSION_WAIT_SECONDS,
    ) -> None:
        self._pool = pool
        self._wakeup = wakeup
        self._submitted: GroupCommit[None, _Submission, _Answer] = GroupCommit(
            self._record_submitted, max_items=max_jobs
        )
        self._succeeded: GroupCommit[None, _Success, _Answer] = GroupCommit(
            self._record_succeeded, max_items=max_jobs
        )
        # Jobs whose first submission is in flight from this process, each set once fal's
        # answer to it is recorded (or the call has failed).
        self._submitting: dict[uuid.UUID, asyncio.Event] = {}
        self._submission_wait = submission_wait

    @contextlib.contextmanager
    def submitting(self, job_id: uuid.UUID, *, attempt: int) -> Iterator[None]:
        """Around a submission of `job_id`, from fal's call to the record of its answer.

        Only a first attempt is waited for: no earlier request of the job can be at fal, so a
        callback for the job is this submission's. A later attempt may follow an ambiguous
        one whose request fal has; that request's callback adopts it at once, as before."""
        if attempt != 1:
            yield
            return
        recorded = asyncio.Event()
        self._submitting[job_id] = recorded
        try:
            yield
        finally:
            if self._submitting.get(job_id) is recorded:
                del self._submitting[job_id]
            recorded.set()

    async def submission_recorded(self, job_id: uuid.UUID) -> None:
        """Once the submission of `job_id` in flight here (if any) is recorded, or the wait's
        bound (`submission_wait`, SUBMISSION_WAIT_SECONDS) has passed."""
        recorded = self._submitting.get(job_id)
        if recorded is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._submission_wait):
                await recorded.wait()

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
