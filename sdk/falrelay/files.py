"""Files in and out of jobs, for any model.

In: fal's file inputs (`image_url`, `audio_url`, `image_urls`...) take an https URL or a `data:`
URI, so a local file is sent inline with `data_uri(path)`.

Out: a finished job lists its files in `Job.files`. A service older than that field sends none;
`files_of(job)` then finds them in the output itself, the way fal shapes them: any object with a
string `url` and a `content_type` or `file_name`, or with a `url` under a key that names a kind
(`images`, `video`, `audio_file`...).
"""

from __future__ import annotations

import base64
import mimetypes
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from falrelay.models import File, FileKind, Job

# The types fal's models produce, with the suffix a saved file gets. Written out rather than
# left to `mimetypes`, whose answers depend on the machine's /etc/mime.types.
SUFFIXES: dict[str, str] = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/webp": ".webp",
    "image/gif": ".gif",
    "video/mp4": ".mp4",
    "video/webm": ".webm",
    "video/quicktime": ".mov",
    "audio/mpeg": ".mp3",
    "audio/wav": ".wav",
    "audio/x-wav": ".wav",
    "audio/ogg": ".ogg",
    "audio/flac": ".flac",
    "audio/mp4": ".m4a",
    "model/gltf-binary": ".glb",
    "application/zip": ".zip",
}
KINDS: tuple[FileKind, ...] = ("image", "video", "audio")
# Deep enough for any real output; a hostile one cannot make the walk recurse without end.
MAX_DEPTH = 12


def data_uri(path: str | Path) -> str:
    """The file as a `data:` URI, typed from its name (application/octet-stream when the name
    says nothing)."""
    path = Path(path)
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    encoded = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"data:{content_type};base64,{encoded}"


def files_of(job: Job) -> list[File]:
    """The job's files: as the service lists them, else as found in its output."""
    if job.files:
        return list(job.files)
    return files_in_output(job.output)


def files_in_output(output: Any) -> list[File]:
    """Every file object in a model's output, in document order."""
    return [_file(found, hint) for found, hint in _file_objects(output, None)]


def kind_of(
    content_type: str | None, name: str | None = None, hint: FileKind | None = None
) -> FileKind:
    """image, video or audio from the content type, else from `hint` (what the output calls
    it), else from the name's suffix; "file" for anything else."""
    for source in (content_type, hint, mimetypes.guess_type(name)[0] if name else None):
        major = (source or "").split("/", 1)[0].strip().lower()
        for kind in KINDS:
            if major == kind:
                return kind
    return "file"


def _hint(key: str) -> FileKind | None:
    """The kind a key names: `images`, `video`, `audio_file`, `mask_image`..."""
    for word in key.lower().split("_"):
        singular = word[:-1] if word.endswith("s") else word
        if singular in KINDS:
            return singular
    return None


def suffix_for(file: File) -> str:
    """The suffix a saved copy gets: the file name's own, else the content type's, else the
    URL's, else `.bin`."""
    for name in (file.file_name, _url_name(file.url)):
        suffix = PurePosixPath(name or "").suffix
        if 1 < len(suffix) <= 6 and suffix[1:].isalnum():
            return suffix.lower()
    content_type = (file.content_type or "").split(";", 1)[0].strip().lower()
    return SUFFIXES.get(content_type) or mimetypes.guess_extension(content_type) or ".bin"


def _file_objects(
    value: Any, hint: FileKind | None, depth: int = 0
) -> Iterator[tuple[dict[str, Any], FileKind | None]]:
    if depth > MAX_DEPTH:
        return
    if isinstance(value, dict):
        if isinstance(value.get("url"), str) and (
            hint is not None
            or isinstance(value.get("content_type"), str)
            or isinstance(value.get("file_name"), str)
        ):
            yield value, hint
            return
        for key, item in value.items():
            yield from _file_objects(item, _hint(str(key)), depth + 1)
    elif isinstance(value, list):
        for item in value:
            yield from _file_objects(item, hint, depth + 1)


def _file(found: dict[str, Any], hint: FileKind | None) -> File:
    url: str = found["url"]
    content_type = _text(found.get("content_type"))
    if content_type is None and url.startswith("data:"):
        content_type = url[5:].split(",", 1)[0].split(";", 1)[0] or None
    file_name = _text(found.get("file_name"))
    return File(
        url=url,
        content_type=content_type,
        kind=kind_of(content_type, file_name or _url_name(url), hint),
        width=_int(found.get("width")),
        height=_int(found.get("height")),
        duration=_float(found.get("duration")),
        file_name=file_name,
        file_size=_int(found.get("file_size")),
    )


def _url_name(url: str) -> str | None:
    if url.startswith("data:"):
        return None
    return PurePosixPath(urlsplit(url).path).name or None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: Any) -> int | None:
    number = _float(value)
    return None if number is None else int(number)


def _float(value: Any) -> float | None:
    # bool is an int to Python, never a size.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)
