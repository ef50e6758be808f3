from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
from fastapi import FastAPI

from app.catalog import DEFAULT_MODEL_ID, shipped_models
from app.db.migrate import head_revision
from app.main import create_app
from app.settings import Settings
from tests.conftest import PostgresServer
from tests.support import Tenant, assert_problem, http_client

REPO = Path(__file__).resolve().parents[2]


async def test_healthz(anonymous: httpx.AsyncClient) -> None:
    response = await anonymous.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_when_the_schema_is_at_head(anonymous: httpx.AsyncClient) -> None:
    response = await anonymous.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "schema": head_revision()}


async def test_readyz_is_503_on_an_unmigrated_database(postgres: PostgresServer) -> None:
    url = await postgres.create_database("falrelay_unmigrated_readyz")
    try:
        app = create_app(Settings(database_url=url))
        async with app.router.lifespan_context(app), http_client(app) as http:
            response = await http.get("/readyz")
        problem = assert_problem(response, 503, "unavailable")
        assert "falrelay migrate" in problem["detail"]
    finally:
        await postgres.drop_database("falrelay_unmigrated_readyz")


async def test_models_lists_the_input_schema(tenant: Tenant) -> None:
    response = await tenant.http.get("/v1/models")
    assert response.status_code == 200
    models = {model["id"]: model for model in response.json()["data"]}
    assert set(models) == set(shipped_models())
    model = models[DEFAULT_MODEL_ID]
    assert model["price"] == {
        "unit": "image",
        "by_resolution": {"1K": "0.03", "2K": "0.05"},
        "typical_units": "1",
    }
    assert model["source"][0].startswith("https://fal.ai/models/imagineart/")
    schema = model["input_schema"]
    assert schema["required"] == ["prompt"]
    assert len(schema["properties"]["aspect_ratio"]["enum"]) == 14
    assert schema["properties"]["resolution"]["default"] == "2K"
    assert model["output_schema"]["required"] == ["images"]


def test_openapi_json_is_the_committed_document() -> None:
    """`falrelay openapi > openapi.json` after any API change."""
    committed = json.loads((REPO / "openapi.json").read_text())
    assert committed == create_app(Settings()).openapi()


def test_operation_ids_are_the_handler_names(app: FastAPI) -> None:
    document = app.openapi()
    operation_ids = [
        operation["operationId"]
        for path_item in document["paths"].values()
        for operation in path_item.values()
    ]
    assert sorted(operation_ids) == [
        "cancel_job",
        "create_job",
        "create_webhook_endpoint",
        "delete_job",
        "delete_webhook_endpoint",
        "fal_callback",
        "get_delivery",
        "get_job",
        "get_usage",
        "get_webhook_endpoint",
        "get_webhook_secret",
        "healthz",
        "job_events",
        "list_endpoint_deliveries",
        "list_job_deliveries",
        "list_jobs",
        "list_models",
        "list_webhook_endpoints",
        "livez",
        "metrics",
        "readyz",
        "recover_webhook_endpoint",
        "retry_delivery",
        "rotate_default_webhook_secret",
        "rotate_webhook_secret",
        "test_webhook_endpoint",
        "update_webhook_endpoint",
    ]


def test_openapi_documents_errors_as_problems_and_every_model_input(app: FastAPI) -> None:
    document = app.openapi()
    for path_item in document["paths"].values():
        for operation in path_item.values():
            for status, answer in operation["responses"].items():
                if int(status) >= 400:
                    assert list(answer["content"]) == ["application/problem+json"], status
    input_schema = document["components"]["schemas"]["JobCreate"]["properties"]["input"]
    refs = {variant["$ref"].rsplit("/", 1)[1] for variant in input_schema["anyOf"]}
    assert len(refs) == len(shipped_models()) >= 5
    schemas = document["components"]["schemas"]
    for ref in refs:
        # Each model's own definitions came along, under its prefix: no dangling reference.
        for target in re.findall(r'"#/components/schemas/([^"]+)"', json.dumps(schemas[ref])):
            assert target in schemas, (ref, target)


async def test_an_unreachable_database_is_a_503_problem() -> None:
    # Nothing listens on loopback port 1; the pool connects lazily (min size 0).
    settings = Settings(
        database_url="postgresql+asyncpg://postgres@127.0.0.1:1/nothing", db_pool_min_size=0
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app), http_client(app, "frk_any") as http:
        response = await http.get("/v1/jobs")
        ready = await http.get("/readyz")
    problem = assert_problem(response, 503, "unavailable")
    assert response.headers["retry-after"] == "2"
    assert "database" in problem["detail"]
    assert_problem(ready, 503, "unavailable")


async def test_readyz_turns_503_while_draining(app: FastAPI, anonymous: httpx.AsyncClient) -> None:
    from app.main import begin_draining

    begin_draining(app)
    try:
        problem = assert_problem(await anonymous.get("/readyz"), 503, "unavailable")
        assert "shutting down" in problem["detail"]
        assert (await anonymous.get("/healthz")).status_code == 200
    finally:
        app.state.draining = False
    assert (await anonymous.get("/readyz")).status_code == 200


async def test_every_answer_carries_a_request_id(anonymous: httpx.AsyncClient) -> None:
    made = await anonymous.get("/healthz")
    assert len(made.headers["x-request-id"]) == 32
    kept = await anonymous.get("/healthz", headers={"X-Request-ID": "trace-abc.123"})
    assert kept.headers["x-request-id"] == "trace-abc.123"
    replaced = await anonymous.get("/healthz", headers={"X-Request-ID": "bad id;"})
    assert replaced.headers["x-request-id"] != "bad id;"


async def test_a_callback_url_with_a_non_ascii_token_is_refused_not_a_crash(
    anonymous: httpx.AsyncClient,
) -> None:
    # Found by schemathesis: compare_digest raised on non-ASCII str.
    response = await anonymous.post(f"/callbacks/fal/job_{'0' * 32}/%C3%82%C3%BE", content=b"{}")
    assert_problem(response, 401, "invalid-signature")
