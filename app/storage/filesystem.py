"""The `file:///abs/dir` store: objects are files under one directory, served by falrelay
(app/api/files.py) at signed URLs.

A put streams into a temporary file beside the final one, fsyncs it, then renames it over the
final name and fsyncs the directory: a crash leaves either the old object or the new one under
the key, never half a file. Temporary names start with a dot, which no key segment may
(app.storage.keys), so they never collide with an object. The content type rides with the file
as an extended attribute (`user.falrelay.content_type`), set before the rename; where the
filesystem has none, the route guesses the type from the key's extension.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import mimetypes
import os
import tempfile
import time
from collections.abc import AsyncIterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISREG
from typing import BinaryIO

from app.storage.errors import ObjectNotFound
from app.storage.file_urls import FileUrls, Verdict
from app.storage.keys import InvalidKey, check_key

CONTENT_TYPE_ATTRIBUTE = "user.falrelay.content_type"
# Chunks are gathered to this size before a write in a worker thread: one thread hop per MiB,
# not per network chunk, and at most this much held per put.
WRITE_BYTES = 1024 * 1024
DEFAULT_CONTENT_TYPE = "application/octet-stream"


@dataclass(slots=True)
class StoredFile:
    """An object opened for serving: its size and validator come from the open file, so they
    describe the bytes that will be read even if the key is replaced meanwhile."""

    file: BinaryIO
    stat: os.stat_result
    content_type: str

    @property
    def size(self) -> int:
        return self.stat.st_size


class FileStore:
    def __init__(self, root: Path, urls: FileUrls) -> None:
        self.root = root
        self.urls = urls

    def path(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key).split("/"))

    async def put(self, key: str, chunks: AsyncIterable[bytes], *, content_type: str) -> int:
        target = self.path(key)
        pending = await asyncio.to_thread(_PendingFile.create, target)
        try:
            buffer = bytearray()
            written = 0
            async for chunk in chunks:
                buffer += chunk
                if len(buffer) >= WRITE_BYTES:
                    data, buffer = buffer, bytearray()
                    await asyncio.to_thread(pending.write, data)
                    written += len(data)
            await asyncio.to_thread(pending.commit, buffer, content_type)
            return written + len(buffer)
        except BaseException:
            # Synchronous: also runs when the put is cancelled. Two quick syscalls.
            pending.discard()
            raise

    async def put_bytes(self, key: str, data: bytes, *, content_type: str) -> None:
        target = self.path(key)
        pending = await asyncio.to_thread(_PendingFile.create, target)
        try:
            await asyncio.to_thread(pending.commit, data, content_type)
        except BaseException:
            pending.discard()
            raise

    async def read(self, key: str) -> bytes:
        path = self.path(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(key) from None

    async def delete(self, keys: Sequence[str]) -> None:
        paths = [self.path(key) for key in keys]
        if paths:
            await asyncio.to_thread(self._delete, paths)

    def url(self, key: str) -> str:
        return self.urls.url(check_key(key), now=time.time())

    async def aclose(self) -> None:
        return None

    # Serving (app/api/files.py).

    def check_url(
        self, key: str, expires: str | None, signature: str | None, *, now: float
    ) -> Verdict:
        return self.urls.check(key, expires, signature, now=now)

    def open(self, key: str) -> StoredFile | None:
        """The object opened for reading, or None (no such object, or no such key). Blocking:
        call it in a thread."""
        try:
            path = self.path(key)
        except InvalidKey:
            return None
        try:
            # O_NOFOLLOW: a symlink at the key is not an object we wrote.
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.EISDIR):
                return None
            raise
        try:
            stat = os.fstat(fd)
            if not S_ISREG(stat.st_mode):  # a folder of keys is no object
                os.close(fd)
                return None
            content_type = _content_type(fd, key)
        except BaseException:
            os.close(fd)
            raise
        return StoredFile(os.fdopen(fd, "rb", buffering=0), stat, content_type)

    def _delete(self, paths: list[Path]) -> None:
        for path in paths:
            path.unlink(missing_ok=True)
        # Empty directories go too (a job's folder once its files are gone), never the root.
        for parent in {path.parent for path in paths}:
            while parent != self.root and self.root in parent.parents:
                try:
                    parent.rmdir()
                except OSError:
                    break  # not empty (or gone): the ones above are not empty either
                parent = parent.parent


class _PendingFile:
    """A temporary file beside the object's final name, renamed over it once complete."""

    def __init__(self, target: Path, temp: Path, file: BinaryIO) -> None:
        self._target = target
        self._temp = temp
        self._file = file

    @classmethod
    def create(cls, target: Path) -> _PendingFile:
        # A delete pruning empty folders may remove the parent between mkdir and mkstemp.
        for attempt in range(3):
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd, name = tempfile.mkstemp(
                    dir=target.parent, prefix=f".{target.name}.", suffix=".part"
                )
            except FileNotFoundError:
                if attempt == 2:
                    raise
                continue
            return cls(target, Path(name), os.fdopen(fd, "wb"))
        raise AssertionError("unreachable")

    def write(self, data: bytes | bytearray) -> None:
        self._file.write(data)

    def commit(self, data: bytes | bytearray, content_type: str) -> None:
        self._file.write(data)
        self._file.flush()
        fd = self._file.fileno()
        os.fsync(fd)
        _set_content_type(fd, content_type)
        self._file.close()
        os.replace(self._temp, self._target)
        _fsync_directory(self._target.parent)

    def discard(self) -> None:
        self._file.close()
        self._temp.unlink(missing_ok=True)


def _set_content_type(fd: int, content_type: str) -> None:
    # It becomes a response header: nothing a header may not carry.
    if not content_type.isascii() or not content_type.isprintable() or len(content_type) > 255:
        return
    with contextlib.suppress(AttributeError, OSError):  # no xattrs here: guessed when served
        os.setxattr(fd, CONTENT_TYPE_ATTRIBUTE, content_type.encode())


def _content_type(fd: int, key: str) -> str:
    try:
        return os.getxattr(fd, CONTENT_TYPE_ATTRIBUTE).decode()
    except (AttributeError, OSError, UnicodeDecodeError):
        return mimetypes.guess_type(key)[0] or DEFAULT_CONTENT_TYPE


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
