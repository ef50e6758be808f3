"""Public ids: a type prefix and a UUIDv7 (`job_0193...`).

UUIDv7 keeps new rows at the right-hand end of every primary-key index, so inserts stay cheap
when a table holds millions of rows; the prefix tells people (and logs) what an id names.
"""

from __future__ import annotations

import os
import time
import uuid

# Every prefix, here and nowhere else: a public id names its kind at a glance.
JOB_ID_PREFIX = "job"
EVENT_ID_PREFIX = "evt"
ENDPOINT_ID_PREFIX = "ep"
DELIVERY_ID_PREFIX = "dlv"


def uuid7() -> uuid.UUID:
    """RFC 9562 UUIDv7: 48 bits of Unix milliseconds, then 74 random bits."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | rand & ((1 << 80) - 1)
    value = value & ~(0xF << 76) | 0x7 << 76  # version 7
    value = value & ~(0x3 << 62) | 0x2 << 62  # RFC 4122 variant
    return uuid.UUID(int=value)


def encode(prefix: str, value: uuid.UUID) -> str:
    return f"{prefix}_{value.hex}"


def decode(prefix: str, public_id: str) -> uuid.UUID | None:
    """The UUID behind `public_id`, or None when it is not one of ours."""
    head, sep, tail = public_id.partition("_")
    if head != prefix or not sep or len(tail) != 32:
        return None
    try:
        return uuid.UUID(hex=tail)
    except ValueError:
        return None
