"""A job's file inputs: the URLs and `data:` URIs in a model's file fields.

A file field (`image_url`, `image_urls`, `video_url`...: see `app.catalog.spec.file_inputs`)
takes an `https://` URL, which fal fetches itself, or a `data:` URI carrying the file. A data
URI is checked here (its media type against what the field takes, its size against
`max_bytes`), and one above `inline_bytes` is uploaded to fal's storage before the job is
stored, with fal's own upload protocol: the job row and the request fal receives then carry a
short URL instead of megabytes of base64.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import mimetypes
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes, urlsplit

from app.catalog.spec import FileInput, ModelSpec
from app.errors import ServiceUnavailable, ValidationFailed, ValidationIssue
from app.fal.storage import FalStorage, StorageUnavailable

# data:[<media type>][;param=value]*[;base64],<data>  (RFC 2397)
_DATA_URI = re.compile(
    r"^data:(?P<type>[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+)?"
    r"(?P<params>(?:;[A-Za-z0-9!#$&^_.+-]+=[^;,]*)*)(?P<base64>;base64)?,",
    re.IGNORECASE,
)
# fal fetches at most this many files per field (image_urls), and a job carries no more.
MAX_FILES_PER_FIELD = 20


class FileStorageUnavailable(ServiceUnavailable):
    title = "fal storage unavailable"
    slug = "fal-storage-unavailable"


@dataclass(frozen=True, slots=True)
class DataFile:
    """A data URI to upload: where it sits in the input, and what it holds."""

    field: str
    index: int | None
    data: bytes
    content_type: str


def check(
    spec: ModelSpec,
    model_input: dict[str, Any],
    *,
    max_bytes: int,
    inline_bytes: int,
    allow_http: bool,
) -> list[DataFile]:
    """Refuse file values the model cannot use (ValidationFailed, nothing stored); the data URIs
    that must be uploaded before the job is stored."""
    issues: list[ValidationIssue] = []
    uploads: list[DataFile] = []
    for field in spec.file_inputs:
        value = model_input.get(field.name)
        if value is None:
            continue
        values: Sequence[Any] = value if isinstance(value, list) else [value]
        if len(values) > MAX_FILES_PER_FIELD:
            issues.append(_issue(field.name, None, f"at most {MAX_FILES_PER_FIELD} files"))
            continue
        for index, item in enumerate(values):
            at = index if isinstance(value, list) else None
            problem, upload = _check_one(
                field,
                item,
                at,
                max_bytes=max_bytes,
                inline_bytes=inline_bytes,
                allow_http=allow_http,
            )
            if problem is not None:
                issues.append(_issue(field.name, at, problem))
            elif upload is not None:
                uploads.append(upload)
    if issues:
        raise ValidationFailed(issues)
    return uploads


async def upload(storage: FalStorage, model_input: dict[str, Any], files: list[DataFile]) -> None:
    """Upload each file to fal and put its URL where its data URI was (in place)."""
    try:
        urls = await asyncio.gather(
            *(storage.upload(file.data, file.content_type, _file_name(file)) for file in files)
        )
    except StorageUnavailable as exc:
        raise FileStorageUnavailable(
            f"A file input could not be uploaded to fal's storage ({exc}); nothing was stored. "
            "Retry, or pass the file as an https URL."
        ) from exc
    for file, url in zip(files, urls, strict=True):
        if file.index is None:
            model_input[file.field] = url
        else:
            model_input[file.field][file.index] = url


def digest_data_uris(model_input: dict[str, Any], spec: ModelSpec) -> dict[str, Any]:
    """The input with every data URI replaced by its SHA-256: what an idempotent replay is
    compared on, so the comparison does not depend on where an upload landed."""
    digested = dict(model_input)
    for field in spec.file_inputs:
        value = digested.get(field.name)
        if isinstance(value, str) and value.startswith("data:"):
            digested[field.name] = _digest(value)
        elif isinstance(value, list):
            digested[field.name] = [
                _digest(item) if isinstance(item, str) and item.startswith("data:") else item
                for item in value
            ]
    return digested


def _check_one(
    field: FileInput,
    value: Any,
    index: int | None,
    *,
    max_bytes: int,
    inline_bytes: int,
    allow_http: bool,
) -> tuple[str | None, DataFile | None]:
    if not isinstance(value, str):
        return "must be an https URL or a data: URI", None
    if value[:5].lower() == "data:":
        return _check_data_uri(field, value, index, max_bytes=max_bytes, inline_bytes=inline_bytes)
    parts = urlsplit(value)
    schemes = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in schemes or not parts.hostname:
        return "must be an https URL or a data: URI", None
    if parts.username is not None or parts.password is not None:
        return "must not carry credentials", None
    return None, None


def _check_data_uri(
    field: FileInput, value: str, index: int | None, *, max_bytes: int, inline_bytes: int
) -> tuple[str | None, DataFile | None]:
    match = _DATA_URI.match(value)
    if match is None:
        return "is not a well-formed data: URI (data:<type>;base64,<data>)", None
    content_type = (match["type"] or "text/plain").lower()
    if field.accepts and not content_type.startswith(field.accepts):
        wanted = " or ".join(f"{prefix}*" for prefix in field.accepts)
        return f"must hold {wanted}, not {content_type}", None
    payload = value[match.end() :]
    # The size is known before decoding: refuse an oversized file without holding it twice.
    approximate = len(payload) * 3 // 4 if match["base64"] else len(payload)
    if approximate > max_bytes + 3:
        return f"holds more than {max_bytes} bytes, the limit for a file input", None
    try:
        data = (
            base64.b64decode(payload, validate=True)
            if match["base64"]
            else unquote_to_bytes(payload)
        )
    except (binascii.Error, ValueError):
        return "is not valid base64", None
    if len(data) > max_bytes:
        return f"holds more than {max_bytes} bytes, the limit for a file input", None
    if not data:
        return "holds no data", None
    if len(data) <= inline_bytes:
        return None, None  # small enough to send to fal as it is
    return None, DataFile(field=field.name, index=index, data=data, content_type=content_type)


def _file_name(file: DataFile) -> str:
    extension = mimetypes.guess_extension(file.content_type) or ".bin"
    suffix = "" if file.index is None else f"-{file.index}"
    return f"{file.field}{suffix}{extension}"


def _digest(value: str) -> str:
    return "sha256:" + hashlib.sha256(value.encode()).hexdigest()


def _issue(field: str, index: int | None, message: str) -> ValidationIssue:
    loc: list[str | int] = ["body", "input", field]
    if index is not None:
        loc.append(index)
    return ValidationIssue(loc=loc, msg=message, type="file_input")
