"""Times clients send: RFC 3339 date-times with an offset, and nothing else.

pydantic's lax mode reads a number, or a string of digits (`?created_before=0.5`), as Unix
time; an API that documents `format: date-time` must refuse those rather than guess.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated

from pydantic import AwareDatetime, BeforeValidator

_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$", re.ASCII
)


def _rfc3339_only(value: object) -> object:
    if isinstance(value, datetime):
        return value  # from Python callers, not the wire
    if not isinstance(value, str) or not _RFC3339.match(value):
        raise ValueError("must be an RFC 3339 date-time with an offset, e.g. 2025-01-31T12:00:00Z")
    return value


Timestamp = Annotated[AwareDatetime, BeforeValidator(_rfc3339_only)]
