from __future__ import annotations

from dataclasses import dataclass

from app.auth.service import KeyResolver
from app.db.pool import Pool
from app.db.wakeup import Wakeup
from app.fal.callback_urls import CallbackUrlSource
from app.fal.client import FalClient
from app.fal.signatures import SignatureVerifier
from app.fal.storage import FalStorage
from app.jobs.watch import JobWatcher
from app.settings import Settings
from app.storage import ObjectStore


@dataclass(frozen=True, slots=True)
class Runtime:
    """What the lifespan builds once per process and every request shares."""

    settings: Settings
    pool: Pool
    keys: KeyResolver
    fal: FalClient
    fal_storage: FalStorage
    fal_signatures: SignatureVerifier
    wakeup: Wakeup
    callback_urls: CallbackUrlSource
    # The one poller that wakes event streams and `Prefer: wait` requests (app.jobs.watch).
    watcher: JobWatcher
    # The operator's store for owned outputs (app.outputs); None: outputs are fal's URLs.
    store: ObjectStore | None = None
