"""Every catalog model on the fake: inputs checked as fal checks them, outputs that fit the
model's output schema, real files behind every URL, and run times that follow the catalog."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import fastjsonschema
import httpx
import pytest

from app.catalog.files import output_files
from app.fakefal import FakeFalConfig
from app.fakefal.models import CatalogModel, Generation, run_model
from app.fakefal.png import Band, encode_png
from tests.fakefal.conftest import StartFake
from tests.fakefal.media_checks import check_file, decode, png_dimensions, wav_seconds
from tests.fakefal.support import RunningFake, wait_completed

ENTRIES = sorted((Path(__file__).parents[2] / "app/catalog/entries").glob("*.json"))
KLING = "fal-ai/kling-video/v2.1/standard/image-to-video"
SCHNELL = "fal-ai/flux/schnell"
# A 1x1 PNG as a data: URI, for inputs that take a file.
PIXEL = "data:image/png;base64," + base64.b64encode(encode_png(1, [Band(b"\0\0\0", 1)])).decode()


def load(path: Path) -> dict[str, Any]:
    entry: dict[str, Any] = json.loads(path.read_bytes())
    return entry


def minimal_input(schema: dict[str, Any]) -> dict[str, Any]:
    """An input with the required fields only, each given the plainest valid value."""
    model_input: dict[str, Any] = {}
    for name in schema.get("required", []):
        field = schema["properties"][name]
        if name.endswith("_url"):
            model_input[name] = PIXEL
        elif name.endswith("_urls"):
            model_input[name] = [PIXEL]
        elif "enum" in field:
            model_input[name] = field["enum"][0]
        elif field.get("type") == "string":
            model_input[name] = "a red fox in the snow"
        else:
            raise AssertionError(f"write an input for the required field {name!r}: {field}")
    return model_input


async def run(http: httpx.AsyncClient, fake: RunningFake, model: str, body: Any) -> httpx.Response:
    submitted = await http.post(fake.submit_url(model), json=body)
    assert submitted.status_code == 200, submitted.text
    await wait_completed(http, submitted.json()["status_url"], within=30)
    return await http.get(submitted.json()["response_url"])


async def check_output(
    http: httpx.AsyncClient, output_schema: Mapping[str, Any], output: Any
) -> list[dict[str, Any]]:
    """The output fits the schema and every file it lists downloads as what it says."""
    fastjsonschema.compile(dict(output_schema))(output)
    files = output_files(output_schema, output)
    for listed in files:
        await check_file(http, listed)
    return files


def test_the_catalog_has_entries() -> None:
    assert len(ENTRIES) >= 5


@pytest.mark.parametrize("path", ENTRIES, ids=[path.stem for path in ENTRIES])
async def test_every_catalog_model_answers_its_output_schema_with_real_files(
    fake: RunningFake, http: httpx.AsyncClient, path: Path
) -> None:
    entry = load(path)
    result = await run(http, fake, entry["id"], minimal_input(entry["input_schema"]))
    assert result.status_code == 200, result.text
    files = await check_output(http, entry["output_schema"], result.json())
    assert files, "a model whose output has no file"
    expected = {"image": "image", "video": "video"}[entry["category"].rsplit("-", 1)[-1]]
    assert {listed["kind"] for listed in files} == {expected}
    for listed in files:
        assert listed["content_type"] in ("image/png", "video/mp4")
        assert listed["file_size"] > 0


@pytest.mark.parametrize("path", ENTRIES, ids=[path.stem for path in ENTRIES])
async def test_counts_and_sizes_the_input_asks_for(
    fake: RunningFake, http: httpx.AsyncClient, path: Path
) -> None:
    entry = load(path)
    properties = entry["input_schema"]["properties"]
    body = minimal_input(entry["input_schema"])
    if "num_images" in properties:
        body["num_images"] = 2
    if "image_size" in properties:
        body["image_size"] = {"width": 640, "height": 480}
    elif "aspect_ratio" in properties and "16:9" in properties["aspect_ratio"].get("enum", []):
        body["aspect_ratio"] = "16:9"
    if "duration" in properties:
        body["duration"] = properties["duration"]["enum"][-1]
    result = await run(http, fake, entry["id"], body)
    assert result.status_code == 200, result.text
    files = await check_output(http, entry["output_schema"], result.json())
    images = [listed for listed in files if listed["kind"] == "image"]
    videos = [listed for listed in files if listed["kind"] == "video"]
    if "num_images" in properties:
        assert len(images) == 2
        assert len(result.json()["has_nsfw_concepts"]) == 2
    if "image_size" in properties:
        assert {(i["width"], i["height"]) for i in images} == {(640, 480)}
    elif images and body.get("aspect_ratio") == "16:9":
        assert all(i["width"] * 9 == i["height"] * 16 for i in images)
    if "duration" in properties:
        [video] = videos
        seconds = decode((await http.get(video["url"])).content)[2]
        assert seconds == pytest.approx(float(body["duration"]))


async def test_an_input_that_does_not_fit_the_schema_fails_with_fastapis_422(
    fake: RunningFake, http: httpx.AsyncClient
) -> None:
    cases = [
        ({}, ["body", "prompt"], "missing"),
        ({"prompt": "x", "num_images": 9}, ["body", "num_images"], "less_than_equal"),
        ({"prompt": "x", "output_format": "gif"}, ["body", "output_format"], "literal_error"),
        ({"prompt": 5}, ["body", "prompt"], "string_type"),
        ([1, 2], ["body"], "model_attributes_type"),
    ]
    for body, loc, kind in cases:
        result = await run(http, fake, SCHNELL, body)
        assert result.status_code == 422
        [detail] = result.json()["detail"]
        assert (detail["loc"], detail["type"]) == (loc, kind), detail
        assert detail["msg"]
        assert "x-fal-billable-units" not in result.headers
    # Unknown fields are ignored, as a FastAPI model app ignores them.
    assert (await run(http, fake, SCHNELL, {"prompt": "x", "colour": "red"})).status_code == 200


async def test_the_same_seed_and_input_make_the_same_output(
    fake: RunningFake, http: httpx.AsyncClient
) -> None:
    async def output(body: dict[str, Any]) -> dict[str, Any]:
        result = await run(http, fake, SCHNELL, body)
        document: dict[str, Any] = result.json()
        return document

    first = await output({"prompt": "fox", "seed": 11})
    assert first == await output({"prompt": "fox", "seed": 11})
    assert first["seed"] == 11
    assert first["prompt"] == "fox"
    other_seed = await output({"prompt": "fox", "seed": 12})
    other_prompt = await output({"prompt": "owl", "seed": 11})
    urls = {o["images"][0]["url"] for o in (first, other_seed, other_prompt)}
    assert len(urls) == 3
    drawn = await output({"prompt": "fox"})
    assert isinstance(drawn["seed"], int)
    assert drawn["seed"] != 11


async def test_runs_take_the_catalogs_typical_time_scaled_by_the_knob(
    start_fake: StartFake, http: httpx.AsyncClient
) -> None:
    fake = start_fake(run_latency=0.05, latency_scale=0.01)
    submitted = {}
    for model, body in [(KLING, {"prompt": "p", "image_url": PIXEL}), (SCHNELL, {"prompt": "p"})]:
        response = await http.post(fake.submit_url(model), json=body)
        submitted[model] = response.json()["status_url"]
    # The run's length is read off its timeline, not a clock: exact on a busy machine too.
    kling = await wait_completed(http, submitted[KLING], within=30)
    schnell = await wait_completed(http, submitted[SCHNELL], within=30)
    assert kling["metrics"]["inference_time"] == pytest.approx(0.05 + 0.01 * 120)
    assert schnell["metrics"]["inference_time"] == pytest.approx(0.05 + 0.01 * 1.5)


def test_the_latency_scale_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert FakeFalConfig().latency_scale == 0  # tests and load runs stay fast by default
    monkeypatch.setenv("FALRELAY_FAKEFAL_LATENCY_SCALE", "0.5")
    config = FakeFalConfig(run_latency=1)
    assert config.run_time(120) == 61


async def test_results_bill_in_the_models_unit(fake: RunningFake, http: httpx.AsyncClient) -> None:
    cases = [
        (KLING, {"prompt": "p", "image_url": PIXEL, "duration": "10"}, "10"),
        (SCHNELL, {"prompt": "p"}, "1"),  # 1024x768: one megapixel, rounded up
        (SCHNELL, {"prompt": "p", "image_size": {"width": 2048, "height": 1024}}, "2"),
        (SCHNELL, {"prompt": "p", "num_images": 3, "image_size": "square_hd"}, "3"),
        ("fal-ai/flux-pro/kontext", {"prompt": "p", "image_url": PIXEL, "num_images": 2}, "2"),
    ]
    for model, body, units in cases:
        result = await run(http, fake, model, body)
        assert result.headers["x-fal-billable-units"] == units, (model, body)


# -- models described only by their schemas: every kind of file and field fal's use ----------

FILE = {
    "type": "object",
    "title": "File",
    "properties": {
        "url": {"type": "string"},
        "content_type": {"type": "string"},
        "file_name": {"type": "string"},
        "file_size": {"type": "integer"},
        "file_data": {"type": "string", "format": "binary"},
    },
    "required": ["url"],
}
VIDEO_FILE = {
    "type": "object",
    "title": "VideoFile",
    "properties": {
        "url": {"type": "string"},
        "content_type": {"type": "string"},
        "width": {"type": "integer"},
        "height": {"type": "integer"},
        "fps": {"type": "number"},
        "duration": {"type": "number"},
        "num_frames": {"type": "integer"},
    },
    "required": ["url", "width", "height", "duration"],
}
STRICT_IMAGE = {
    "type": "object",
    "title": "Image",
    "properties": {
        "url": {"type": "string", "format": "uri"},
        "width": {"type": "integer"},
        "height": {"type": "integer"},
    },
    "required": ["url", "width", "height"],
    "additionalProperties": False,
}


def model(input_schema: dict[str, Any], output_schema: dict[str, Any]) -> CatalogModel:
    return CatalogModel("someone/described", input_schema, output_schema, 2.5, "second")


def generated(spec: CatalogModel, body: dict[str, Any], fake: RunningFake) -> dict[str, Any]:
    outcome = run_model(spec, body, 99)
    assert isinstance(outcome, Generation)
    return outcome.output(f"{fake.url}/files")


async def test_a_speech_model(fake: RunningFake, http: httpx.AsyncClient) -> None:
    spec = model(
        {
            "type": "object",
            "properties": {"text": {"type": "string"}, "sample_rate": {"type": "integer"}},
            "required": ["text"],
        },
        {
            "type": "object",
            "properties": {
                "audio": {"$ref": "#/$defs/File", "description": "The speech"},
                "duration_ms": {"type": "integer", "minimum": 1},
            },
            "required": ["audio"],
            "$defs": {"File": FILE},
        },
    )
    output = generated(spec, {"text": "x" * 45, "sample_rate": 22050}, fake)
    [listed] = await check_output(http, spec.output_schema, output)
    assert listed["kind"] == "audio"
    assert listed["content_type"] == "audio/wav"
    assert wav_seconds((await http.get(listed["url"])).content) == pytest.approx(3.0)
    assert output["duration_ms"] >= 1
    assert "file_data" not in output["audio"]


async def test_a_video_model_with_sizes_and_durations(
    fake: RunningFake, http: httpx.AsyncClient
) -> None:
    spec = model(
        {
            "type": "object",
            "properties": {
                "prompt": {"type": "string"},
                "resolution": {"enum": ["480p", "720p"], "default": "720p"},
                "aspect_ratio": {"enum": ["16:9", "9:16"], "default": "16:9"},
                "duration": {"enum": ["4s", "8s"], "default": "4s"},
                "fps": {"type": "integer", "default": 24},
            },
            "required": ["prompt"],
        },
        {
            "type": "object",
            "properties": {
                "video": {"$ref": "#/$defs/VideoFile"},
                "seed": {"type": "integer"},
                "timings": {"type": "object", "additionalProperties": {"type": "number"}},
            },
            "required": ["video", "seed"],
            "$defs": {"VideoFile": VIDEO_FILE},
        },
    )
    body = {"prompt": "p", "resolution": "480p", "aspect_ratio": "9:16", "duration": "8s"}
    output = generated(spec, {**body, "fps": 30}, fake)
    [listed] = await check_output(http, spec.output_schema, output)
    video = output["video"]
    assert (video["width"], video["height"]) == (480, 852)  # even sides
    assert (video["fps"], video["duration"], video["num_frames"]) == (30, 8.0, 240)
    assert listed["duration"] == 8.0
    assert output["timings"] == {"inference": 2.5}
    assert output["seed"] == 99


async def test_a_model_with_every_other_kind_of_field(
    fake: RunningFake, http: httpx.AsyncClient
) -> None:
    spec = model(
        {
            "type": "object",
            "properties": {
                "prompt": {"type": "string"},
                "num_images": {"type": "integer", "default": 1, "maximum": 4},
                "image_size": {"anyOf": [{"$ref": "#/$defs/ImageSize"}, {"type": "string"}]},
            },
            "required": ["prompt"],
            "$defs": {
                "ImageSize": {
                    "type": "object",
                    "properties": {"width": {"type": "integer"}, "height": {"type": "integer"}},
                }
            },
        },
        {
            "type": "object",
            "properties": {
                "images": {"type": "array", "items": {"$ref": "#/$defs/Image"}},
                "thumbnail": {"anyOf": [{"$ref": "#/$defs/Image"}, {"type": "null"}]},
                "mask_url": {"type": "string"},
                "mesh": {
                    "allOf": [{"$ref": "#/$defs/File"}],
                    "examples": [{"url": "https://v3.fal.media/files/x/model.glb"}],
                },
                "has_nsfw_concepts": {"type": "array", "items": {"type": "boolean"}},
                "prompt": {"type": "string"},
                "caption": {"type": "string", "minLength": 40},
                "status": {"type": "string", "enum": ["done", "failed"]},
                "score": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                "steps": {"type": "integer", "minimum": 3, "multipleOf": 2},
                "created_at": {"type": "string", "format": "date-time"},
                "details": {
                    "type": "object",
                    "properties": {"version": {"type": "string"}, "extra": {"type": "string"}},
                    "required": ["version"],
                },
                "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
            },
            "required": ["images", "prompt", "caption", "status", "score", "steps", "details"],
            "$defs": {"Image": STRICT_IMAGE, "File": FILE},
        },
    )
    body = {"prompt": "a fox", "num_images": 3, "image_size": {"width": 640, "height": 480}}
    output = generated(spec, body, fake)
    files = await check_output(http, spec.output_schema, output)
    assert [listed["kind"] for listed in files] == ["image"] * 4 + ["file"]
    assert [set(image) for image in output["images"]] == [{"url", "width", "height"}] * 3
    assert {(i["width"], i["height"]) for i in output["images"]} == {(640, 480)}
    assert output["has_nsfw_concepts"] == [False] * 3
    assert output["prompt"] == "a fox"
    assert output["mesh"]["content_type"] == "model/gltf-binary"
    assert output["mesh"]["file_name"].endswith(".glb")
    assert output["details"] == {"version": "Generated by the fake fal."}
    assert output["steps"] == 4
    mask = await http.get(output["mask_url"])
    assert png_dimensions(mask.content) == (640, 480)
    assert len(output["tags"]) == 2
