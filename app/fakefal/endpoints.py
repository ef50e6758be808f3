"""fal's queue paths: a model id in a submit path, and the request paths that follow it.

A model id is `owner/app[/path...]`, or `workflows|comfy/owner/app[/path...]`. Status, result
and cancel live under the app alone (`owner/app/requests/{id}`), which is what fal returns; the
full-id form (`owner/app/path/requests/{id}`) appears in some per-model docs, so it is accepted too.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Literal

NAMESPACES = ("workflows", "comfy")
# First path segments that belong to the fake's other hosts (fal.run's runs under `run/`, the
# REST API's storage, the CDN's files) or to the fake itself: never a model's owner.
RESERVED_ROOTS = ("run", "storage", "files", "_fake", ".well-known")
Operation = Literal["result", "status", "stream", "cancel"]
_OPERATIONS: dict[str, Operation] = {
    "": "result",
    "/status": "status",
    "/status/stream": "stream",
    "/cancel": "cancel",
}
_REQUEST_PATH = re.compile(
    r"^(?P<app>.+?)/requests/(?P<id>[^/]+)(?P<op>|/status|/status/stream|/cancel)$"
)


@dataclass(frozen=True, slots=True)
class Endpoint:
    namespace: str | None
    owner: str
    alias: str
    path: str

    @classmethod
    def parse(cls, model_id: str) -> Endpoint | None:
        """The same id gives the same object (it cannot change): the requests kept for one
        model share it, rather than each holding one more object for the garbage collector."""
        return _parse_endpoint(model_id)

    @property
    def app_id(self) -> str:
        """What status, result and cancel URLs use: namespace, owner and app."""
        prefix = f"{self.namespace}/" if self.namespace else ""
        return f"{prefix}{self.owner}/{self.alias}"

    @property
    def model_id(self) -> str:
        return f"{self.app_id}/{self.path}" if self.path else self.app_id

    def serves(self, app_part: str) -> bool:
        """Whether a request path's app part names this endpoint, in either form."""
        return app_part.strip("/") in (self.app_id, self.model_id)


@functools.lru_cache(maxsize=1024)
def _parse_endpoint(model_id: str) -> Endpoint | None:
    parts = model_id.strip("/").split("/")
    if parts[0] in RESERVED_ROOTS:
        return None
    namespace = parts.pop(0) if parts[0] in NAMESPACES else None
    if len(parts) < 2 or not all(parts):
        return None
    return Endpoint(namespace, parts[0], parts[1], "/".join(parts[2:]))


@dataclass(frozen=True, slots=True)
class RequestPath:
    app_part: str
    request_id: str
    operation: Operation

    @classmethod
    def parse(cls, path: str) -> RequestPath | None:
        match = _REQUEST_PATH.match(path.strip("/"))
        if match is None:
            return None
        return cls(match["app"], match["id"], _OPERATIONS[match["op"]])
