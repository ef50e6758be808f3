from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from starlette.responses import Response

from app.api.deps import PrincipalDep, RuntimeDep
from app.api.problems import error_responses
from app.api.responses import JSONBytes
from app.billing.usage import Usage, usage
from app.catalog.pricing import usd_text
from app.errors import Unauthorized, ValidationFailed
from app.settings import Settings
from app.timestamps import Timestamp

router = APIRouter(prefix="/v1/usage", tags=["usage"])

# Amounts are decimal strings ("0.05"): exact, never binary floats.
USD = Annotated[str, Field(pattern=r"^-?[0-9]+\.[0-9]{2,6}$", examples=["0.05"])]


class UsageGroupRead(BaseModel):
    key: str = Field(description="A UTC day (YYYY-MM-DD) or a model id, per `group_by`.")
    jobs: int
    images: int
    cost_usd: USD


class UsageRead(BaseModel):
    """The client's jobs created in [`from`, `to`): what they made and cost."""

    from_: datetime = Field(alias="from")
    to: datetime
    jobs: int = Field(description="Jobs created in the range, in any state.")
    images: int = Field(description="Images made by the succeeded ones.")
    cost_usd: USD = Field(description="What the finished ones cost (failed and canceled: 0).")
    reserved_usd: USD = Field(description="What the unfinished ones reserve (their estimates).")
    budget_usd: USD | None = Field(description="The monthly budget; null when unlimited.")
    groups: list[UsageGroupRead]


def default_budget(settings: Settings) -> Decimal | None:
    """The budget of clients without one of their own (`FALRELAY_DEFAULT_MONTHLY_BUDGET_USD`)."""
    return settings.default_monthly_budget_usd


def _view(figures: Usage) -> dict[str, object]:
    return {
        "from": figures.start,
        "to": figures.end,
        "jobs": figures.jobs,
        "images": figures.images,
        "cost_usd": usd_text(figures.cost_usd),
        "reserved_usd": usd_text(figures.reserved_usd),
        "budget_usd": None if figures.budget_usd is None else usd_text(figures.budget_usd),
        "groups": [
            {
                "key": group.key,
                "jobs": group.jobs,
                "images": group.images,
                "cost_usd": usd_text(group.cost_usd),
            }
            for group in figures.groups
        ],
    }


@router.get("", response_model=UsageRead, responses=error_responses(Unauthorized, ValidationFailed))
async def get_usage(
    principal: PrincipalDep,
    runtime: RuntimeDep,
    from_: Annotated[
        Timestamp | None,
        Query(alias="from", description="Start (inclusive); default: this UTC month's start."),
    ] = None,
    to: Annotated[
        Timestamp | None,
        Query(description="End (exclusive); default: the next UTC month's start."),
    ] = None,
    group_by: Annotated[
        Literal["day", "model"], Query(description="`day` (UTC) or `model`.")
    ] = "day",
) -> Response:
    """The client's usage over a time range: jobs, images, cost, reservations, budget."""
    figures = await usage(
        runtime.pool,
        principal.client_id,
        start=from_,
        end=to,
        group_by=group_by,
        default_budget=default_budget(runtime.settings),
        now=datetime.now(UTC),
    )
    return JSONBytes(_view(figures))
