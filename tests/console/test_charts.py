"""The usage page's SVG, read as XML: bar heights in proportion to the amounts, stacked in
legend order, exact amounts in the tooltips, the budget bar's widths."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import date
from decimal import Decimal

import pytest

from app.console.charts import axis_top, budget_bar, spend_chart
from app.console.views import month_days

SVG = "{http://www.w3.org/2000/svg}"
DAYS = month_days(date(2026, 2, 1))


def parse(markup: str) -> ET.Element:
    return ET.fromstring(markup)


def bars(root: ET.Element) -> list[ET.Element]:
    return list(root.iter(f"{SVG}rect"))


def segments(root: ET.Element) -> list[ET.Element]:
    return [r for r in bars(root) if r.get("class") == "bar"]


def test_bars_are_proportional_stacked_in_legend_order_with_exact_tooltips() -> None:
    by_day = {
        date(2026, 2, 3): {"flux": Decimal("0.30"), "imagine": Decimal("0.90")},
        date(2026, 2, 10): {"imagine": Decimal("0.45")},
        date(2026, 2, 28): {"flux": Decimal("0.003"), "<b>odd</b>": Decimal("0.20")},
    }
    root = parse(spend_chart(DAYS, by_day))

    # Legend: most spent first (imagine 1.35, flux 0.303, the odd one 0.20), names escaped.
    legend = [item.get("data-model") for item in root.iter(f"{SVG}g") if item.get("data-model")]
    assert legend == ["imagine", "flux", "<b>odd</b>"]
    texts = [t.text for g in root.iter(f"{SVG}g") if g.get("class") == "legend" for t in g.iter()]
    assert "<b>odd</b>" in texts  # as text, not as markup

    # One labelled group per day of February 2026, empty days included.
    days = [g for g in root.iter(f"{SVG}g") if g.get("class") == "day"]
    assert [g.get("data-day") for g in days] == [d.isoformat() for d in DAYS]
    assert len(days) == 28

    drawn = segments(root)
    assert [(r.get("data-day"), r.get("data-model")) for r in drawn] == [
        ("2026-02-03", "imagine"),
        ("2026-02-03", "flux"),
        ("2026-02-10", "imagine"),
        ("2026-02-28", "flux"),
        ("2026-02-28", "<b>odd</b>"),
    ]
    height = {(r.get("data-day"), r.get("data-model")): float(r.get("height", "")) for r in drawn}
    # Heights in proportion to the amounts (to the SVG's 0.01 px rounding).
    unit = height[("2026-02-03", "imagine")] / 0.90
    for r in drawn:
        assert height[(r.get("data-day"), r.get("data-model"))] == pytest.approx(
            float(r.get("data-usd", "")) * unit, abs=0.01
        )
    # The tallest day is $1.20: the axis tops out at $2.00, in round quarters of $0.50.
    assert unit == pytest.approx(240 / 2.0, abs=0.05)
    # Stacked bottom up: the second segment sits right on top of the first.
    first, second = drawn[0], drawn[1]
    assert float(second.get("y", "")) + float(second.get("height", "")) == pytest.approx(
        float(first.get("y", "")), abs=0.01
    )
    assert first.get("x") == second.get("x")
    # Each segment's exact amount is its tooltip.
    titles = [r.find(f"{SVG}title") for r in drawn]
    assert [t.text if t is not None else None for t in titles] == [
        "2026-02-03 · imagine: $0.90",
        "2026-02-03 · flux: $0.30",
        "2026-02-10 · imagine: $0.45",
        "2026-02-28 · flux: $0.003",
        "2026-02-28 · <b>odd</b>: $0.20",
    ]
    # A model keeps its colour from day to day.
    fills = {(r.get("data-model"), r.get("fill")) for r in drawn}
    assert len(fills) == 3


def test_an_empty_month_draws_no_bars() -> None:
    root = parse(spend_chart(DAYS, {}))
    assert segments(root) == []
    assert any(t.text == "No finished jobs in this month." for t in root.iter(f"{SVG}text"))


def test_axis_tops_are_round() -> None:
    assert axis_top(Decimal("1.2")) == Decimal("2")
    assert axis_top(Decimal("0.03")) == Decimal("0.04")
    assert axis_top(Decimal("7")) == Decimal("8")
    assert axis_top(Decimal("100")) == Decimal("100")
    assert axis_top(Decimal(0)) == Decimal(1)


def widths(markup: str) -> dict[str, float]:
    return {
        r.get("class", ""): float(r.get("width", ""))
        for r in bars(parse(markup))
        if r.get("class") in {"track", "spent", "reserved"}
    }


def test_the_budget_bar_is_spent_then_reserved_against_the_budget() -> None:
    markup = budget_bar(Decimal("30"), Decimal("10"), Decimal("100"))
    drawn = widths(markup)
    assert drawn["spent"] == pytest.approx(drawn["track"] * 0.30, abs=0.01)
    assert drawn["reserved"] == pytest.approx(drawn["track"] * 0.10, abs=0.01)
    root = parse(markup)
    (mark,) = [line for line in root.iter(f"{SVG}line") if line.get("class") == "budget-mark"]
    track = next(r for r in bars(root) if r.get("class") == "track")
    assert float(mark.get("x1", "")) == pytest.approx(
        float(track.get("x", "")) + float(track.get("width", "")), abs=0.01
    )
    assert "$40.00 of $100.00 (40%)" in markup

    # Over a budget lowered after the fact: the use is the whole width, the mark inside it.
    over = widths(budget_bar(Decimal("90"), Decimal("30"), Decimal("60")))
    assert over["spent"] + over["reserved"] == pytest.approx(over["track"], abs=0.01)

    unlimited = budget_bar(Decimal("2.5"), Decimal(0), None)
    assert "no budget" in unlimited
    assert not [x for x in parse(unlimited).iter(f"{SVG}line")]
