"""The SDK's models against the committed `openapi.json`: a field added, removed or made
optional on either side fails here, before a client team finds out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, get_args

import pytest
from pydantic import BaseModel

from falrelay import models
from falrelay.errors import Problem, ValidationIssue

ROOT = Path(__file__).parents[2]
OPENAPI = json.loads((ROOT / "openapi.json").read_text())
# The shipped catalog entries: each model's schemas as fal publishes them.
ENTRIES = [json.loads(path.read_text()) for path in (ROOT / "app/catalog/entries").glob("*.json")]
# fal's file components; `file_data` (the bytes, inline) never reaches a job's files.
FILE_COMPONENTS = {"Image", "Video", "Audio", "File"}
SCHEMAS: dict[str, Any] = OPENAPI["components"]["schemas"]
# Fields the SDK adds from the transport, not the body: the webhook-id or the stream's id.
TRANSPORT_FIELDS = {"id"}

PAIRS: list[tuple[type[BaseModel], str]] = [
    (models.Job, "JobRead"),
    (models.JobError, "JobError"),
    (models.JobEvent, "JobEvent"),
    (models.PingEvent, "PingEvent"),
    (models.WebhookEndpoint, "EndpointRead"),
    (models.WebhookEndpointWithSecret, "EndpointCreated"),
    (models.Delivery, "DeliveryRead"),
    (models.Attempt, "AttemptRead"),
    (models.Model, "ModelRead"),
    (models.ModelPrice, "ModelPrice"),
    (models.Usage, "UsageRead"),
    (models.UsageGroup, "UsageGroupRead"),
    (models.Page[models.Job], "JobPage"),
    (models.Page[models.WebhookEndpoint], "EndpointPage"),
    (models.Page[models.Delivery], "DeliveryPage"),
    (Problem, "Problem"),
    (ValidationIssue, "ValidationIssue"),
]


def fields_of(model: type[BaseModel], schema: dict[str, Any]) -> tuple[dict[str, bool], ...]:
    ours = {info.alias or name: info.is_required() for name, info in model.model_fields.items()}
    theirs = {name: name in schema.get("required", []) for name in schema["properties"]}
    if schema.get("title", "").endswith("Event"):
        ours = {k: v for k, v in ours.items() if k not in TRANSPORT_FIELDS}
    return ours, theirs


@pytest.mark.parametrize(("model", "component"), PAIRS, ids=[c for _, c in PAIRS])
def test_fields_and_their_requiredness_match_the_schema(
    model: type[BaseModel], component: str
) -> None:
    ours, theirs = fields_of(model, SCHEMAS[component])
    if model is Problem:
        # The SDK fills `type` in ("about:blank") for answers from proxies that send none.
        theirs["type"] = False
    assert ours == theirs


def test_the_file_and_the_image_read_every_field_of_fals_file_components() -> None:
    seen = set()
    for entry in ENTRIES:
        for component in entry["output_schema"].get("$defs", {}).values():
            if component.get("title") not in FILE_COMPONENTS:
                continue
            seen.add(component["title"])
            fields = set(component["properties"]) - {"file_data"}
            assert fields <= set(models.File.model_fields), entry["id"]
            if component["title"] == "Image":
                assert fields <= set(models.Image.model_fields), entry["id"]
            assert "url" in component["required"]
    assert {"Image", "File"} <= seen


def test_the_file_matches_the_jobs_file_schema() -> None:
    item = SCHEMAS["JobRead"]["properties"]["files"]["items"]
    ours, theirs = fields_of(models.File, SCHEMAS[item["$ref"].rsplit("/", 1)[-1]])
    assert ours == theirs


def test_enumerations_match_the_schema() -> None:
    properties = SCHEMAS["DeliveryRead"]["properties"]
    assert [s.value for s in models.JobStatus] == SCHEMAS["JobStatus"]["enum"]
    assert list(get_args(models.DeliveryStatus)) == SCHEMAS["DeliveryStatus"]["enum"]
    assert list(get_args(models.EventType)) == properties["event_type"]["enum"]
    job_event_types = SCHEMAS["JobEvent"]["properties"]["type"]["enum"]
    assert list(get_args(models.JobEventType)) == job_event_types


def test_the_sdk_imports_nothing_of_the_server() -> None:
    code = (
        "import sys, falrelay, falrelay.webhooks; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('app', 'fastapi')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    assert result.stdout.strip() == "[]"
