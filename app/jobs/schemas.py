from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import asyncpg
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from app import ids
from app.catalog import CATALOG, DEFAULT_MODEL_ID
from app.catalog.files import output_files
from app.catalog.spec import MAX_MODEL_ID_LENGTH
from app.db.pool import json_timestamp_sql
from app.ids import JOB_ID_PREFIX
from app.jobs.models import PRIORITY_NAMES, JobStatus
from app.outputs import links
from app.webhooks.schemas import WebhookURL

MAX_METADATA_KEYS = 50
# fal's official clients refuse a start timeout of 1 s or less; a day is far beyond any queue
# wait worth waiting for.
MAX_START_TIMEOUT_SECONDS = 86_400.0

Priority = Annotated[
    Literal["high", "normal", "low"],
    Field(
        description="Orders this client's own jobs for submission: high, then normal, then low. "
        "`low` is also sent to fal as `X-Fal-Queue-Priority: low`: fal starts it only when "
        "none of the account's normal requests waits."
    ),
]
StartTimeout = Annotated[
    float,
    Field(
        gt=1.0,
        le=MAX_START_TIMEOUT_SECONDS,
        description="Seconds fal has to start the job once it is submitted (fal's queue wait "
        "included), sent as `X-Fal-Request-Timeout`. Missed: the job fails with error type "
        "`request_timeout`, and is not retried.",
    ),
]


# Whether the catalog holds the model is checked by the service, against this process's
# catalog (which imports can grow at run time), not by the schema.
ModelId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_MODEL_ID_LENGTH),
    Field(description="A fal model id from GET /v1/models.", examples=[DEFAULT_MODEL_ID]),
]
MetadataKey = Annotated[str, StringConstraints(min_length=1, max_length=40)]
MetadataValue = Annotated[str, StringConstraints(max_length=500)]
Metadata = Annotated[
    dict[MetadataKey, MetadataValue],
    Field(
        max_length=MAX_METADATA_KEYS,
        description="Up to 50 string pairs (keys ≤ 40 characters, values ≤ 500), "
        "returned wherever the job appears.",
    ),
]
IdempotencyKey = Annotated[
    str, StringConstraints(min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$")
]


class JobCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {
                    "model": DEFAULT_MODEL_ID,
                    "input": {"prompt": "a red fox in snow", "aspect_ratio": "16:9"},
                    "callback_url": "https://client.example/hooks/falrelay",
                    "metadata": {"order_id": "A-1001"},
                }
            ]
        },
    )

    model: ModelId = DEFAULT_MODEL_ID
    input: dict[str, Any] = Field(
        description="The model's input; its JSON schema is in GET /v1/models."
    )
    callback_url: WebhookURL | None = Field(
        default=None, description="A per-job webhook, signed with the client's default secret."
    )
    metadata: Metadata = Field(default_factory=dict)
    priority: Priority = "normal"
    start_timeout: StartTimeout | None = None


FileKind = Literal["image", "video", "audio", "file"]


class JobFile(BaseModel):
    """A file of the job's output, wherever the model's output puts it."""

    url: str = Field(
        description="Where to download it: our copy (a signed URL that expires) when outputs "
        "are mirrored, else fal's."
    )
    content_type: str | None
    kind: FileKind
    width: int | None = None
    height: int | None = None
    duration: float | None = Field(default=None, description="Seconds, for video and audio.")
    file_name: str | None = None
    file_size: int | None = None
    source_url: str | None = Field(
        default=None, description="fal's URL for the file, when outputs are mirrored."
    )
    sha256: str | None = Field(default=None, description="Of our copy's bytes, in hex.")
    thumbnail_url: str | None = Field(
        default=None, description="A small WebP of an image, made when it was copied."
    )
    mirror_error: str | None = Field(
        default=None,
        description="Why our copy is missing (`url` is then fal's); it is tried again later.",
    )


class JobError(BaseModel):
    type: str
    message: str


class JobRead(BaseModel):
    """The job object: the same in answers, listings and webhook payloads."""

    id: str = Field(examples=["job_0193a9d2c4f07a4c9b1e2d3f4a5b6c7d"])
    model: str
    status: JobStatus
    input: dict[str, Any]
    metadata: dict[str, str]
    callback_url: str | None
    output: dict[str, Any] | None = Field(description="The output exactly as fal returned it.")
    files: list[JobFile] = Field(
        default_factory=list,
        description="Every file in `output` (images, video, audio, other files), found "
        "through the model's output schema; empty until the job has succeeded.",
    )
    error: JobError | None
    fal_request_id: str | None
    # Defaults, not required: events stored before these fields existed are sent without them.
    priority: Literal["high", "normal", "low"] = "normal"
    start_timeout: float | None = None
    created_at: datetime
    submitted_at: datetime | None
    started_at: datetime | None
    completed_at: datetime | None


class JobPage(BaseModel):
    data: list[JobRead]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next (older) page; null on the last page."
    )


def job_id(value: uuid.UUID) -> str:
    return ids.encode(JOB_ID_PREFIX, value)


def job_view(row: asyncpg.Record) -> dict[str, Any]:
    """A job row (selected with `repository.JOB_COLUMNS`) in the shape of `JobRead`.

    Built by hand rather than through `JobRead` because it is on every hot path; a contract
    test validates its output against `JobRead`.
    """
    return {
        "id": job_id(row["id"]),
        "model": row["model"],
        "status": row["status"],
        "input": row["input"],
        "metadata": row["metadata"],
        "callback_url": row["callback_url"],
        "output": row["output"] if row["status"] == JobStatus.SUCCEEDED else None,
        "files": _files(row) if row["status"] == JobStatus.SUCCEEDED else [],
        "error": row["error"],
        "fal_request_id": row["fal_request_id"],
        "priority": PRIORITY_NAMES[row["priority"]],
        "start_timeout": row["start_timeout"],
        "created_at": row["created_at"],
        "submitted_at": row["submitted_at"],
        "started_at": row["started_at"],
        "completed_at": row["completed_at"],
    }


def _optional_timestamp_sql(value: str) -> str:
    text = json_timestamp_sql(value)
    return f"CASE WHEN {value} IS NULL THEN 'null'::jsonb ELSE to_jsonb({text}) END"


# A float as Python writes it: 30.0, not Postgres's 30; otherwise its shortest exact digits.
_FLOAT_SQL = (
    "CASE WHEN {0} IS NULL THEN 'null'::jsonb WHEN {0} = trunc({0}) "
    "THEN to_jsonb(round({0}::numeric, 1)) ELSE to_jsonb({0}::text::numeric) END"
)


def job_view_sql(job: str, files: str | None = None) -> str:
    """`job_view` as an SQL expression (jsonb) over the job row `job`: what lets a transition's
    statement write its own event. For a job that has not succeeded (no output, no files), or
    with `files`, an expression of the succeeded job's files as `job_view` has them (worked out
    from its output by the caller, who knows the model). A contract test holds it to
    `job_view`."""
    output = "NULL" if files is None else f"{job}.output"
    files = "'[]'::jsonb" if files is None else files
    priority = " ".join(f"WHEN {value} THEN '{name}'" for value, name in PRIORITY_NAMES.items())
    return f"""jsonb_build_object(
        'id', '{JOB_ID_PREFIX}_' || replace({job}.id::text, '-', ''),
        'model', {job}.model, 'status', {job}.status, 'input', {job}.input,
        'metadata', {job}.metadata, 'callback_url', {job}.callback_url, 'output', {output},
        'files', {files}, 'error', {job}.error, 'fal_request_id', {job}.fal_request_id,
        'priority', CASE {job}.priority {priority} END,
        'start_timeout', {_FLOAT_SQL.format(f"{job}.start_timeout")},
        'created_at', {_optional_timestamp_sql(f"{job}.created_at")},
        'submitted_at', {_optional_timestamp_sql(f"{job}.submitted_at")},
        'started_at', {_optional_timestamp_sql(f"{job}.started_at")},
        'completed_at', {_optional_timestamp_sql(f"{job}.completed_at")}
    )"""


def fal_files(model: str, output: Any) -> list[dict[str, Any]]:
    """The files of a succeeded job's output, at fal's URLs (not copied), as `job_view` has
    them."""
    spec = CATALOG.get(model)
    return output_files(spec.output_schema if spec is not None else None, output)


def _files(row: asyncpg.Record) -> list[dict[str, Any]]:
    output = row["output"]
    if output is None:
        return []
    found = fal_files(row["model"], output)
    copies = row["files"]
    if copies is None:
        return found  # not mirrored: fal's URLs
    for file, copy in zip(found, copies, strict=False):
        file["source_url"] = file["url"]
        if copy.get("key"):
            file["url"] = links.url(copy["key"])
            file["sha256"] = copy.get("sha256")
            file["file_size"] = copy.get("size", file["file_size"])
            thumbnail = copy.get("thumbnail_key")
            file["thumbnail_url"] = links.url(thumbnail) if thumbnail else None
        else:
            file["mirror_error"] = copy.get("error") or "not copied yet"
    return found
