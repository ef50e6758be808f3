"""The OpenAPI document: FastAPI's, with every error answer as problem+json."""

from __future__ import annotations

import copy
import re
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from app.api.problems import PROBLEM_JSON
from app.api.ratelimit import RATE_LIMIT_HEADERS, RATE_LIMITED
from app.catalog import shipped_models
from app.errors import Problem

_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


def build_openapi(app: FastAPI) -> dict[str, Any]:
    document = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
        webhooks=app.webhooks.routes,
        tags=app.openapi_tags,
    )
    schemas: dict[str, Any] = document.setdefault("components", {}).setdefault("schemas", {})
    problem = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(problem.pop("$defs", {}))
    schemas["Problem"] = problem
    # FastAPI documents its own 422 body (HTTPValidationError); ours is a Problem with `errors`.
    for path_item in document.get("webhooks", {}).values():
        for operation in path_item.values():
            # Receivers answer; what falrelay validates is not theirs to document.
            operation.get("responses", {}).pop("422", None)
    for path_item in document.get("paths", {}).values():
        for operation in path_item.values():
            if "requestBody" in operation:
                # Any body can be malformed JSON or too large, whatever the route.
                for status, title in (("400", "Bad request"), ("413", "Payload too large")):
                    operation["responses"].setdefault(
                        status,
                        {"description": title, "content": {PROBLEM_JSON: {"schema": _PROBLEM_REF}}},
                    )
            if any("ApiKey" in requirement for requirement in operation.get("security", [])):
                _document_rate_limit(operation["responses"])
            answer = operation.get("responses", {}).get("422")
            if answer is not None:
                answer["description"] = "Validation failed"
                answer["content"] = {PROBLEM_JSON: {"schema": _PROBLEM_REF}}
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    _document_model_inputs(schemas)
    return document


def _document_rate_limit(responses: dict[str, Any]) -> None:
    """Every authenticated route counts against the client's rate limit (app.api.deps): a 429,
    and the RateLimit fields on its other answers."""
    for status, answer in responses.items():
        if status != "429":
            answer.setdefault("headers", {}).update(copy.deepcopy(RATE_LIMIT_HEADERS))
    responses.setdefault("429", copy.deepcopy(RATE_LIMITED[429]))


def _document_model_inputs(schemas: dict[str, Any]) -> None:
    """`JobCreate.input` is checked against the chosen model's schema at run time (see
    `app.catalog`); document it as one of the shipped models' input schemas, so that generated
    clients and fuzzers know its shape. Models imported at run time are in GET /v1/models."""
    variants = []
    for spec in shipped_models().values():
        prefix = re.sub(r"[^A-Za-z0-9]+", "_", spec.id)
        name = f"{prefix}.Input"
        schema = copy.deepcopy(dict(spec.input_schema))
        definitions = schema.pop("$defs", {})
        for definition, body in definitions.items():
            schemas[f"{prefix}.{definition}"] = _components_refs(body, prefix)
        schema = _components_refs(schema, prefix)
        schema["title"] = f"{spec.title} input"
        schemas[name] = schema
        variants.append({"$ref": f"#/components/schemas/{name}"})
    job_input = schemas["JobCreate"]["properties"]["input"]
    job_input.pop("type", None)
    job_input.pop("additionalProperties", None)
    job_input["anyOf"] = variants


def _components_refs(schema: Any, prefix: str) -> Any:
    """The schema with its `#/$defs/X` references pointing at `#/components/schemas/{prefix}.X`."""
    if isinstance(schema, dict):
        return {
            key: (
                f"#/components/schemas/{prefix}.{value.removeprefix('#/$defs/')}"
                if key == "$ref" and isinstance(value, str) and value.startswith("#/$defs/")
                else _components_refs(value, prefix)
            )
            for key, value in schema.items()
        }
    if isinstance(schema, list):
        return [_components_refs(item, prefix) for item in schema]
    return schema


def install(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
