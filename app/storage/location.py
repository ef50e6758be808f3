"""Where FALRELAY_STORAGE_URL points: a directory (`file:///abs/dir`) or a bucket and prefix
(`s3://bucket/prefix`). Parsed once here, for the settings' check and for `open_store`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit


@dataclass(frozen=True, slots=True)
class FileLocation:
    root: Path


@dataclass(frozen=True, slots=True)
class S3Location:
    bucket: str
    prefix: str | None


def parse_location(url: str) -> FileLocation | S3Location:
    parts = urlsplit(url)
    if parts.query or parts.fragment:
        raise ValueError("a storage URL has no query or fragment")
    if parts.scheme == "file":
        # file:///abs/dir (or file://localhost/abs/dir); file://dir is a host named dir.
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise ValueError("a file storage URL names an absolute directory: file:///abs/dir")
        return FileLocation(Path(unquote(parts.path)))
    if parts.scheme == "s3":
        if not parts.netloc:
            raise ValueError("an S3 storage URL names a bucket: s3://bucket/prefix")
        prefix = unquote(parts.path).strip("/")
        return S3Location(parts.netloc, prefix or None)
    raise ValueError("FALRELAY_STORAGE_URL is file:///abs/dir or s3://bucket/prefix")
