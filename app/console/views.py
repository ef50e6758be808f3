"""Rows shaped for the console's templates: the API's views plus what a page shows around them."""

from __future__ import annotations

import calendar
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import unquote, unquote_to_bytes, urlsplit

import asyncpg

from app.jobs.models import JobStatus
from app.jobs.schemas import job_view
from app.webhooks.views import delivery_view
from falrelay.files import files_in_output, kind_of

# A page showing work that is about to happen reloads itself until it has happened.
SOON = timedelta(seconds=30)


def job_files(job: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The job's files (`{url, content_type, kind, width, height, duration, file_name,
    file_size}`), the one place the console reads them: the job's own `files` when its view
    carries them, else found in its output as the SDK finds them for an older service."""
    listed = job.get("files")
    if listed is not None:
        return list(listed)
    return [found.model_dump() for found in files_in_output(job.get("output"))]


def job_card(row: asyncpg.Record) -> dict[str, Any]:
    job = job_view(row)
    files = job_files(job)
    return {
        **job,
        "prompt": job["input"].get("prompt", ""),
        "thumbnail": files[0] if files else None,
        "file_count": len(files),
        "all_images": all(f["kind"] == "image" for f in files),
    }


@dataclass(frozen=True, slots=True)
class FileRef:
    """A file given as input: a link (with a thumbnail for an image), or for a data: URI a
    label with its size: megabytes of base64 never go into the page."""

    url: str | None  # None for a data: URI
    label: str
    kind: str  # image, video, audio or file
    size: int | None = None  # bytes, known for a data: URI


@dataclass(frozen=True, slots=True)
class InputField:
    name: str
    text: str  # the value as shown ("" for a file field)
    files: list[FileRef] = field(default_factory=list)


def input_fields(job_input: Mapping[str, Any]) -> list[InputField]:
    """The input's fields but the prompt (shown on its own), by name. File inputs (`*_url` and
    `*_urls` holding URLs or data: URIs) as files; the rest as text, JSON for non-strings."""
    fields: list[InputField] = []
    for name in sorted(job_input):
        if name == "prompt":
            continue
        value = job_input[name]
        refs = _file_refs(name, value)
        if refs is not None:
            fields.append(InputField(name, "", refs))
        elif isinstance(value, str):
            fields.append(InputField(name, _data_label(value) if _is_data(value) else value))
        else:
            fields.append(InputField(name, json.dumps(elide_data(value), ensure_ascii=False)))
    return fields


def elide_data(value: Any) -> Any:
    """`value` with every data: URI in it replaced by a short label, for showing JSON."""
    if isinstance(value, str):
        return _data_label(value) if _is_data(value) else value
    if isinstance(value, Mapping):
        return {key: elide_data(item) for key, item in value.items()}
    if isinstance(value, list):
        return [elide_data(item) for item in value]
    return value


def _file_refs(name: str, value: Any) -> list[FileRef] | None:
    if name.endswith("_url") and _is_file_ref(value):
        return [_file_ref(value)]
    if (
        name.endswith("_urls")
        and isinstance(value, list)
        and value
        and all(_is_file_ref(item) for item in value)
    ):
        return [_file_ref(item) for item in value]
    return None


def _is_file_ref(value: Any) -> bool:
    return isinstance(value, str) and (
        _is_data(value) or urlsplit(value).scheme in ("http", "https")
    )


def _is_data(value: str) -> bool:
    return value[:5].lower() == "data:"


def _file_ref(value: str) -> FileRef:
    if _is_data(value):
        media_type = _data_media_type(value)
        return FileRef(None, _data_label(value), kind_of(media_type), _data_size(value))
    name = unquote(PurePosixPath(urlsplit(value).path).name) or urlsplit(value).netloc
    return FileRef(value, name, kind_of(None, name))


def _data_media_type(uri: str) -> str | None:
    return uri[5:].split(",", 1)[0].split(";", 1)[0].strip().lower() or None


def _data_size(uri: str) -> int | None:
    """The bytes a data: URI carries, counted without decoding it."""
    header, sep, payload = uri.partition(",")
    if not sep:
        return None
    if header.lower().endswith(";base64"):
        payload = "".join(payload.split())
        return max(0, len(payload) * 3 // 4 - payload[-2:].count("="))
    return len(unquote_to_bytes(payload))


def _data_label(uri: str) -> str:
    size = _data_size(uri)
    media_type = _data_media_type(uri) or "data"
    return f"{media_type} data URI" + ("" if size is None else f", {size_text(size)}")


def file_facts(file: Mapping[str, Any]) -> str:
    """What is known of an output file, for its caption: 1280 x 720 · 5 s · video/mp4 · 2.1 MiB."""
    facts = []
    if file.get("width") and file.get("height"):
        facts.append(f"{file['width']} \N{MULTIPLICATION SIGN} {file['height']}")
    if file.get("duration"):
        facts.append(seconds_text(file["duration"]))
    if file.get("content_type"):
        facts.append(str(file["content_type"]))
    if file.get("file_size"):
        facts.append(size_text(file["file_size"]))
    return " · ".join(facts)


def seconds_text(value: float) -> str:
    """A video's or a sound's length: 4.5 s, 2 min 5 s."""
    if value < 60:
        return f"{value:.1f} s" if value % 1 else f"{value:.0f} s"
    minutes, rest = divmod(round(value), 60)
    return f"{minutes} min {rest} s"


def size_text(size: int) -> str:
    """Bytes for people: 812 B, 12.3 KiB, 4.5 MiB."""
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KiB"
    return f"{size / (1024 * 1024):.1f} MiB"


@dataclass(frozen=True, slots=True)
class Moment:
    at: datetime
    label: str
    kind: str  # the status it marks, for its colour
    since_created: timedelta


def timeline(job: Mapping[str, Any], events: Sequence[asyncpg.Record]) -> list[Moment]:
    """The job's life: stored, then each event in the order it happened."""
    created: datetime = job["created_at"]
    moments = [Moment(created, "created", "queued", timedelta(0))]
    for event in events:
        at: datetime = event["created_at"]
        moments.append(Moment(at, event["type"], event["type"].split(".")[-1], at - created))
    return moments


@dataclass
class Target:
    """Where a job's deliveries go: a registered endpoint, or the job's own callback_url."""

    url: str
    endpoint_id: str | None
    deliveries: list[dict[str, Any]] = field(default_factory=list)


def deliveries_with_attempts(
    rows: Sequence[asyncpg.Record], attempts: Mapping[uuid.UUID, Sequence[asyncpg.Record]]
) -> list[dict[str, Any]]:
    return [delivery_view(row, attempts.get(row["id"], [])) for row in rows]


def by_target(deliveries: Sequence[dict[str, Any]]) -> list[Target]:
    """Deliveries grouped per target, each group's in the order the events happened."""
    targets: dict[tuple[str | None, str], Target] = {}
    for delivery in sorted(deliveries, key=lambda d: (d["created_at"], d["id"])):
        key = (delivery["endpoint_id"], delivery["url"])
        target = targets.setdefault(key, Target(delivery["url"], delivery["endpoint_id"]))
        target.deliveries.append(delivery)
    return list(targets.values())


def settling(
    deliveries: Sequence[dict[str, Any]], now: datetime, job: Mapping[str, Any] | None = None
) -> bool:
    """Whether something shown is about to change: a job still at work, or a delivery due
    within moments (a retry just asked for, the schedule's first quick attempts)."""
    if job is not None and not JobStatus(job["status"]).is_terminal:
        return True
    return any(
        d["status"] == "pending"
        and (d["next_attempt_at"] is None or d["next_attempt_at"] <= now + SOON)
        for d in deliveries
    )


_MONTH = re.compile(r"(\d{4})-(\d{2})")


def parse_month(text: str | None) -> datetime | None:
    """`YYYY-MM` as the start of that UTC month; None for anything else (the page then shows
    the current month rather than an error)."""
    match = _MONTH.fullmatch(text or "")
    if match is None or not (1 <= int(match[2]) <= 12 and 1970 <= int(match[1]) <= 9998):
        return None
    return datetime(int(match[1]), int(match[2]), 1, tzinfo=UTC)


def month_days(first: date) -> list[date]:
    """Every day of the month that starts on `first`."""
    count = calendar.monthrange(first.year, first.month)[1]
    return [first.replace(day=day) for day in range(1, count + 1)]
