"""The mirror loop's step: copy one claimed job's output files, then record it.

A job arrives here two ways (app.jobs.queue.claim_mirrors): its output just came from fal
(status running), and once copied it succeeds, its `job.succeeded` carrying our URLs; or it
succeeded earlier with some copies failed, and this is the later try that fills them in. The
copy runs with no transaction open; recording is one statement.
"""

from __future__ import annotations

import logging
from typing import Any

import asyncpg

from app import logs, tracing
from app.catalog import CATALOG
from app.db.availability import retry_while_unavailable
from app.jobs import lifecycle
from app.jobs.models import JobStatus
from app.jobs.schemas import job_id as public_job_id
from app.lifecycle.files import discard
from app.outputs.mirror import Limits, mirror_files, retry_at_seconds
from app.runtime import Runtime
from app.worker import backoff

log = logging.getLogger(__name__)


async def mirror(runtime: Runtime, job: asyncpg.Record) -> None:
    public_id = public_job_id(job["id"])
    logs.job_id.set(public_id)
    # A span of the job's trace (app.tracing), between fal's answer and `job.succeeded`.
    with tracing.job_span(
        "mirror job", job.get("trace_context"), attributes={"falrelay.job.id": public_id}
    ):
        await _mirror(runtime, job)


async def _mirror(runtime: Runtime, job: asyncpg.Record) -> None:
    files: list[dict[str, Any]] | None = job["files"]
    if runtime.store is None:
        # Mirroring was switched off while this job waited: it succeeds with fal's URLs (and
        # the copies it has), and nothing is retried.
        pass
    else:
        # This process may not have read a model imported moments ago.
        await CATALOG.lookup(runtime.pool, job["model"])
        files = await mirror_files(
            runtime.store,
            runtime.downloads,
            job["id"],
            job["model"],
            job["output"],
            job["files"],
            Limits(max_file_bytes=runtime.settings.mirror_max_file_bytes),
        )
    wait = None if files is None or runtime.store is None else retry_at_seconds(files)
    retry_at = None if wait is None else runtime.after(wait)
    if wait is not None:
        log.warning("some output files could not be copied; trying again in %g s", wait)

    async def record() -> None:
        if job["status"] == JobStatus.SUCCEEDED:
            kept = await lifecycle.set_mirrored_files(
                runtime.pool, job["id"], files, retry_at=retry_at
            )
            if not kept and runtime.store is not None and files is not None:
                # The job was deleted while this retry copied: nothing refers to what it
                # wrote, so it goes the way a deleted job's files go.
                await discard(runtime.pool, runtime.store, _new_keys(job["files"], files))
        else:
            await lifecycle.mark_mirrored(
                runtime.pool,
                job["id"],
                files,
                retry_at=retry_at,
                billable_units=job["billable_units"],
                wakeup=runtime.wakeup,
            )

    await retry_while_unavailable(
        record,
        for_seconds=runtime.settings.mirror_lease_seconds - backoff.LEASE_MARGIN_SECONDS,
        rng=runtime.rng,
    )


def _new_keys(before: list[dict[str, Any]] | None, after: list[dict[str, Any]]) -> list[str]:
    """The objects this pass wrote: keys in `after` that `before` did not hold."""
    held = {
        key
        for entry in before or []
        for key in (entry.get("key"), entry.get("thumbnail_key"))
        if key
    }
    return [
        key
        for entry in after
        for key in (entry.get("key"), entry.get("thumbnail_key"))
        if key and key not in held
    ]
