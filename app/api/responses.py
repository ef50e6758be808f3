from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response


class JSONBytes(Response):
    """JSON rendered by orjson straight from dicts: no pydantic round trip on hot paths.

    Timestamps come out as RFC 3339 with a `Z`, as pydantic would write them.
    """

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_UTC_Z)
