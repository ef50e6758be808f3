"""Helpers the tests share (fixtures live in conftest.py)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import FastAPI

from app import ids
from app.db.pool import Pool

PROBLEM_JSON = "application/problem+json"


@dataclass
class Tenant:
    client_id: uuid.UUID
    key: str
    http: httpx.AsyncClient


def http_client(app: FastAPI, key: str | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://falrelay.test", headers=headers
    )


def job_uuid(public_id: str) -> uuid.UUID:
    value = ids.decode("job", public_id)
    assert value is not None, public_id
    return value


async def count_jobs(pool: Pool, client_id: uuid.UUID) -> int:
    value: int = await pool.fetchval("SELECT count(*) FROM jobs WHERE client_id = $1", client_id)
    return value


def assert_problem(response: httpx.Response, status: int, slug: str | None = None) -> Any:
    """The answer is an RFC 9457 problem with this status (and type); returns its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    assert body["status"] == status
    assert body["title"]
    if slug is not None:
        assert body["type"].endswith("/" + slug), body
    return body
