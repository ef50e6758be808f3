"""The usage page's charts, drawn on the server as SVG: no script and no library in the
browser, nothing for the page's content security policy to allow, and pure functions from
figures to markup, so a test can read every bar's size without a browser.

Colours are presentation attributes (`fill="..."`), not `style`: the console's policy refuses
inline styles, not attributes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import date
from decimal import Decimal

from markupsafe import Markup, escape

from app.catalog.pricing import usd_text

# One colour per model, in legend order; more models than colours reuse them.
PALETTE = (
    "#4f46e5",
    "#0891b2",
    "#f59e0b",
    "#db2777",
    "#16a34a",
    "#7c3aed",
    "#ea580c",
    "#64748b",
)
WIDTH = 960
PLOT_HEIGHT = 240
LEFT = 64  # room for the amounts on the y axis
RIGHT = 8
LEGEND_ROW = 20
AXIS_BELOW = 28  # the day numbers
TICKS = 4
BAR_FILL = 0.7  # of a day's slot; the rest is the gap between bars
EMPTY = "No finished jobs in this month."


def _usd(amount: Decimal) -> str:
    return f"${usd_text(amount)}"


def _px(value: float) -> str:
    # Two places are finer than a pixel; fewer characters than repr.
    return f"{value:.2f}".rstrip("0").rstrip(".")


def model_order(by_day: Mapping[date, Mapping[str, Decimal]]) -> list[str]:
    """Models by what they cost over the whole range, most first (then by name): the biggest
    sits at the bottom of every bar and first in the legend."""
    totals: dict[str, Decimal] = {}
    for by_model in by_day.values():
        for model, amount in by_model.items():
            totals[model] = totals.get(model, Decimal(0)) + amount
    return sorted(totals, key=lambda model: (-totals[model], model))


def axis_top(largest: Decimal) -> Decimal:
    """The y axis' top: the smallest 1, 2, 2.5 or 5 times a power of ten whose quarters cover
    `largest`, so the gridlines fall on round amounts."""
    if largest <= 0:
        return Decimal(1)
    power = Decimal(10) ** math.floor(math.log10(largest / TICKS))
    for step in (Decimal(1), Decimal(2), Decimal("2.5"), Decimal(5), Decimal(10)):
        if step * power * TICKS >= largest:
            return step * power * TICKS
    raise AssertionError("unreachable: 10 times the power always covers it")


def spend_chart(days: Sequence[date], by_day: Mapping[date, Mapping[str, Decimal]]) -> Markup:
    """Spend per day, one bar per day of `days`, stacked by model (bottom up in legend order).
    Each segment is a `rect.bar` with `data-model`, `data-day` and `data-usd`, and its exact
    amount in a `<title>` (the browser's tooltip)."""
    models = model_order({day: by_day.get(day, {}) for day in days})
    colour = {model: PALETTE[i % len(PALETTE)] for i, model in enumerate(models)}
    legend_height = LEGEND_ROW * max(len(models), 1) + 8
    top = legend_height
    height = top + PLOT_HEIGHT + AXIS_BELOW
    plot_width = WIDTH - LEFT - RIGHT
    largest = max(
        (sum(by_day.get(day, {}).values(), Decimal(0)) for day in days), default=Decimal(0)
    )
    ceiling = axis_top(largest)
    scale = PLOT_HEIGHT / float(ceiling)
    baseline = top + PLOT_HEIGHT

    parts = [
        f'<svg class="chart spend-chart" viewBox="0 0 {WIDTH} {height}" '
        f'width="{WIDTH}" height="{height}" role="img" '
        'aria-label="Spend per day, stacked by model" xmlns="http://www.w3.org/2000/svg">'
    ]
    parts.append('<g class="legend">')
    for i, model in enumerate(models):
        row = 4 + i * LEGEND_ROW
        parts.append(
            f'<g class="legend-item" data-model="{escape(model)}">'
            f'<rect class="swatch" x="{LEFT}" y="{row}" width="12" height="12" rx="2" '
            f'fill="{colour[model]}"/>'
            f'<text x="{LEFT + 18}" y="{row + 10}">{escape(model)}</text></g>'
        )
    if not models:
        parts.append(f'<text class="empty" x="{LEFT}" y="14">{EMPTY}</text>')
    parts.append("</g>")

    parts.append('<g class="axis">')
    for tick in range(TICKS + 1):
        level = ceiling * tick / TICKS
        y = baseline - float(level) * scale
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{_px(y)}" y2="{_px(y)}"/>'
            f'<text class="tick" x="{LEFT - 8}" y="{_px(y + 4)}" text-anchor="end">'
            f"{_usd(level)}</text>"
        )
    parts.append("</g>")

    slot = plot_width / max(len(days), 1)
    bar_width = slot * BAR_FILL
    parts.append('<g class="bars">')
    for index, day in enumerate(days):
        x = LEFT + index * slot + (slot - bar_width) / 2
        y = float(baseline)
        amounts = by_day.get(day, {})
        total = sum(amounts.values(), Decimal(0))
        parts.append(f'<g class="day" data-day="{day.isoformat()}" data-usd="{usd_text(total)}">')
        for model in models:
            amount = amounts.get(model, Decimal(0))
            if not amount:
                continue
            size = float(amount) * scale
            y -= size
            parts.append(
                f'<rect class="bar" data-model="{escape(model)}" data-day="{day.isoformat()}" '
                f'data-usd="{usd_text(amount)}" x="{_px(x)}" y="{_px(y)}" '
                f'width="{_px(bar_width)}" height="{_px(size)}" fill="{colour[model]}">'
                f"<title>{day.isoformat()} · {escape(model)}: {_usd(amount)}</title></rect>"
            )
        parts.append(
            f'<text class="day-label" x="{_px(x + bar_width / 2)}" y="{baseline + 18}" '
            f'text-anchor="middle">{day.day}</text></g>'
        )
    parts.append("</g>")
    parts.append(
        f'<line class="baseline" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{baseline}" '
        f'y2="{baseline}"/></svg>'
    )
    return Markup("".join(parts))


BUDGET_HEIGHT = 56
BUDGET_BAR = 22
SPENT_FILL = "#4f46e5"
RESERVED_FILL = "#a5b4fc"
OVER_FILL = "#b91c1c"


def budget_bar(spent: Decimal, reserved: Decimal, budget: Decimal | None) -> Markup:
    """Spent, then reserved, against the month's budget: the full width is the budget (or
    what is used, if more: a budget lowered after the fact), with a mark where it ends.
    Without a budget the bar shows the use alone and says "no budget"."""
    used = spent + reserved
    whole = max(budget if budget is not None else used, used)
    width = WIDTH - LEFT - RIGHT
    scale = width / float(whole) if whole > 0 else 0.0
    spent_width = float(spent) * scale
    reserved_width = float(reserved) * scale
    y = 6
    parts = [
        f'<svg class="chart budget-bar" viewBox="0 0 {WIDTH} {BUDGET_HEIGHT}" width="{WIDTH}" '
        f'height="{BUDGET_HEIGHT}" role="img" aria-label="Spend against the monthly budget" '
        'xmlns="http://www.w3.org/2000/svg">',
        f'<rect class="track" x="{LEFT}" y="{y}" width="{width}" height="{BUDGET_BAR}" rx="4"/>',
    ]
    over = budget is not None and used > budget
    parts.append(
        f'<rect class="spent" x="{LEFT}" y="{y}" width="{_px(spent_width)}" '
        f'height="{BUDGET_BAR}" fill="{OVER_FILL if over else SPENT_FILL}">'
        f"<title>Spent: {_usd(spent)}</title></rect>"
    )
    parts.append(
        f'<rect class="reserved" x="{_px(LEFT + spent_width)}" y="{y}" '
        f'width="{_px(reserved_width)}" height="{BUDGET_BAR}" fill="{RESERVED_FILL}">'
        f"<title>Reserved by unfinished jobs: {_usd(reserved)}</title></rect>"
    )
    label_y = y + BUDGET_BAR + 18
    if budget is None:
        parts.append(
            f'<text class="budget-label" x="{WIDTH - RIGHT}" y="{label_y}" text-anchor="end">'
            f"{_usd(used)} used · no budget</text>"
        )
    else:
        mark = LEFT + float(budget) * scale
        share = "" if budget == 0 else f" ({float(used / budget):.0%})"
        parts.append(
            f'<line class="budget-mark" x1="{_px(mark)}" x2="{_px(mark)}" y1="{y - 4}" '
            f'y2="{y + BUDGET_BAR + 4}"><title>Budget: {_usd(budget)}</title></line>'
            f'<text class="budget-label" x="{WIDTH - RIGHT}" y="{label_y}" text-anchor="end">'
            f"{_usd(used)} of {_usd(budget)}{share}</text>"
        )
    parts.append(
        f'<text class="tick" x="{LEFT - 8}" y="{y + 15}" text-anchor="end">budget</text></svg>'
    )
    return Markup("".join(parts))
