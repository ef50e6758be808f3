"""Reservations and settlement against a client's monthly budget.

A job reserves its estimated cost when it is created, in the same statement as its row
(app.jobs.repository.INTAKE); it
settles when it reaches a terminal state, in the same transaction as that compare-and-set, so
each job settles exactly once. The month is the job's `created_at` month in UTC.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from app.billing import repository
from app.catalog import CATALOG
from app.catalog.pricing import usd, usd_text
from app.db.pool import Connection, Pool
from app.errors import AppError


class BudgetExceeded(AppError):
    """402: the job's estimate does not fit in what is left of the month's budget."""

    status = 402
    title = "Budget exceeded"
    slug = "budget-exceeded"

    def __init__(
        self, *, budget: Decimal, spent: Decimal, reserved: Decimal, estimate: Decimal
    ) -> None:
        super().__init__(
            f"This job's estimated cost of ${usd_text(estimate)} would take the month past its "
            f"budget of ${usd_text(budget)} (${usd_text(spent)} spent, "
            f"${usd_text(reserved)} reserved by unfinished jobs)."
        )
        self.budget, self.spent, self.reserved, self.estimate = budget, spent, reserved, estimate

    def body(self) -> dict[str, Any]:
        # Decimal strings, like every amount of the API: exact, never binary floats.
        return {
            **super().body(),
            "budget_usd": usd_text(self.budget),
            "spent_usd": usd_text(self.spent),
            "reserved_usd": usd_text(self.reserved),
            "estimated_cost_usd": usd_text(self.estimate),
        }


def month_of(at: datetime) -> date:
    """The ledger month a job counts in: the UTC month of its creation."""
    utc = at.astimezone(UTC)
    return date(utc.year, utc.month, 1)


def final_cost(
    model: str, model_input: dict[str, Any], unit_price: Decimal | None, billable_units: Decimal
) -> Decimal:
    """What fal billed: its units times the unit price the job was accepted at. A job accepted
    before prices were kept on jobs is priced by its model's current rule (0 if it is gone)."""
    if unit_price is None:
        spec = CATALOG.get(model)
        unit_price = Decimal(0) if spec is None else spec.price.price_of_unit(model_input)
    return usd(billable_units * unit_price)


async def monthly_budget(
    conn: Connection | Pool, client_id: uuid.UUID, default: Decimal | None
) -> Decimal | None:
    """The client's monthly budget in dollars; None is unlimited."""
    return await repository.budget(conn, client_id, default)


def reservation_step(*, client: str, amount: str, budget: str, source: str) -> str:
    """The reservation of a job's estimate, as a step (a CTE body) of the job's intake
    statement: this package's compare-and-set on the client's month, which another package's
    statement runs but does not restate. The arguments are SQL expressions of that statement;
    the step returns one row (`ok`) when the estimate fits, none when it does not."""
    return repository.reserve_step(client=client, amount=amount, budget=budget, source=source)


async def budget_exceeded(
    pool: Pool, client_id: uuid.UUID, amount: Decimal, *, default_budget: Decimal | None
) -> BudgetExceeded:
    """The refusal of a job whose estimate `amount` did not fit this month's budget (the
    reservation is part of the job's intake statement, app.jobs.repository.INTAKE), with the
    month's figures as they stand now."""
    budget = await repository.budget(pool, client_id, default_budget)
    assert budget is not None  # an unlimited budget never refuses
    reserved, spent = await repository.month_figures(pool, client_id, month_of(datetime.now(UTC)))
    return BudgetExceeded(budget=budget, spent=spent, reserved=reserved, estimate=amount)


async def settle(
    conn: Connection, client_id: uuid.UUID, created_at: datetime, reserved: Decimal, cost: Decimal
) -> str:
    """Release the job's reservation and book its final cost (0 for a failed or canceled job).
    Answers the client's name (the metrics' label)."""
    return await repository.settle(conn, client_id, month_of(created_at), reserved, cost)


def settle_step(source: str) -> str:
    """The settle of each terminal job row in `source`, as a step of a statement's WITH list
    (see `settling`)."""
    return repository.settle_step(source)


def settling(transition: str) -> str:
    """A terminal transition's statement that also settles the job (see `settle`) when it
    applies: one statement, so one round trip and no explicit transaction. Its cost is the one
    the transition booked (not fal's billed units: those go through `settle`)."""
    return repository.settling(transition)
