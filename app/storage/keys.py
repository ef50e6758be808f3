"""Object keys: the names mirrored files are stored under, checked alike for every store.

A key is a relative `/`-separated path of plain segments. The file store maps it onto a
directory, so a key that could climb out of it (`..`), start at the root, carry a Windows
separator or a control character is refused here, for S3 too: a key valid in one store is
valid in all, and an operator can move files between them. Segments may not start with a dot,
which keeps the file store's temporary names (`.<name>.<random>.part`) out of the key space.
"""

from __future__ import annotations

# S3's limit, in UTF-8 bytes.
MAX_KEY_BYTES = 1024


class InvalidKey(ValueError):
    """A key no store may hold."""


def check_key(key: str) -> str:
    if not key or len(key.encode()) > MAX_KEY_BYTES:
        raise InvalidKey(f"a key has 1 to {MAX_KEY_BYTES} bytes")
    if "\\" in key or any(ord(c) < 0x20 or ord(c) == 0x7F for c in key):
        raise InvalidKey("a key has no backslash and no control character")
    for segment in key.split("/"):
        if not segment or segment.startswith("."):
            raise InvalidKey(
                f"{key!r}: a key is relative, with no empty, `.` or `..` segment and no "
                "segment starting with a dot"
            )
    return key
