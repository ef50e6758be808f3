"""The intake baseline: a job-intake endpoint as a team writes it in an afternoon.

FastAPI, a pydantic model that validates the same body falrelay takes (the same model input
rules), an asyncpg pool with its defaults, one INSERT per request. No auth, no idempotency, no
outbox, no metrics. Served with `uvicorn bench.baselines.intake_app:app` and uvicorn's defaults
(which include an access log line per request, as falrelay writes one).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, Literal

import asyncpg
from fastapi import FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field

DSN_VARIABLE = "BENCH_BASELINE_DSN"

SCHEMA = """
CREATE TABLE IF NOT EXISTS baseline_jobs (
    id uuid PRIMARY KEY,
    model text NOT NULL,
    status text NOT NULL DEFAULT 'queued',
    input jsonb NOT NULL,
    metadata jsonb NOT NULL,
    callback_url text,
    created_at timestamptz NOT NULL DEFAULT now()
)
"""

INSERT = """
INSERT INTO baseline_jobs (id, model, input, metadata, callback_url)
VALUES ($1, $2, $3::jsonb, $4::jsonb, $5)
RETURNING id, model, status, created_at
"""


class JobInput(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    prompt: str = Field(min_length=1, max_length=4000)
    aspect_ratio: Literal[
        "1:1",
        "16:9",
        "9:16",
        "4:3",
        "3:4",
        "3:1",
        "1:3",
        "3:2",
        "2:3",
        "21:9",
        "4:5",
        "5:4",
        "4:1",
        "1:4",
    ] = "1:1"
    resolution: Literal["1K", "2K"] = "2K"
    seed: int | None = Field(default=None, ge=-1, le=2**53 - 1)
    reasoning: Literal["low", "high"] = "low"


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    model: str = "imagineart/imagineart-2.0-preview/text-to-image"
    input: JobInput
    callback_url: str | None = Field(default=None, max_length=2048)
    metadata: dict[str, str] = Field(default_factory=dict, max_length=50)


class JobOut(BaseModel):
    id: uuid.UUID
    model: str
    status: str
    input: dict[str, Any]
    metadata: dict[str, str]
    created_at: datetime


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # asyncpg's defaults (10 connections, reset on release); smoke runs make it smaller.
    size = int(os.environ.get("BENCH_BASELINE_POOL_MAX", "10"))
    app.state.pool = await asyncpg.create_pool(
        os.environ[DSN_VARIABLE], min_size=size, max_size=size
    )
    yield
    await app.state.pool.close()


app = FastAPI(lifespan=lifespan)


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/v1/jobs", status_code=201)
async def create_job(job: JobCreate, request: Request) -> JobOut:
    model_input = job.input.model_dump()
    row = await request.app.state.pool.fetchrow(
        INSERT,
        uuid.uuid4(),
        job.model,
        json.dumps(model_input),
        json.dumps(job.metadata),
        job.callback_url,
    )
    return JobOut(
        id=row["id"],
        model=row["model"],
        status=row["status"],
        input=model_input,
        metadata=job.metadata,
        created_at=row["created_at"],
    )
