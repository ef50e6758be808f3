"""What liveness and readiness mean, for every kind of falrelay process.

The API answers them at /livez and /readyz (app/api/health.py); a worker-only process answers
the same on its probe port (app/worker/probes.py). Neither answer depends on the web framework.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from app.db.migrate import head_revision, schema_is_usable
from app.db.pool import Pool
from app.worker.supervision import Supervisor


class NotReady(Exception):
    """The process should get no traffic (readiness), or should be restarted (liveness)."""


def check_alive(supervisor: Supervisor | None) -> dict[str, Any]:
    """Liveness: fails only for what a restart mends, a loop its supervisor could not revive.
    The database being away is no reason to restart anything."""
    dead = supervisor.dead() if supervisor is not None else []
    if dead:
        names = ", ".join(h.name for h in dead)
        raise NotReady(f"Worker loops stuck beyond repair: {names}. Restart the process.")
    return {"status": "ok"}


async def check_ready(
    pool: Pool, supervisor: Supervisor | None, *, draining: bool
) -> dict[str, Any]:
    """Readiness: not shutting down, every loop making progress, the database answering with
    a schema this release can use."""
    if draining:
        raise NotReady("This process is shutting down.")
    stalled = supervisor.stalled() if supervisor is not None else []
    if stalled:
        loops = "; ".join(f"{h.name} (last error: {h.last_error or 'none'})" for h in stalled)
        raise NotReady(
            f"Worker loops have completed no iteration in {stalled[0].stall_after:g} s: {loops}."
        )
    try:
        current = await pool.fetchval("SELECT version_num FROM alembic_version")
    except asyncpg.UndefinedTableError:
        current = None
    if not schema_is_usable(current):
        raise NotReady(
            f"The database schema is at {current or 'nothing'}, this release needs "
            f"{head_revision()}: run `falrelay migrate`."
        )
    return {"status": "ready", "schema": current}
