"""A client's effective limits: its own where the operator set one, else the settings' default.

Everyone reads limits through here (intake, the worker's fair share, the money checks), so that
"NULL means the default, and the default may be unlimited" is decided in one place.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from decimal import Decimal
from typing import Any, Literal, TypeAlias

import asyncpg

from app.settings import Settings

# The clients' columns that hold limits, in the order the CLI shows them.
LIMIT_NAMES = (
    "requests_per_second",
    "burst",
    "max_endpoints",
    "max_queued_jobs",
    "max_in_flight",
    "monthly_budget_usd",
    "weight",
)

Source = Literal["client", "default"]
# A row with the clients' limit columns.
Row: TypeAlias = "Mapping[str, Any] | asyncpg.Record"


@dataclass(frozen=True, slots=True)
class Rate:
    """GCRA: `per_second` sustained, and up to `burst` requests at once after a quiet spell."""

    per_second: float
    burst: int


@dataclass(frozen=True, slots=True)
class Limits:
    """None means unlimited."""

    requests_per_second: float | None = None
    burst: int | None = None
    max_endpoints: int | None = None
    max_queued_jobs: int | None = None
    max_in_flight: int | None = None
    monthly_budget_usd: Decimal | None = None
    weight: int = 1

    @property
    def rate(self) -> Rate | None:
        if self.requests_per_second is None:
            return None
        return Rate(self.requests_per_second, self.burst or default_burst(self.requests_per_second))


UNLIMITED = Limits()


def default_burst(requests_per_second: float) -> int:
    """One second's worth of requests, and at least one."""
    return max(1, math.ceil(requests_per_second))


@dataclass(frozen=True, slots=True)
class LimitDefaults:
    """The FALRELAY_DEFAULT_* settings; the bare constructor is "no limits at all"."""

    requests_per_second: float | None = None
    burst: int | None = None
    max_endpoints: int | None = None
    max_queued_jobs: int | None = None
    max_in_flight: int | None = None
    monthly_budget_usd: Decimal | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> LimitDefaults:
        return cls(
            requests_per_second=settings.default_requests_per_second,
            burst=settings.default_burst,
            max_endpoints=settings.default_max_endpoints,
            max_queued_jobs=settings.default_max_queued_jobs,
            max_in_flight=settings.default_max_in_flight,
            monthly_budget_usd=settings.default_monthly_budget_usd,
        )


def explain(row: Row, defaults: LimitDefaults) -> dict[str, tuple[Any, Source]]:
    """Each limit's effective value and where it comes from. `row` holds the clients' limit
    columns (NULL: the client has none of its own)."""
    out: dict[str, tuple[Any, Source]] = {}
    for name in LIMIT_NAMES:
        own = row[name]
        if own is not None:
            out[name] = (own, "client")
        else:
            out[name] = (getattr(defaults, name, None), "default")
    rate, _ = out["requests_per_second"]
    burst, burst_source = out["burst"]
    if rate is None:
        # A burst means nothing without a rate.
        out["burst"] = (None, burst_source)
    elif burst is None:
        out["burst"] = (default_burst(rate), burst_source)
    return out


def effective(row: Row, defaults: LimitDefaults) -> Limits:
    values = {name: value for name, (value, _) in explain(row, defaults).items()}
    if values["requests_per_second"] is not None:
        values["requests_per_second"] = float(values["requests_per_second"])
    return Limits(**{f.name: values[f.name] for f in fields(Limits)})
