from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx

from app.db.pool import Pool
from app.db.wakeup import Wakeup
from app.fal.callback_urls import CallbackUrlSource
from app.fal.client import FalClient
from app.settings import Settings
from app.storage import ObjectStore


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class WorkerContext:
    """What a worker step needs; `now` and `rng` are parameters so tests need no sleeping."""

    pool: Pool
    fal: FalClient
    settings: Settings
    wakeup: Wakeup | None = None
    # None: no fal_webhook (poll mode), as in a context built without a public base URL.
    callback_urls: CallbackUrlSource | None = None
    # Owned outputs: the operator's store (None: not mirrored) and the client files are read
    # from fal with.
    store: ObjectStore | None = None
    downloads: httpx.AsyncClient | None = None
    now: Callable[[], datetime] = utcnow
    rng: random.Random = field(default_factory=random.Random)

    def after(self, seconds: float) -> datetime:
        return self.now() + timedelta(seconds=seconds)

    @property
    def webhook_mode(self) -> bool:
        return self.callback_urls is not None and bool(self.settings.public_base_url)

    async def callback_url(self, public_job_id: str) -> str | None:
        if self.callback_urls is None:
            return None
        return (await self.callback_urls.get()).for_job(public_job_id)
