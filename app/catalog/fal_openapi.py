"""A catalog entry from the OpenAPI document fal publishes for each model endpoint.

fal serves one per model (`https://fal.ai/api/openapi/queue/openapi.json?endpoint_id=<id>`):
`info["x-fal-metadata"]` names the endpoint and its category, `POST /{id}` takes the input
schema as its request body, `GET /{id}/requests/{request_id}` answers the output schema, and
`components.schemas` holds every schema they reference. The entry keeps those two schemas with
exactly the components they reach, as `$defs`. fal's document carries no price, so the caller
supplies the price rule.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app.catalog.spec import EntryInvalid, check_model_id

COMPONENTS = "#/components/schemas/"


@dataclass(frozen=True, slots=True)
class Understood:
    """What an import made of a document: the entry, and what to tell the operator."""

    document: dict[str, Any]
    input_fields: list[str]
    required_fields: list[str]
    file_inputs: list[str]
    output_fields: list[str]


def entry_from_openapi(
    openapi: Any, *, price: Mapping[str, Any], typical_seconds: float | None = None
) -> dict[str, Any]:
    """The catalog document for the model `openapi` describes."""
    if not isinstance(openapi, Mapping) or "paths" not in openapi:
        raise EntryInvalid("not an OpenAPI document: it has no paths")
    info = openapi.get("info") or {}
    metadata = info.get("x-fal-metadata") or {}
    model_id = check_model_id(metadata.get("endpointId") or _id_from_paths(openapi["paths"]))
    components = (openapi.get("components") or {}).get("schemas") or {}
    operation = (openapi["paths"].get(f"/{model_id}") or {}).get("post") or {}
    input_ref = _schema_ref(operation.get("requestBody"), f"POST /{model_id}")
    result = (openapi["paths"].get(f"/{model_id}/requests/{{request_id}}") or {}).get("get") or {}
    output_ref = _schema_ref(
        (result.get("responses") or {}).get("200"), f"GET /{model_id}/requests/{{request_id}}"
    )
    sources = [
        url
        for url in (metadata.get("documentationUrl"), metadata.get("playgroundUrl"))
        if isinstance(url, str)
    ]
    document: dict[str, Any] = {
        "id": model_id,
        "title": _title(info, model_id),
        "description": _description(components.get(_name(input_ref)), info),
        "category": metadata.get("category") if isinstance(metadata.get("category"), str) else "",
        "source": sources,
        "price": dict(price),
        "input_schema": _bundle(components, input_ref),
        "output_schema": _bundle(components, output_ref),
    }
    if typical_seconds is not None:
        document["typical_seconds"] = typical_seconds
    return document


def understood(document: dict[str, Any], file_inputs: list[str]) -> Understood:
    schema = document["input_schema"]
    return Understood(
        document=document,
        input_fields=list(schema.get("properties") or {}),
        required_fields=list(schema.get("required") or []),
        file_inputs=file_inputs,
        output_fields=list(document["output_schema"].get("properties") or {}),
    )


def _id_from_paths(paths: Mapping[str, Any]) -> str | None:
    # The one path with a POST is the submit: `/{model id}`.
    posts = [path for path, item in paths.items() if isinstance(item, Mapping) and "post" in item]
    return posts[0].lstrip("/") if len(posts) == 1 else None


def _schema_ref(holder: Any, where: str) -> str:
    content = (holder or {}).get("content") or {}
    schema = (content.get("application/json") or {}).get("schema") or {}
    ref = schema.get("$ref")
    if not isinstance(ref, str) or not ref.startswith(COMPONENTS):
        raise EntryInvalid(f"{where} names no schema in components.schemas")
    return ref


def _name(ref: str) -> str:
    return ref.removeprefix(COMPONENTS)


def _bundle(components: Mapping[str, Any], ref: str) -> dict[str, Any]:
    """The referenced schema, standing alone: every component it reaches copied into `$defs`,
    and every reference rewritten to point there."""
    root_name = _name(ref)
    if root_name not in components:
        raise EntryInvalid(f"components.schemas has no {root_name!r}")
    reached: dict[str, Any] = {}
    pending = [root_name]
    while pending:
        name = pending.pop()
        if name in reached:
            continue
        if name not in components:
            raise EntryInvalid(f"a schema refers to {name!r}, which components.schemas lacks")
        reached[name] = components[name]
        pending.extend(_refs(components[name]))
    root = _rewritten(copy.deepcopy(reached.pop(root_name)))
    definitions = {name: _rewritten(copy.deepcopy(schema)) for name, schema in reached.items()}
    if root_name in _refs(components[root_name]) or any(
        root_name in _refs(schema) for schema in reached.values()
    ):
        definitions[root_name] = copy.deepcopy(root)  # a recursive schema refers to itself
    if definitions:
        root["$defs"] = dict(sorted(definitions.items()))
    return dict(root)


def _refs(schema: Any) -> list[str]:
    found: list[str] = []
    if isinstance(schema, Mapping):
        for key, value in schema.items():
            if key == "$ref" and isinstance(value, str) and value.startswith(COMPONENTS):
                found.append(_name(value))
            else:
                found.extend(_refs(value))
    elif isinstance(schema, list):
        for item in schema:
            found.extend(_refs(item))
    return found


def _rewritten(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {
            key: (
                "#/$defs/" + _name(value)
                if key == "$ref" and isinstance(value, str) and value.startswith(COMPONENTS)
                else _rewritten(value)
            )
            for key, value in schema.items()
        }
    if isinstance(schema, list):
        return [_rewritten(item) for item in schema]
    return schema


def _title(info: Mapping[str, Any], model_id: str) -> str:
    title = info.get("title")
    if isinstance(title, str) and title and not title.startswith("Queue OpenAPI for"):
        return title
    return model_id


def _description(input_schema: Any, info: Mapping[str, Any]) -> str:
    for holder in (input_schema, info):
        text = holder.get("description") if isinstance(holder, Mapping) else None
        if isinstance(text, str) and text and not text.startswith("The OpenAPI schema for"):
            return text
    return ""
