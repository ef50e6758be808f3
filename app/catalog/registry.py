"""The catalog a process runs jobs from: the shipped entries, and those imported into Postgres.

One per process, like the logging setup: job views, intake and the workers all read it by
model id without a database round trip. Imported entries are read from Postgres when the
process starts, every `REFRESH_SECONDS` after, and whenever a job names a model this process
has not seen yet (at most once a second), so an import is usable at once on every replica.
An import of a shipped model's id replaces the shipped entry.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from app.catalog import repository
from app.catalog.spec import EntryInvalid, ModelSpec, from_document
from app.db.pool import Pool

log = logging.getLogger(__name__)

ENTRIES = Path(__file__).parent / "entries"
REFRESH_SECONDS = 30.0
# A job naming an unknown model re-reads the catalog at most this often per process, so a
# stream of bad ids costs Postgres one query a second, not one a request.
MISS_REFRESH_SECONDS = 1.0


@functools.cache
def shipped_models() -> Mapping[str, ModelSpec]:
    """The models this release ships, one JSON document each in `entries/`."""
    models: dict[str, ModelSpec] = {}
    for path in sorted(ENTRIES.glob("*.json")):
        spec = from_document(json.loads(path.read_bytes()))
        models[spec.id] = spec
    return models


class Catalog:
    def __init__(self) -> None:
        self._imported: dict[str, ModelSpec] = {}
        # The document each imported spec was built from: unchanged rows are not recompiled.
        self._documents: dict[str, Any] = {}
        self._refreshed_at = float("-inf")
        # The pool the imported entries were read from. A process has one; a test run has
        # many services on many databases in turn, and each must see only its own imports.
        self._source: Pool | None = None
        # The read in flight, with its event loop and pool (a test run has several of each).
        self._refreshing: tuple[asyncio.AbstractEventLoop, Pool, asyncio.Task[None]] | None = None

    def get(self, model_id: str) -> ModelSpec | None:
        return self._imported.get(model_id) or shipped_models().get(model_id)

    def models(self) -> list[ModelSpec]:
        merged = {**shipped_models(), **self._imported}
        return sorted(merged.values(), key=lambda spec: spec.id)

    def stale(self, pool: Pool) -> bool:
        return pool is not self._source or self._age() >= REFRESH_SECONDS

    def _age(self) -> float:
        return time.monotonic() - self._refreshed_at

    async def refresh(self, pool: Pool) -> None:
        # One read at a time: a burst of requests naming unknown models waits for the read
        # in flight rather than each reading the whole table.
        loop = asyncio.get_running_loop()
        running = self._refreshing
        if running is None or running[:2] != (loop, pool) or running[2].done():
            running = (loop, pool, loop.create_task(self._refresh(pool)))
            self._refreshing = running
        # Shielded: a caller that goes away (a cancelled request) leaves the read to the rest.
        await asyncio.shield(running[2])

    async def _refresh(self, pool: Pool) -> None:
        rows = await repository.all_documents(pool)
        imported: dict[str, ModelSpec] = {}
        for model_id, document in rows:
            known = self._imported.get(model_id)
            if known is not None and self._documents.get(model_id) == document:
                imported[model_id] = known
                continue
            try:
                imported[model_id] = from_document(document)
            except EntryInvalid:
                # Imports are checked when they are made; a row edited by hand into something
                # unusable is skipped, loudly, rather than taking the catalog down.
                log.exception("catalog entry %s in Postgres is unusable; skipped", model_id)
        self._imported = imported
        self._documents = {model_id: document for model_id, document in rows}
        self._refreshed_at = time.monotonic()
        self._source = pool

    async def lookup(self, pool: Pool, model_id: str) -> ModelSpec | None:
        """The model, re-reading Postgres first if it is unknown here or the catalog is old."""
        spec = self.get(model_id)
        if self.stale(pool) or (spec is None and self._age() >= MISS_REFRESH_SECONDS):
            await self.refresh(pool)
            spec = self.get(model_id)
        return spec


CATALOG = Catalog()


# The imported entries as `falrelay models` stores, removes and lists them; every process's
# CATALOG picks a change up on its next refresh.
async def imported_documents(pool: Pool) -> list[tuple[str, Any]]:
    """(model id, entry document) of every imported model."""
    return await repository.all_documents(pool)


async def save_imported(pool: Pool, spec: ModelSpec) -> bool:
    """Store an imported model's entry; True when it is new, False when it replaced one."""
    return await repository.save(pool, spec.id, spec.document())


async def remove_imported(pool: Pool, model_id: str) -> bool:
    """Remove an imported model; False when there was none of that id."""
    return await repository.delete(pool, model_id)
