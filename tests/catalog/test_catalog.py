"""The catalog as data: the shipped entries, input checks, file fields and output files."""

from __future__ import annotations

import copy
import json
import tracemalloc
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from app.catalog import (
    DEFAULT_MODEL_ID,
    EntryInvalid,
    InputInvalid,
    from_document,
    shipped_models,
)
from app.catalog.fal_openapi import entry_from_openapi
from app.catalog.files import output_files

FIXTURES = Path(__file__).parent / "fixtures"
SEEDREAM = FIXTURES / "fal-ai--bytedance--seedream--v4--text-to-image.openapi.json"
KONTEXT = "fal-ai/flux-pro/kontext"
KLING = "fal-ai/kling-video/v2.1/standard/image-to-video"


def test_the_release_ships_five_models_each_naming_fals_page() -> None:
    models = shipped_models()
    assert {DEFAULT_MODEL_ID, "fal-ai/flux/schnell", "fal-ai/flux/dev", KONTEXT, KLING} <= set(
        models
    )
    categories = {spec.category for spec in models.values()}
    assert {"text-to-image", "image-to-image", "image-to-video"} <= categories
    for spec in models.values():
        assert spec.source
        assert all(url.startswith("https://fal.ai/") for url in spec.source)
        assert spec.price.estimate(spec.normalise_input(_minimal(spec.id))) > 0


def _minimal(model_id: str) -> dict[str, Any]:
    if model_id in (KONTEXT, KLING):
        return {"prompt": "p", "image_url": "https://example.com/in.png"}
    return {"prompt": "p"}


def test_defaults_come_from_the_schema_and_the_callers_dict_is_untouched() -> None:
    spec = shipped_models()[DEFAULT_MODEL_ID]
    raw = {"prompt": "a fox"}
    assert spec.normalise_input(raw) == {
        "prompt": "a fox",
        "aspect_ratio": "1:1",
        "resolution": "2K",
        "reasoning": "low",
    }
    assert raw == {"prompt": "a fox"}


def test_every_problem_of_an_input_is_reported_at_its_field_without_echoing_it() -> None:
    spec = shipped_models()["fal-ai/flux/schnell"]
    secret = "s3cr3t-value"
    with pytest.raises(InputInvalid) as caught:
        spec.normalise_input(
            {"num_images": 99, "seed": secret, "output_format": secret, "colour": 1}
        )
    issues = {issue.path: issue for issue in caught.value.issues}
    assert set(issues) == {("prompt",), ("num_images",), ("seed",), ("output_format",), ("colour",)}
    assert issues[("prompt",)].message == "field required"
    assert issues[("num_images",)].message == "must be at most 4"
    assert issues[("seed",)].message == "must be of type integer"
    assert issues[("colour",)].message == "is not a field of this model's input"
    assert all(secret not in issue.message for issue in issues.values())


@pytest.mark.parametrize("value", [True, 1.5, "1"])
def test_an_integer_field_refuses_booleans_fractions_and_strings(value: object) -> None:
    spec = shipped_models()[DEFAULT_MODEL_ID]
    with pytest.raises(InputInvalid) as caught:
        spec.normalise_input({"prompt": "p", "seed": value})
    assert [issue.path for issue in caught.value.issues] == [("seed",)]


def test_file_fields_are_found_by_fals_naming_with_the_media_they_take() -> None:
    kontext = shipped_models()[KONTEXT]
    assert [(f.name, f.accepts, f.many) for f in kontext.file_inputs] == [
        ("image_url", ("image/",), False)
    ]
    assert shipped_models()[DEFAULT_MODEL_ID].file_inputs == ()


def test_output_files_are_found_through_the_schema_wherever_they_sit() -> None:
    flux = shipped_models()["fal-ai/flux/dev"]
    output = {
        "images": [
            {
                "url": "https://cdn/1.jpg",
                "width": 1024,
                "height": 768,
                "content_type": "image/jpeg",
            },
            {"url": "https://cdn/2.jpg", "width": 1024, "height": 768},
        ],
        "seed": 7,
        "prompt": "https://not-a-file.example",
        "timings": {"inference": 0.4},
    }
    files = output_files(flux.output_schema, output)
    assert [(f["url"], f["kind"], f["width"], f["height"]) for f in files] == [
        ("https://cdn/1.jpg", "image", 1024, 768),
        ("https://cdn/2.jpg", "image", 1024, 768),  # no content type: the schema says image
    ]
    kling = shipped_models()[KLING]
    video = {"url": "https://cdn/v.mp4", "content_type": "video/mp4", "file_size": 123}
    (file,) = output_files(kling.output_schema, {"video": video})
    assert file == {
        "url": "https://cdn/v.mp4",
        "content_type": "video/mp4",
        "kind": "video",  # fal's File component, told apart by its content type
        "width": None,
        "height": None,
        "duration": None,
        "file_name": None,
        "file_size": 123,
    }


def test_without_a_schema_file_objects_are_recognised_by_their_shape() -> None:
    output = {"audio": {"url": "https://cdn/a.wav", "content_type": "audio/wav", "duration": 2}}
    output["meta"] = {"url": "https://docs.example"}  # a URL alone is not a file
    assert [(f["kind"], f["duration"]) for f in output_files(None, output)] == [("audio", 2.0)]


def test_fals_openapi_document_becomes_a_self_contained_entry() -> None:
    openapi = json.loads(SEEDREAM.read_text())
    document = entry_from_openapi(openapi, price={"unit": "image", "unit_price_usd": "0.03"})
    assert document["id"] == "fal-ai/bytedance/seedream/v4/text-to-image"
    assert document["category"] == "text-to-image"
    assert set(document["output_schema"]["$defs"]) == {"Image"}
    assert "QueueStatus" not in json.dumps(document)  # only what the schemas reach
    assert "#/components/" not in json.dumps(document)
    spec = from_document(document)
    assert spec.price.estimate(spec.normalise_input({"prompt": "p"})) == Decimal("0.03")
    with pytest.raises(InputInvalid):
        spec.normalise_input({"prompt": "p", "image_size": {"width": "wide"}})


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        (lambda d: d.update(id="storage/auth/token"), "not a fal model id"),
        (lambda d: d.update(id="Fal AI"), "not a fal model id"),
        (lambda d: d.pop("price"), "price is required"),
        (lambda d: d["price"].update(unit="token"), "price.unit must be one of"),
        (lambda d: d["price"].update(unit_price_usd="cheap"), "decimal amount"),
        (lambda d: d.update(input_schema={"type": "array"}), "input_schema must be"),
        (
            lambda d: d["input_schema"]["properties"].update(seed={"type": "whole"}),
            "not a usable JSON Schema",
        ),
        (lambda d: d.update(typical_seconds=0), "typical_seconds"),
    ],
)
def test_an_unusable_entry_is_refused_with_the_reason(change: Any, complaint: str) -> None:
    document = copy.deepcopy(shipped_models()["fal-ai/flux/schnell"].document())
    change(document)
    with pytest.raises(EntryInvalid, match=complaint):
        from_document(document)


def test_a_huge_refused_array_is_explained_by_its_first_faults_only() -> None:
    document = copy.deepcopy(shipped_models()[KONTEXT].document())
    document["input_schema"]["properties"]["image_urls"] = {
        "type": "array",
        "items": {"type": "string"},
    }
    spec = from_document(document)
    hostile = {"prompt": "p", "image_url": "https://x/y.png", "image_urls": [1] * 200_000}
    tracemalloc.start()
    try:
        with pytest.raises(InputInvalid) as caught:
            spec.normalise_input(hostile)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Bounded: a few issues, found without first making an error object of every bad item
    # (which took about 700 MB for these 200,000).
    assert 0 < len(caught.value.issues) <= 20
    assert caught.value.issues[0].path == ("image_urls", 0)
    assert peak < 50 * 1024 * 1024
