from __future__ import annotations

import asyncio
import json
import typing

import pytest

from app.catalog import DEFAULT_MODEL_ID, shipped_models
from app.db.pool import Pool
from app.jobs.schemas import JobRead
from app.settings import Settings
from tests.support import Tenant, assert_problem, count_jobs, job_uuid

ASPECT_RATIOS = shipped_models()[DEFAULT_MODEL_ID].input_schema["properties"]["aspect_ratio"][
    "enum"
]
# The body bound of job creation, which carries file inputs as data URIs.
JOB_BODY_BOUND = Settings().max_job_body_bytes
MAX_SEED = 2**53 - 1


async def test_create_stores_the_job_with_defaults_and_answers_201(
    tenant: Tenant, pool: Pool
) -> None:
    response = await tenant.http.post(
        "/v1/jobs",
        json={"input": {"prompt": "a red fox in snow"}, "metadata": {"order_id": "A-1001"}},
    )

    assert response.status_code == 201
    job = response.json()
    JobRead.model_validate(job)
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] == "queued"
    assert job["model"] == DEFAULT_MODEL_ID
    assert job["input"] == {
        "prompt": "a red fox in snow",
        "aspect_ratio": "1:1",
        "resolution": "2K",
        "reasoning": "low",
    }
    assert job["metadata"] == {"order_id": "A-1001"}
    assert job["created_at"].endswith("Z")

    row = await pool.fetchrow(
        "SELECT client_id, status, input, metadata, attempts, next_attempt_at, locked_until "
        "FROM jobs WHERE id = $1",
        job_uuid(job["id"]),
    )
    assert row is not None
    assert row["client_id"] == tenant.client_id
    assert row["status"] == "queued"
    assert row["input"] == job["input"]
    assert row["metadata"] == {"order_id": "A-1001"}
    # Due for the submission worker at once, unclaimed.
    assert row["attempts"] == 0
    assert row["next_attempt_at"] is not None
    assert row["locked_until"] is None


async def test_create_keeps_every_given_field(tenant: Tenant) -> None:
    body = {
        "model": DEFAULT_MODEL_ID,
        "input": {
            "prompt": "a lighthouse",
            "aspect_ratio": "21:9",
            "resolution": "1K",
            "seed": 42,
            "reasoning": "high",
        },
        "callback_url": "https://client.example/hooks/falrelay?x=1",
        "metadata": {},
    }
    response = await tenant.http.post("/v1/jobs", json=body)
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["input"] == body["input"]
    assert job["callback_url"] == body["callback_url"]


@pytest.mark.parametrize("aspect_ratio", ASPECT_RATIOS)
async def test_every_aspect_ratio_is_accepted(tenant: Tenant, aspect_ratio: str) -> None:
    response = await tenant.http.post(
        "/v1/jobs", json={"input": {"prompt": "p", "aspect_ratio": aspect_ratio}}
    )
    assert response.status_code == 201, response.text
    assert response.json()["input"]["aspect_ratio"] == aspect_ratio


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("resolution", "1K"),
        ("resolution", "2K"),
        ("reasoning", "low"),
        ("reasoning", "high"),
        ("seed", 0),
        ("seed", -1),
        ("seed", MAX_SEED),
    ],
)
async def test_every_enum_value_and_seed_bound_is_accepted(
    tenant: Tenant, field: str, value: object
) -> None:
    response = await tenant.http.post("/v1/jobs", json={"input": {"prompt": "p", field: value}})
    assert response.status_code == 201, response.text
    assert response.json()["input"][field] == value


INVALID_BODIES = {
    "missing input": {},
    "input not an object": {"input": "a red fox"},
    "missing prompt": {"input": {}},
    "prompt not a string": {"input": {"prompt": 42}},
    "unknown aspect ratio": {"input": {"prompt": "p", "aspect_ratio": "16:10"}},
    "aspect ratio wrong case": {"input": {"prompt": "p", "aspect_ratio": "1:1 "}},
    "unknown resolution": {"input": {"prompt": "p", "resolution": "4K"}},
    "lower-case resolution": {"input": {"prompt": "p", "resolution": "1k"}},
    "unknown reasoning": {"input": {"prompt": "p", "reasoning": "medium"}},
    "seed as string": {"input": {"prompt": "p", "seed": "42"}},
    "seed as float": {"input": {"prompt": "p", "seed": 4.2}},
    "seed as bool": {"input": {"prompt": "p", "seed": True}},
    "unknown input field": {"input": {"prompt": "p", "num_images": 2}},
    "unknown top-level field": {"input": {"prompt": "p"}, "queue": "high"},
    "unknown priority": {"input": {"prompt": "p"}, "priority": "urgent"},
    "start_timeout of 1 s": {"input": {"prompt": "p"}, "start_timeout": 1},
    "start_timeout beyond a day": {"input": {"prompt": "p"}, "start_timeout": 86_401},
    "unknown model": {"model": "fal-ai/not-in-the-catalog", "input": {"prompt": "p"}},
    "model not a fal id": {"model": "storage/auth/token", "input": {"prompt": "p"}},
    "model not a string": {"model": 1, "input": {"prompt": "p"}},
    "callback not a URL": {"input": {"prompt": "p"}, "callback_url": "not a url"},
    "callback relative": {"input": {"prompt": "p"}, "callback_url": "/hooks"},
    "callback ftp": {"input": {"prompt": "p"}, "callback_url": "ftp://client.example/x"},
    "callback with credentials": {
        "input": {"prompt": "p"},
        "callback_url": "https://user:pw@client.example/x",
    },
    "callback too long": {
        "input": {"prompt": "p"},
        "callback_url": "https://client.example/" + "a" * 2100,
    },
    "metadata not an object": {"input": {"prompt": "p"}, "metadata": ["a"]},
    "metadata value not a string": {"input": {"prompt": "p"}, "metadata": {"n": 1}},
    "metadata key too long": {"input": {"prompt": "p"}, "metadata": {"k" * 41: "v"}},
    "metadata empty key": {"input": {"prompt": "p"}, "metadata": {"": "v"}},
    "metadata value too long": {"input": {"prompt": "p"}, "metadata": {"k": "v" * 501}},
    "metadata too many keys": {
        "input": {"prompt": "p"},
        "metadata": {f"k{i}": "v" for i in range(51)},
    },
    "body is a list": [{"input": {"prompt": "p"}}],
}


@pytest.mark.parametrize("body", INVALID_BODIES.values(), ids=INVALID_BODIES.keys())
async def test_invalid_body_is_a_422_problem_and_creates_nothing(
    tenant: Tenant, pool: Pool, body: object
) -> None:
    response = await tenant.http.post("/v1/jobs", json=body)

    problem = assert_problem(response, 422, "validation")
    assert problem["errors"], problem
    for issue in problem["errors"]:
        assert issue["loc"][0] == "body"
        assert issue["msg"]
    assert await count_jobs(pool, tenant.client_id) == 0


async def test_validation_errors_point_at_the_field(tenant: Tenant) -> None:
    response = await tenant.http.post(
        "/v1/jobs", json={"input": {"prompt": "p", "aspect_ratio": "7:5", "seed": "x"}}
    )
    problem = assert_problem(response, 422, "validation")
    locs = sorted(tuple(issue["loc"]) for issue in problem["errors"])
    assert locs == [("body", "input", "aspect_ratio"), ("body", "input", "seed")]


@pytest.mark.parametrize(
    "raw",
    [b'{"input": {"prompt": "p"}', b"not json", b'{"input": {"prompt": "p"}}}', b"\xff\xfe"],
    ids=["truncated", "not json", "trailing brace", "not utf-8"],
)
async def test_malformed_json_is_a_400_problem_and_creates_nothing(
    tenant: Tenant, pool: Pool, raw: bytes
) -> None:
    response = await tenant.http.post(
        "/v1/jobs", content=raw, headers={"Content-Type": "application/json"}
    )
    assert_problem(response, 400, "malformed-json")
    assert await count_jobs(pool, tenant.client_id) == 0


async def test_oversized_body_is_a_413_problem_and_creates_nothing(
    tenant: Tenant, pool: Pool
) -> None:
    body = json.dumps({"input": {"prompt": "p" * JOB_BODY_BOUND}}).encode()
    response = await tenant.http.post(
        "/v1/jobs", content=body, headers={"Content-Type": "application/json"}
    )
    assert_problem(response, 413, "payload-too-large")
    assert await count_jobs(pool, tenant.client_id) == 0


async def test_oversized_streamed_body_without_length_is_refused(
    tenant: Tenant, pool: Pool
) -> None:
    async def chunks() -> typing.AsyncIterator[bytes]:
        yield b'{"input": {"prompt": "'
        for _ in range(JOB_BODY_BOUND // 65536 + 1):
            yield b"x" * 65536
        yield b'"}}'

    response = await tenant.http.post(
        "/v1/jobs", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert_problem(response, 413, "payload-too-large")
    assert await count_jobs(pool, tenant.client_id) == 0


async def test_body_just_under_the_bound_is_accepted(tenant: Tenant) -> None:
    prompt = "x" * 4000
    metadata = {f"k{i}": "v" * 500 for i in range(50)}  # about 26 KB
    response = await tenant.http.post(
        "/v1/jobs", json={"input": {"prompt": prompt}, "metadata": metadata}
    )
    assert response.status_code == 201, response.text


# -- Prefer: wait=N: only a plain number of seconds is a wait, and never one past 60 s --------


@pytest.mark.parametrize(
    ("prefer", "seconds"),
    [
        ("wait=5", 5.0),
        ("wait=0", 0.0),
        ('wait="2.5"', 2.5),
        ("respond-async, wait=100", 60.0),
        ("wait=99999999999", 60.0),
        ("wait=nan", None),
        ("wait=NaN", None),
        ("wait=inf", None),
        ("wait=-inf", None),
        ("wait=1e999", None),
        ("wait=1e1", None),
        ("wait=-1", None),
        ("wait=1_0", None),
        ("wait=0x10", None),
        ("wait=", None),
        ('wait="', None),
        ("wait=soon", None),
        ("handling=lenient", None),
        (None, None),
    ],
)
def test_the_wait_preference_is_a_number_of_seconds_up_to_60(
    prefer: str | None, seconds: float | None
) -> None:
    from app.jobs.service import wait_seconds

    assert wait_seconds(prefer) == seconds


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "1e999", "garbage"])
async def test_an_unreadable_wait_answers_at_once(tenant: Tenant, pool: Pool, value: str) -> None:
    # No worker runs here: the job stays queued, so only the wait's own bound ends it. A NaN
    # deadline is never reached, so the bound is the test's (10 s), not the service's.
    response = await asyncio.wait_for(
        tenant.http.post(
            "/v1/jobs", json={"input": {"prompt": "p"}}, headers={"Prefer": f"wait={value}"}
        ),
        timeout=10,
    )
    assert response.status_code == 201, response.text
    assert "preference-applied" not in response.headers
    assert response.json()["status"] == "queued"
    status = await pool.fetchval(
        "SELECT status FROM jobs WHERE id = $1", job_uuid(response.json()["id"])
    )
    assert status == "queued"
