"""Keyset cursors: the (created_at, id) of the last row of a page, opaque to clients."""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import orjson

from app.errors import ValidationFailed, ValidationIssue

MAX_PAGE_SIZE = 100


def encode_cursor(created_at: datetime, row_id: uuid.UUID) -> str:
    raw = orjson.dumps([created_at.isoformat(), row_id.hex])
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at_text, hex_id = orjson.loads(raw)
        created_at = datetime.fromisoformat(created_at_text)
        if created_at.tzinfo is None:
            raise ValueError("naive timestamp")
        if not isinstance(hex_id, str):
            raise TypeError("id is not a string")  # uuid.UUID(hex=5) raises AttributeError
        return created_at, uuid.UUID(hex=hex_id)
    except (binascii.Error, orjson.JSONDecodeError, TypeError, ValueError) as exc:
        issue = ValidationIssue(
            loc=["query", "cursor"], msg="not a cursor this API returned", type="cursor_invalid"
        )
        raise ValidationFailed([issue]) from exc


@dataclass(frozen=True, slots=True)
class Page:
    rows: list[asyncpg.Record]
    next_cursor: str | None


def page_of(rows: list[asyncpg.Record], limit: int) -> Page:
    """Rows fetched with LIMIT `limit + 1`: the page, and whether another follows."""
    return Page(rows[:limit], next_cursor(rows, limit))


def next_cursor(rows: Sequence[asyncpg.Record], limit: int) -> str | None:
    """Given up to `limit + 1` rows fetched, the cursor of the next page (None on the last)."""
    if len(rows) <= limit:
        return None
    last = rows[limit - 1]
    return encode_cursor(last["created_at"], last["id"])
