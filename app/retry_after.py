"""`Retry-After` (RFC 9110 §10.2.3): how long a server asks us to wait, read one way everywhere
the server reads it (fal's answers, webhook receivers' answers).

The field is either delay-seconds (`120`) or an HTTP date (`Wed, 21 Oct 2015 07:28:00 GMT`,
and the obsolete RFC 850 and asctime forms). A date already past means "now" (0 s). A value
that is neither, or negative, is no advice at all (None): the caller's own schedule decides.
What a server asks is capped at a day: a typo or a hostile receiver cannot park work for
years (nor overflow a datetime).

The SDK (`falrelay.retries`) keeps its own reading: it is a separate distribution and cannot
import the server.
"""

from __future__ import annotations

import email.utils
import math
import re
from datetime import UTC, datetime

MAX_SECONDS = 24 * 3600.0

# delay-seconds is 1*DIGIT; a decimal fraction is accepted too (some servers send one), but
# not what float() would also take (a sign, an exponent, "inf", "nan").
_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait, in [0, MAX_SECONDS]; None when absent, negative or unreadable.
    `now` (aware) is when the answer came, for a date; the current time by default."""
    if value is None:
        return None
    value = value.strip()
    if _SECONDS.fullmatch(value):
        seconds = float(value)
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:  # asctime and "-0000" carry no zone: HTTP dates are GMT
            when = when.replace(tzinfo=UTC)
        seconds = max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
    if not math.isfinite(seconds):
        return MAX_SECONDS
    return min(seconds, MAX_SECONDS)
