"""Copying a job's output files from fal to the operator's store.

Each file is streamed: read from fal in chunks, hashed, and written to the store as it comes
(multipart for a large one), so a 50 MB video costs a few chunks of memory, not 50 MB. It is
checked on the way: its size against a bound and against what fal's output declares, its
content type against the declared one. An image is also written to a temporary file on disk,
from which its thumbnail is made once, here, so the console never loads a full 2K image.

A file that cannot be copied after a few quick tries does not hold its job: the job succeeds
with fal's URL for that file and the reason, and the copy is tried again later.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import mimetypes
import re
import tempfile
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urlsplit

import httpx

from app.catalog import CATALOG
from app.catalog.files import output_files
from app.storage import ObjectStore
from app.storage.thumbnails import thumbnail

log = logging.getLogger(__name__)

CHUNK_BYTES = 256 * 1024
# Quick tries within one pass (after 0 s, 1 s, 4 s); then the job goes on without the file and
# a later pass tries again (`retry_delay`).
QUICK_TRIES = 3
THUMBNAIL_TYPE = "image/webp"
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


class CopyFailed(Exception):
    """Why a file could not be copied; the message is kept on the job as `mirror_error`.
    `final`: trying again cannot help (a file fal returned inline)."""

    def __init__(self, message: str, *, final: bool = False) -> None:
        super().__init__(message)
        self.final = final


@dataclass(frozen=True, slots=True)
class Limits:
    max_file_bytes: int


def retry_delay(attempts: int) -> float:
    """Seconds until a failed copy is tried again: 1 min, doubling, at most 6 h."""
    return float(min(60 * 2 ** max(attempts - 1, 0), 6 * 3600))


async def mirror_files(
    store: ObjectStore,
    http: httpx.AsyncClient,
    job_id: uuid.UUID,
    model: str,
    output: Any,
    previous: list[dict[str, Any]] | None,
    limits: Limits,
) -> list[dict[str, Any]]:
    """Copy every file of the output not copied yet; one entry per file, in the output's
    order (`app.catalog.files.output_files`): what was copied, or why not."""
    spec = CATALOG.get(model)
    found = output_files(spec.output_schema if spec is not None else None, output)
    done = list(previous or [])
    entries: list[dict[str, Any]] = []
    for position, file in enumerate(found):
        earlier = done[position] if position < len(done) else None
        if earlier is not None and (earlier.get("key") or earlier.get("final")):
            entries.append(earlier)  # copied by an earlier pass, or never to be
            continue
        attempts = int(earlier.get("attempts", 0)) if earlier else 0
        entries.append(
            await _copy_with_retries(store, http, job_id, position, file, attempts, limits)
        )
    return entries


def retry_at_seconds(entries: list[dict[str, Any]]) -> float | None:
    """When the job's failed copies are next due, in seconds from now; None if none failed."""
    failed = [entry for entry in entries if not entry.get("key") and not entry.get("final")]
    if not failed:
        return None
    return min(retry_delay(int(entry.get("attempts", 1))) for entry in failed)


async def _copy_with_retries(
    store: ObjectStore,
    http: httpx.AsyncClient,
    job_id: uuid.UUID,
    position: int,
    file: Mapping[str, Any],
    attempts: int,
    limits: Limits,
) -> dict[str, Any]:
    error = "not tried"
    for quick in range(QUICK_TRIES):
        if quick:
            await asyncio.sleep(4 ** (quick - 1))
        attempts += 1
        try:
            copied = await _copy(store, http, job_id, position, file, limits)
            return {**copied, "attempts": attempts}
        except CopyFailed as exc:
            error = str(exc)
            if exc.final:
                return {"key": None, "error": error, "attempts": attempts, "final": True}
        except httpx.HTTPError as exc:
            error = f"fal's file could not be read: {type(exc).__name__}"
        except Exception as exc:
            # Anything else (an unusable URL, the store refusing, a full disk) is this file's
            # failure, never the pass's: the job must still succeed with the others.
            log.exception("copy of output file %d failed", position)
            error = f"the copy failed: {type(exc).__name__}"
        log.warning("copy of output file %d failed (%s)", position, error)
    return {"key": None, "error": error, "attempts": attempts}


async def _copy(
    store: ObjectStore,
    http: httpx.AsyncClient,
    job_id: uuid.UUID,
    position: int,
    file: Mapping[str, Any],
    limits: Limits,
) -> dict[str, Any]:
    url: str = file["url"]
    if url.startswith("data:"):
        raise CopyFailed(
            "fal returned the file inline (a data: URI); there is nothing to copy", final=True
        )
    declared_type = file.get("content_type")
    declared_size = file.get("file_size")
    async with http.stream("GET", url) as response:
        if response.status_code != 200:
            raise CopyFailed(f"fal's file answered {response.status_code}")
        served_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        content_type = _content_type(declared_type, served_type, url)
        length = response.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limits.max_file_bytes:
            raise CopyFailed(f"the file is larger than {limits.max_file_bytes} bytes")
        key = f"jobs/{job_id}/{position}-{_name(file, url, content_type)}"
        digest = hashlib.sha256()
        spool: IO[bytes] | None = None
        if content_type.startswith("image/"):
            spool = tempfile.NamedTemporaryFile(prefix="falrelay-", suffix=".img")  # noqa: SIM115
        try:
            size = await store.put(
                key,
                _checked(response.aiter_bytes(CHUNK_BYTES), digest, spool, limits),
                content_type=content_type,
            )
            if isinstance(declared_size, int) and declared_size > 0 and size != declared_size:
                await store.delete([key])
                raise CopyFailed(f"fal's output says {declared_size} bytes; {size} arrived")
            thumbnail_key = None
            if spool is not None:
                spool.flush()
                thumbnail_key = await _thumbnail(store, Path(spool.name), key)
        finally:
            if spool is not None:
                spool.close()
    return {
        "key": key,
        "thumbnail_key": thumbnail_key,
        "size": size,
        "sha256": digest.hexdigest(),
        "content_type": content_type,
        "error": None,
    }


async def _checked(
    chunks: AsyncIterator[bytes], digest: Any, spool: IO[bytes] | None, limits: Limits
) -> AsyncIterator[bytes]:
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limits.max_file_bytes:
            raise CopyFailed(f"the file is larger than {limits.max_file_bytes} bytes")
        digest.update(chunk)
        if spool is not None:
            spool.write(chunk)
        yield chunk


async def _thumbnail(store: ObjectStore, path: Path, key: str) -> str | None:
    # Pillow decodes on this thread's CPU: off the event loop.
    data = await asyncio.to_thread(thumbnail, path)
    if data is None:
        return None
    thumbnail_key = f"{key}.thumb.webp"
    await store.put_bytes(thumbnail_key, data, content_type=THUMBNAIL_TYPE)
    return thumbnail_key


def _content_type(declared: Any, served: str, url: str) -> str:
    """The file's type: what fal's output declares, which what fal serves must agree with
    (same major type: an `image/png` that arrives as `text/html` is an error page)."""
    declared = declared.lower() if isinstance(declared, str) and "/" in declared else None
    comparable = declared and served and served != "application/octet-stream"
    if comparable and declared.split("/")[0] != served.split("/")[0]:
        raise CopyFailed(f"fal's output says {declared}, but the file is {served}")
    return declared or served or mimetypes.guess_type(url)[0] or "application/octet-stream"


def _name(file: Mapping[str, Any], url: str, content_type: str) -> str:
    name = file.get("file_name")
    if not isinstance(name, str) or not name:
        name = unquote(Path(urlsplit(url).path).name) or "file"
    name = _SAFE_NAME.sub("_", name)[-80:].lstrip(".") or "file"
    if "." not in name:
        name += mimetypes.guess_extension(content_type) or ""
    return name
