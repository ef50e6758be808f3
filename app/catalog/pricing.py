"""What a model costs: a price rule per catalog entry, in exact decimal dollars.

A rule is plain data (a unit, a price per unit, and for per-image models a price per
resolution), so a catalog kept as data can carry it as it is. fal bills a finished request in
the model's own unit and says how many in `X-Fal-Billable-Units` on the result; `estimate` is
what a job reserves before fal has run it, `cost` what it comes to once fal has said.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

# Every amount is held to a millionth of a dollar (the `numeric(14,6)` columns): a per-megapixel
# price times a fraction of a megapixel needs more places than cents.
USD_PLACES = Decimal("0.000001")
MAX_BILLABLE_UNITS = Decimal(1_000_000)


class PriceUnit(enum.StrEnum):
    IMAGE = "image"  # per image, priced by the input's resolution
    MEGAPIXEL = "megapixel"  # per million output pixels
    SECOND = "second"  # per second of output (video, audio)


@dataclass(frozen=True, slots=True)
class PriceRule:
    unit: PriceUnit
    # The price of one unit when it does not depend on the input.
    unit_price_usd: Decimal = Decimal(0)
    # Per-image models priced by resolution: the input's `resolution` → the price of one image.
    by_resolution: Mapping[str, Decimal] = field(default_factory=dict)
    # What one job is expected to use, for the estimate: images per request, megapixels of the
    # default output, or seconds of the default duration.
    typical_units: Decimal = Decimal(1)

    def document(self) -> dict[str, Any]:
        """The rule as a catalog entry writes it: amounts as decimal strings."""
        document: dict[str, Any] = {"unit": self.unit.value}
        if self.by_resolution:
            document["by_resolution"] = {
                name: format(price, "f") for name, price in self.by_resolution.items()
            }
        else:
            document["unit_price_usd"] = format(self.unit_price_usd, "f")
        document["typical_units"] = format(self.typical_units, "f")
        return document

    def price_of_unit(self, model_input: Mapping[str, Any]) -> Decimal:
        if self.by_resolution:
            resolution = model_input.get("resolution")
            if resolution in self.by_resolution:
                return self.by_resolution[str(resolution)]
            # An input the rule does not name reserves the dearest price, never too little.
            return max(self.by_resolution.values())
        return self.unit_price_usd

    def estimate(self, model_input: Mapping[str, Any]) -> Decimal:
        """What a job with this (normalised) input reserves against its client's budget."""
        units = self.typical_units
        if self.unit is PriceUnit.IMAGE:
            count = model_input.get("num_images")
            if isinstance(count, int) and not isinstance(count, bool) and count > 0:
                units = Decimal(count)
        return usd(units * self.price_of_unit(model_input))

    def cost(self, model_input: Mapping[str, Any], billable_units: Decimal) -> Decimal:
        """What fal charges for `billable_units` of this model (its `X-Fal-Billable-Units`)."""
        return usd(billable_units * self.price_of_unit(model_input))


def usd(amount: Decimal) -> Decimal:
    """An amount held to a millionth of a dollar."""
    # Rounded up: an estimate must not fall short of the charge, and a charge below a
    # millionth of a dollar is still a charge.
    return amount.quantize(USD_PLACES, rounding="ROUND_CEILING")


def usd_text(amount: Decimal) -> str:
    """An amount as the API writes it: a plain decimal string, at least to the cent, with no
    trailing zeros beyond that ("0.05", "1.20", "0.003"). Never a binary float."""
    text = format(amount.quantize(USD_PLACES), "f")
    whole, _, places = text.partition(".")
    places = places.rstrip("0")
    return f"{whole}.{places.ljust(2, '0')}"


def parse_units(value: str | None) -> Decimal | None:
    """`X-Fal-Billable-Units` as a number of units, or None when absent or not a finite,
    non-negative number (then the estimate stands)."""
    if value is None:
        return None
    try:
        units = Decimal(value.strip())
    except ArithmeticError:
        return None
    # Bounded so that a cost always fits its column; no request bills a million units.
    if not units.is_finite() or not 0 <= units <= MAX_BILLABLE_UNITS:
        return None
    return units
