"""The one Retry-After reading (app.retry_after), as fal's answers and webhook receivers' are
read."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from app.retry_after import MAX_SECONDS, parse_retry_after

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "seconds"), [("0", 0.0), ("7", 7.0), (" 120 ", 120.0), ("1.5", 1.5)]
)
def test_delta_seconds(value: str, seconds: float) -> None:
    assert parse_retry_after(value, now=NOW) == seconds


@pytest.mark.parametrize(
    "value",
    [
        "Sun, 01 Mar 2026 12:01:30 GMT",  # IMF-fixdate
        "Sunday, 01-Mar-26 12:01:30 GMT",  # obsolete RFC 850
        "Sun Mar  1 12:01:30 2026",  # obsolete asctime, GMT without saying so
    ],
)
def test_an_http_date_ahead_is_the_seconds_until_it(value: str) -> None:
    assert parse_retry_after(value, now=NOW) == 90.0


def test_an_http_date_past_means_now() -> None:
    assert parse_retry_after("Sun, 01 Mar 2026 11:00:00 GMT", now=NOW) == 0.0


def test_an_http_date_is_read_against_the_clock_by_default() -> None:
    assert parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT") == 0.0
    ahead = parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT")
    assert ahead == MAX_SECONDS


@pytest.mark.parametrize(
    "value", [None, "", "soon", "-5", "+5", "1e3", "inf", "nan", "0x10", "Sun, 99 Foo 2026", "5 s"]
)
def test_garbage_and_negative_are_no_advice(value: str | None) -> None:
    assert parse_retry_after(value, now=NOW) is None


@pytest.mark.parametrize("value", ["86401", "9" * 400, "Sat, 01 Mar 2036 12:00:00 GMT"])
def test_a_huge_wait_is_capped_at_a_day(value: str) -> None:
    assert parse_retry_after(value, now=NOW) == MAX_SECONDS == 24 * 3600
