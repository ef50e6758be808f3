"""What part of a stored file a request asks for, and whether its copy is still good: RFC 9110
single byte ranges and entity-tag validators, for the file store's route (app/api/files.py).

Only one range per request is served. Several ranges, another unit or a malformed header are
ignored and the whole file is served, as RFC 9110 allows (a server MAY ignore Range), which
players and download managers handle; only a well-formed range past the end is refused (416).
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ByteRange:
    start: int
    stop: int  # exclusive

    @property
    def length(self) -> int:
        return self.stop - self.start

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.stop - 1}/{size}"


class RangeNotSatisfiable(Exception):
    def __init__(self, size: int) -> None:
        super().__init__(f"bytes */{size}")
        self.size = size


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The one range asked for; None for the whole file. Raises RangeNotSatisfiable."""
    if header is None:
        return None
    unit, sep, spec = header.partition("=")
    if not sep or unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, sep, last = spec.strip().partition("-")
    first, last = first.strip(), last.strip()
    if not sep or not _digits(first, allow_empty=True) or not _digits(last, allow_empty=True):
        return None
    if not first:
        if not last:
            return None
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable(size)
        return ByteRange(max(0, size - suffix), size)
    start = int(first)
    if last and int(last) < start:
        return None  # invalid, so ignored
    if start >= size:
        raise RangeNotSatisfiable(size)
    stop = min(size, int(last) + 1) if last else size
    return ByteRange(start, stop)


def _digits(value: str, *, allow_empty: bool) -> bool:
    if not value:
        return allow_empty
    return len(value) <= 19 and value.isascii() and value.isdigit()


def etag_for(stat: os.stat_result) -> str:
    """A strong validator: stored files are never changed in place (a put replaces the file by
    a rename, which gives it a new inode and mtime)."""
    return f'"{stat.st_ino:x}-{stat.st_size:x}-{stat.st_mtime_ns:x}"'


def none_match(header: str | None, etag: str) -> bool:
    """If-None-Match matches (so the client's copy is current: 304). Weak comparison."""
    if header is None:
        return False
    if header.strip() == "*":
        return True
    ours = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == ours for tag in header.split(","))


def range_applies(if_range: str | None, etag: str) -> bool:
    """Whether to honour Range: with If-Range, only while the client's validator is ours
    (strong comparison; a date never matches, since we send no Last-Modified)."""
    return if_range is None or if_range.strip() == etag
