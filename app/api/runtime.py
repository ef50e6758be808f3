from __future__ import annotations

from dataclasses import dataclass

from app.auth.service import KeyResolver
from app.db.pool import Pool
from app.settings import Settings


@dataclass(frozen=True, slots=True)
class Runtime:
    """What the lifespan builds once per process and every request shares."""

    settings: Settings
    pool: Pool
    keys: KeyResolver
