"""Logging: one JSON object per line, with the request, job and delivery it concerns, and
nothing secret in it.

Context (request id, job id, delivery id) lives in context variables, so every line logged
while a request or a worker step runs carries it without being passed around. Secrets are kept
out twice over: nothing logs them on purpose, and every line is scrubbed of API keys
(`frk_...`), webhook secrets (`whsec_...`) and the configured fal key before it is written.
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
job_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("job_id", default=None)
delivery_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "delivery_id", default=None
)
_CONTEXT = (("request_id", request_id), ("job_id", job_id), ("delivery_id", delivery_id))
# Fields a call may add with `extra=`.
_EXTRA = ("method", "path", "status", "duration_ms", "event", "outcome")

_SECRET_SHAPES = re.compile(r"frk_[A-Za-z0-9_\-]{6,}|whsec_[A-Za-z0-9+/=]{6,}")
REDACTED = "[redacted]"
# The token in fal's callback URL (`/callbacks/fal/{job_id}/{token}`) is what lets a webhook
# through to a job, so a log reader must not learn it: masked in paths, and in URLs quoted
# anywhere (a fal submit's `fal_webhook=` query is percent-encoded).
_SLASH = r"(?:/|%2[Ff])"
_CALLBACK_TOKEN = re.compile(
    rf"({_SLASH}callbacks{_SLASH}fal{_SLASH}[^/%?#&\s\"'\\]*{_SLASH})[^/%?#&\s\"'\\]+"
)


def mask_callback_tokens(text: str) -> str:
    if "callbacks" not in text:  # the pattern's one literal: a quick no
        return text
    return _CALLBACK_TOKEN.sub(rf"\g<1>{REDACTED}", text)


class Scrubber:
    def __init__(self, literals: list[str]) -> None:
        self._literals = [s for s in literals if len(s) >= 6]

    def __call__(self, text: str) -> str:
        if "frk_" in text or "whsec_" in text:  # the shapes' literals: a quick no
            text = _SECRET_SHAPES.sub(REDACTED, text)
        text = mask_callback_tokens(text)
        for literal in self._literals:
            text = text.replace(literal, REDACTED)
        return text


class JsonFormatter(logging.Formatter):
    def __init__(self, scrub: Scrubber) -> None:
        super().__init__()
        self._scrub = scrub

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name, var in _CONTEXT:
            value = var.get()
            if value is not None:
                entry[name] = value
        for name in _EXTRA:
            if hasattr(record, name):
                entry[name] = getattr(record, name)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return self._scrub(orjson.dumps(entry, default=str).decode())


class TextFormatter(logging.Formatter):
    def __init__(self, scrub: Scrubber) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
        self._scrub = scrub

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = " ".join(f"{n}={v.get()}" for n, v in _CONTEXT if v.get() is not None)
        return self._scrub(f"{line} [{context}]" if context else line)


def configure(
    *, level: str = "INFO", fmt: Literal["json", "text"] = "json", secrets: list[str] | None = None
) -> None:
    """Route every logger (uvicorn's too) through one handler on stderr."""
    scrub = Scrubber(secrets or [])
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(scrub) if fmt == "json" else TextFormatter(scrub))
    # No line says where in the code, or in which thread or process, it was logged: not
    # looking those up saves a fifth of each line's cost (the logging HOWTO's "Optimization").
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    # httpx logs every request at INFO; ours are logged (and measured) where they matter.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
