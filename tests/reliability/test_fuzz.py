"""Fuzzing the API from its own `openapi.json` with schemathesis, with a valid key.

Every operation gets generated requests, valid and invalid, against a live server: once with
made-up ids in its path, once with ids of resources the key's client owns (so the handlers, not
just the 404s, meet the generated bodies and queries). Every answer must be a non-5xx that the
document describes: its status code, content type, headers and body schema (problem+json for
errors).

Not checked: `positive_data_acceptance`. Cursors and resource ids are opaque strings: any string
matches their schema, and only the ones this API issued are accepted (a 422 for a cursor, a
404 for an id), which is the contract, not a defect.

FALRELAY_FUZZ_EXAMPLES sets the examples per operation and mode (default 25, about 10 s here);
raise it for a longer run by hand.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given
from schemathesis import GenerationMode
from schemathesis.checks import load_all_checks
from schemathesis.core.failures import FailureGroup

from app.auth import service as auth_service
from app.db.pool import create_pool
from app.main import create_app
from app.settings import Settings
from tests.servers import LiveServer

EXAMPLES = int(os.environ.get("FALRELAY_FUZZ_EXAMPLES", "25"))
# A real, harmless Prefer: a generated `wait=N` would hold each request for N seconds.
FIXED_HEADERS = {"Prefer": "return=representation"}
# With real ids, the job's event stream stays open until the job ends (never, here).
STREAMS = {"job_events"}


@pytest.fixture
def live_api(fresh_database_url: str) -> Iterator[str]:
    # Nothing may leave this machine, whatever the fuzzer sends: fal and its keys are a closed
    # loopback port, the worker is off, and URLs are stored unresolved (no DNS lookup).
    settings = Settings(
        database_url=fresh_database_url,
        fal_queue_url="http://127.0.0.1:9",
        fal_jwks_url="http://127.0.0.1:9/.well-known/jwks.json",
        fal_key="fuzz-fal-key",
        allow_private_webhook_urls=True,
    )
    with LiveServer(create_app(settings)) as server:
        yield server.url


async def test_every_answer_is_documented_and_none_is_a_server_error(
    live_api: str, fresh_database_url: str
) -> None:
    pool = await create_pool(fresh_database_url, min_size=1, max_size=1)
    try:
        _, key = await auth_service.create_client(pool, "fuzz")
    finally:
        await pool.close()
    failures = await asyncio.to_thread(_fuzz, live_api, key)
    assert not failures, "\n\n".join(failures)


def _fuzz(base_url: str, key: str) -> list[str]:
    load_all_checks()
    checks = [
        schemathesis.checks.not_a_server_error,
        schemathesis.checks.status_code_conformance,
        schemathesis.checks.content_type_conformance,
        schemathesis.checks.response_headers_conformance,
        schemathesis.checks.response_schema_conformance,
    ]
    auth = {"Authorization": f"Bearer {key}"}
    session = requests.Session()
    session.trust_env = False  # no proxy from the environment: loopback only
    owned = _owned_resources(session, base_url, auth)
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", timeout=10)
    failures: list[str] = []
    calls: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        label = operation.label
        params = {p.name for p in operation.path_parameters}
        variants: list[dict[str, Any]] = [{}]
        real = {name: owned[name] for name in params if name in owned}
        if (
            params
            and set(real) == params
            and operation.definition.raw.get("operationId") not in STREAMS
        ):
            variants.append(real)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            for path_parameters in variants:
                strategy = operation.as_strategy(
                    generation_mode=mode,
                    path_parameters=path_parameters or None,
                    headers=FIXED_HEADERS if "Prefer" in _header_names(operation) else None,
                )

                @given(case=strategy)
                @hypothesis.settings(
                    max_examples=EXAMPLES,
                    deadline=None,
                    database=None,
                    derandomize=True,
                    suppress_health_check=list(HealthCheck),
                    phases=[hypothesis.Phase.generate],
                )
                def run(case: schemathesis.Case) -> None:
                    calls.append(case.operation.label)
                    response = case.call(
                        base_url=base_url, session=session, headers=auth, timeout=10
                    )
                    case.validate_response(response, checks=checks)

                try:
                    run()
                except hypothesis.errors.Unsatisfiable:
                    # Nothing in this operation can be made invalid (no parameters, or only
                    # path parameters, which every string satisfies).
                    assert mode is GenerationMode.NEGATIVE, label
                except (Exception, FailureGroup) as exc:  # every operation is reported
                    where = "owned ids" if path_parameters else "made-up ids"
                    failures.append(f"{label} ({mode.value}, {where}):\n{exc}")
    assert len(calls) > 100, calls
    return failures


def _header_names(operation: Any) -> set[str]:
    return {p.name for p in operation.headers}


def _owned_resources(
    session: requests.Session, base_url: str, auth: dict[str, str]
) -> dict[str, str]:
    """A job, an endpoint and a delivery of the fuzzing client, for path parameters."""
    job = session.post(
        f"{base_url}/v1/jobs", json={"input": {"prompt": "fuzz"}}, headers=auth, timeout=10
    )
    endpoint = session.post(
        f"{base_url}/v1/webhook-endpoints",
        json={"url": "http://127.0.0.1:9/hook"},
        headers=auth,
        timeout=10,
    )
    assert job.status_code == 201, job.text
    assert endpoint.status_code == 201, endpoint.text
    endpoint_id = endpoint.json()["id"]
    ping = session.post(
        f"{base_url}/v1/webhook-endpoints/{endpoint_id}/test", headers=auth, timeout=10
    )
    assert ping.status_code == 202, ping.text
    return {
        "job_id": job.json()["id"],
        "endpoint_id": endpoint_id,
        "delivery_id": ping.json()["id"],
    }
