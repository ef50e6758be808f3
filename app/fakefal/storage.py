"""The fake CDN's files: uploads kept byte for byte with their content type, within a bound.

Small files stay in memory; a file past `SPOOL_BYTES`, or any file once memory holds
`MEMORY_BYTES`, goes to a temp dir of the fake's own. All files and unfinished uploads together
stay under `max_bytes`: a new byte past it drops the oldest finished file (a CDN's expiry, early),
and an upload that cannot fit even then is refused. A multipart upload's parts become the file
as they are, never copied. Nothing here speaks HTTP (see cdn.py).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import os
import re
import secrets
import shutil
import tempfile
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

SPOOL_BYTES = 1024 * 1024
MEMORY_BYTES = 64 * 1024 * 1024
# Unfinished uploads (initiated or multipart) remembered at most, and for how long.
MAX_PENDING = 1000
PENDING_SECONDS = 3600.0
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_READ_CHUNK = 1024 * 1024


class StorageFull(Exception):
    """The upload does not fit under the store's bound, even with every old file dropped."""


@dataclass(eq=False)
class Blob:
    """Bytes being written or kept: in memory (`data`) or in a temp file (`path`)."""

    data: bytearray = field(default_factory=bytearray)
    path: Path | None = None
    size: int = 0
    file: BinaryIO | None = None  # open while written to disk

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None

    def discard(self) -> None:
        self.close()
        self.data = bytearray()
        if self.path is not None:
            self.path.unlink(missing_ok=True)


@dataclass(eq=False)
class StoredFile:
    """A finished file: one blob, or a multipart upload's parts in their order (never copied)."""

    content_type: str
    blobs: list[Blob]
    created_at: float

    @property
    def size(self) -> int:
        return sum(blob.size for blob in self.blobs)

    def in_memory(self) -> bytes | None:
        """All its bytes, when they are all in memory."""
        if any(blob.path is not None for blob in self.blobs):
            return None
        return b"".join(bytes(blob.data) for blob in self.blobs)

    def chunks(self) -> Iterator[bytes]:
        """Its bytes in order, never an empty chunk, read from disk a chunk at a time
        (blocking)."""
        for blob in self.blobs:
            if blob.path is None:
                if blob.data:
                    yield bytes(blob.data)
                continue
            with blob.path.open("rb") as handle:
                while chunk := handle.read(_READ_CHUNK):
                    yield chunk


@dataclass(eq=False)
class Pending:
    """An upload that has a URL but no bytes yet: `initiate`'s PUT target, or a multipart one."""

    key: str  # the finished file's key in the store (its URL path after /files/)
    content_type: str
    multipart: bool
    created_at: float
    parts: dict[int, tuple[Blob, str]] = field(default_factory=dict)  # number -> (bytes, etag)


class FileStore:
    """Files by key, oldest first, bounded by `max_bytes`."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._files: OrderedDict[str, StoredFile] = OrderedDict()
        self._pending: OrderedDict[str, Pending] = OrderedDict()
        self._used = 0  # bytes of kept files and of blobs being written or waiting
        self._in_memory = 0  # bytes of kept files held in memory
        self._dir: Path | None = None
        self._names = itertools.count()

    @staticmethod
    def new_key(file_name: str | None, content_type: str) -> str:
        """A fresh, unguessable key: `u/{32 hex}/{safe file name}`."""
        return f"u/{secrets.token_hex(16)}/{safe_file_name(file_name, content_type)}"

    def get(self, key: str) -> StoredFile | None:
        return self._files.get(key)

    def __len__(self) -> int:
        return len(self._files)

    @property
    def used_bytes(self) -> int:
        return self._used

    # -- writing ------------------------------------------------------------------------------

    def write(self, blob: Blob, chunk: bytes) -> None:
        """Append to a blob, spooling it to disk past `SPOOL_BYTES`; raises StorageFull."""
        if not chunk:
            return
        self._reserve(len(chunk))
        blob.size += len(chunk)
        if blob.path is None and blob.size > SPOOL_BYTES:
            self._spool(blob)
        if blob.file is not None:
            blob.file.write(chunk)
        else:
            blob.data += chunk

    def forget(self, blob: Blob) -> None:
        """Drop a blob that will not be kept (a refused or abandoned upload)."""
        self._used -= blob.size
        blob.discard()

    def keep(self, key: str, blobs: list[Blob], content_type: str) -> StoredFile:
        """Store finished blobs as the file `key`; small ones memory cannot take go to disk."""
        for blob in blobs:
            blob.close()
            if blob.path is None and self._in_memory + blob.size > MEMORY_BYTES:
                self._spool(blob)
                blob.close()
            if blob.path is None:
                self._in_memory += blob.size
        old = self._files.pop(key, None)
        if old is not None:
            self._drop(old)
        stored = StoredFile(content_type, blobs, time.monotonic())
        self._files[key] = stored
        return stored

    # -- unfinished uploads --------------------------------------------------------------------

    def start(self, key: str, content_type: str, *, multipart: bool) -> str:
        """Register an upload to come; answers its id (a capability: whoever has it may PUT)."""
        self._expire_pending()
        while len(self._pending) >= MAX_PENDING:
            _, oldest = self._pending.popitem(last=False)
            self._forget_parts(oldest)
        upload_id = secrets.token_urlsafe(24)
        self._pending[upload_id] = Pending(key, content_type, multipart, time.monotonic())
        return upload_id

    def pending(self, upload_id: str) -> Pending | None:
        self._expire_pending()
        return self._pending.get(upload_id)

    def finish(self, upload_id: str, blob: Blob) -> StoredFile:
        """The single PUT of an initiated upload arrived: it becomes the file."""
        pending = self._pending.pop(upload_id)
        self._forget_parts(pending)
        return self.keep(pending.key, [blob], pending.content_type)

    def add_part(self, pending: Pending, number: int, blob: Blob, etag: str) -> None:
        """Keep a part, replacing an earlier upload of the same number."""
        blob.close()
        old = pending.parts.pop(number, None)
        if old is not None:
            self.forget(old[0])
        pending.parts[number] = (blob, etag)

    def complete(self, upload_id: str, parts: list[tuple[int, str]]) -> StoredFile:
        """The listed parts, by part number, become the file; parts not listed are dropped.
        Raises ValueError for a part never uploaded, listed twice, or whose ETag differs.
        (fal_client lists its parts in the order their concurrent uploads finished.)"""
        pending = self._pending[upload_id]
        order = sorted(parts)
        numbers = [number for number, _ in order]
        if not order or len(set(numbers)) != len(numbers):
            raise ValueError("each part must be listed once")
        for number, etag in order:
            part = pending.parts.get(number)
            if part is None or part[1].strip('"') != etag.strip('"'):
                raise ValueError(f"part {number} was not uploaded with that ETag")
        del self._pending[upload_id]
        blobs = [pending.parts.pop(number)[0] for number in numbers]
        self._forget_parts(pending)
        return self.keep(pending.key, blobs, pending.content_type)

    # -- housekeeping ----------------------------------------------------------------------------

    def clear(self) -> None:
        for stored in self._files.values():
            for blob in stored.blobs:
                blob.discard()
        for pending in self._pending.values():
            for blob, _ in pending.parts.values():
                blob.discard()
        self._files.clear()
        self._pending.clear()
        self._used = self._in_memory = 0

    def close(self) -> None:
        self.clear()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def _reserve(self, size: int) -> None:
        while self._used + size > self.max_bytes and self._files:
            _, oldest = self._files.popitem(last=False)
            self._drop(oldest)
        if self._used + size > self.max_bytes:
            raise StorageFull
        self._used += size

    def _drop(self, stored: StoredFile) -> None:
        for blob in stored.blobs:
            if blob.path is None:
                self._in_memory -= blob.size
            self._used -= blob.size
            blob.discard()

    def _spool(self, blob: Blob) -> None:
        if self._dir is None or not self._dir.exists():
            self._dir = Path(tempfile.mkdtemp(prefix="fakefal-cdn-"))
        blob.path = self._dir / f"{next(self._names)}.bin"
        blob.file = blob.path.open("wb")
        blob.file.write(blob.data)
        blob.data = bytearray()

    def _forget_parts(self, pending: Pending) -> None:
        for blob, _ in pending.parts.values():
            self.forget(blob)
        pending.parts.clear()

    def _expire_pending(self) -> None:
        cutoff = time.monotonic() - PENDING_SECONDS
        while self._pending:
            upload_id, oldest = next(iter(self._pending.items()))
            if oldest.created_at > cutoff:
                return
            del self._pending[upload_id]
            self._forget_parts(oldest)


def safe_file_name(file_name: str | None, content_type: str) -> str:
    """A name fit for a URL path segment: the given one cleaned, else one from the type."""
    name = _UNSAFE.sub("_", os.path.basename(file_name or "")).strip("._")
    if name:
        return name[:200]
    subtype = content_type.split(";")[0].split("/")[-1].split("+")[0].strip()
    extension = _UNSAFE.sub("", subtype)[:16] or "bin"
    return f"upload.{extension}"


class CdnTokens:
    """The short-lived tokens `storage/auth/token` hands out: signed, so nothing is stored."""

    def __init__(self, lifetime: float = 3600.0) -> None:
        self.lifetime = lifetime
        self._secret = secrets.token_bytes(32)

    def issue(self, now: float | None = None) -> tuple[str, float]:
        """A token and when it expires (Unix time)."""
        expires = int((time.time() if now is None else now) + self.lifetime)
        claim = f"{expires}.{secrets.token_hex(8)}"
        return f"{claim}.{self._sign(claim)}", float(expires)

    def valid(self, token: str, now: float | None = None) -> bool:
        claim, _, signature = token.rpartition(".")
        expires, _, _ = claim.partition(".")
        if not expires.isdigit() or not hmac.compare_digest(signature, self._sign(claim)):
            return False
        return int(expires) > (time.time() if now is None else now)

    def _sign(self, claim: str) -> str:
        return hmac.new(self._secret, claim.encode(), hashlib.sha256).hexdigest()
