from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import asyncpg
import orjson
from starlette.responses import Response

from app.pagination import Page


def page_response(page: Page, view: Callable[[asyncpg.Record], dict[str, Any]]) -> JSONBytes:
    """A list answer: `{"data": [...], "next_cursor": ...}`."""
    return JSONBytes({"data": [view(row) for row in page.rows], "next_cursor": page.next_cursor})


# How an ETag response header is documented in the OpenAPI document.
ETAG_HEADER = {
    "description": "A strong validator of this body: send it back in `If-None-Match`.",
    "schema": {"type": "string"},
}


def strong_etag(body: bytes | memoryview) -> str:
    """A strong ETag for `body`: the same exactly when the bytes are."""
    return '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'


class JSONBytes(Response):
    """JSON rendered by orjson straight from dicts: no pydantic round trip on hot paths.

    Timestamps come out as RFC 3339 with a `Z`, as pydantic would write them.
    """

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_UTC_Z)
