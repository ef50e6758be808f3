"""Mirrored files of a `file://` store, served at the signed URLs the store hands out.

No API key: the URL's signature is the credential (app.storage.file_urls), so the URL works in
an `<img>` tag, a video player or a webhook receiver. The file is streamed from the open
descriptor, one range at most, with validators and caching headers for browsers and players.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from app.api.deps import RuntimeDep
from app.errors import AppError, NotFound
from app.storage.file_urls import FILES_PATH, Verdict
from app.storage.filesystem import FileStore, StoredFile
from app.storage.ranges import (
    ByteRange,
    RangeNotSatisfiable,
    etag_for,
    none_match,
    parse_range,
    range_applies,
)

log = logging.getLogger(__name__)

router = APIRouter(prefix=FILES_PATH, include_in_schema=False)

READ_BYTES = 256 * 1024
# Outputs come from models: an HTML or SVG one must not run script on our origin.
SAFETY_HEADERS = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox"}


class UrlRefused(AppError):
    status = 403
    title = "Forbidden"
    slug = "forbidden"


class RangeRefused(AppError):
    status = 416
    title = "Range not satisfiable"
    slug = "range-not-satisfiable"


@router.api_route("/{key:path}", methods=["GET", "HEAD"])
async def get_file(
    key: str,
    request: Request,
    runtime: RuntimeDep,
    expires: str | None = None,
    signature: str | None = None,
) -> Response:
    """A mirrored file, at the signed URL its job gave out."""
    store = runtime.store
    if not isinstance(store, FileStore):
        raise NotFound("This service serves no files: its store is not a directory.")
    now = time.time()
    verdict = store.check_url(key, expires, signature, now=now)
    if verdict is Verdict.FORGED:
        raise UrlRefused("The URL's signature is not valid for this file.")
    if verdict is Verdict.EXPIRED:
        raise UrlRefused("The URL has expired; fetch the job again for a fresh one.")
    try:
        stored = await asyncio.to_thread(store.open, key)
    except OSError:
        # Not the database (which an OSError would otherwise be taken for): say what it is.
        log.exception("could not open the stored file %r", key)
        raise AppError("The file could not be read.") from None
    if stored is None:
        raise NotFound("No such file.")
    try:
        return _respond(stored, request, max_age=max(0, int(expires or 0) - int(now)))
    except BaseException:
        stored.file.close()
        raise


def _respond(stored: StoredFile, request: Request, *, max_age: int) -> Response:
    etag = etag_for(stored.stat)
    headers = {
        "ETag": etag,
        "Cache-Control": f"private, max-age={max_age}",
        "Accept-Ranges": "bytes",
        **SAFETY_HEADERS,
    }
    if none_match(request.headers.get("if-none-match"), etag):
        stored.file.close()
        return Response(status_code=304, headers=headers)
    part: ByteRange | None = None
    if range_applies(request.headers.get("if-range"), etag):
        try:
            part = parse_range(request.headers.get("range"), stored.size)
        except RangeNotSatisfiable as exc:
            stored.file.close()
            raise RangeRefused(
                f"The file has {exc.size} bytes.", headers={"Content-Range": str(exc)}
            ) from None
    whole = ByteRange(0, stored.size)
    if part is not None:
        headers["Content-Range"] = part.content_range(stored.size)
    span = part or whole
    headers["Content-Length"] = str(span.length)
    head_only = request.method == "HEAD"
    return _FileBody(
        stored,
        span if not head_only else ByteRange(0, 0),
        status_code=206 if part is not None else 200,
        headers=headers,
        media_type=stored.content_type,
    )


class _FileBody(StreamingResponse):
    """Streams a byte span of the open file, and closes it however the response ends
    (finished, client gone, cancelled)."""

    def __init__(
        self,
        stored: StoredFile,
        span: ByteRange,
        *,
        status_code: int,
        headers: dict[str, str],
        media_type: str,
    ) -> None:
        self._stored = stored
        super().__init__(
            _read(stored, span), status_code=status_code, headers=headers, media_type=media_type
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._stored.file.close()


async def _read(stored: StoredFile, span: ByteRange) -> AsyncIterator[bytes]:
    fd = stored.file.fileno()
    offset = span.start
    while offset < span.stop:
        chunk = await asyncio.to_thread(os.pread, fd, min(READ_BYTES, span.stop - offset), offset)
        if not chunk:
            return  # cannot happen to a file we never change in place; the length says so
        offset += len(chunk)
        yield chunk
