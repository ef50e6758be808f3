"""The compiled input check agrees with jsonschema on what is valid, and with fastjsonschema on
the defaults it fills in, for every shipped model and for schemas built to reach each branch."""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import fastjsonschema
import jsonschema
import pytest

from app.catalog import shipped_models
from app.catalog.check import Refused, compile_check
from app.catalog.fal_openapi import entry_from_openapi
from app.catalog.spec import _closed

FIXTURES = Path(__file__).parent / "fixtures"
SEEDREAM = FIXTURES / "fal-ai--bytedance--seedream--v4--text-to-image.openapi.json"
# Values of every JSON type, near every bound the shipped schemas name.
VALUES: list[Any] = [
    None, True, False, 0, 1, -1, 2, 4, 5, 12, 20, 28, 50, 51, 10**20, 0.0, 0.5, 1.0, 1.5, 3.5,
    -0.5, 20.5, "", "p", "1:1", "16:9", "low", "jpeg", "2K", "5", "none", [], ["a"], {},
    {"width": 512, "height": 512}, {"width": "x"},
]  # fmt: skip


def _schemas() -> Iterator[tuple[str, dict[str, Any]]]:
    for model_id, spec in sorted(shipped_models().items()):
        yield model_id, _closed(spec.input_schema)
    price = {"unit": "image", "unit_price_usd": "0.03"}
    seedream = entry_from_openapi(json.loads(SEEDREAM.read_text()), price=price)
    yield seedream["id"], _closed(seedream["input_schema"])
    yield (
        "bounds and lengths",
        {
            "type": "object",
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 3},
                "count": {"type": "integer", "exclusiveMinimum": 0, "maximum": 4},
                "ratio": {"type": "number", "minimum": -1, "exclusiveMaximum": 2.5},
                "flag": {"type": "boolean"},
                "tags": {"type": "array", "items": {"type": "string"}, "default": ["a"]},
                "pick": {"type": "string", "enum": ["p", "low"], "minLength": 2},
                "mixed": {"enum": [1, "1", True]},
            },
            "required": ["flag", "elsewhere"],
        },
    )


SCHEMAS = dict(_schemas())


def _inputs(schema: Mapping[str, Any], rng: random.Random, n: int) -> Iterator[dict[str, Any]]:
    """Inputs near the border: the required fields and a few others, each field at a value it
    takes (by jsonschema, on its own) three times in four, at any value otherwise."""
    properties = schema.get("properties", {})
    defs = {key: schema[key] for key in ("$defs",) if key in schema}
    values = VALUES + [field["default"] for field in properties.values() if "default" in field]
    fits = {
        name: [v for v in values if jsonschema.Draft202012Validator({**field, **defs}).is_valid(v)]
        for name, field in properties.items()
    }
    required = list(schema.get("required", []))
    others = [name for name in [*properties, "unknown"] if name not in required]
    for _ in range(n):
        picked = [name for name in required if rng.random() < 0.97]
        picked += rng.sample(others, rng.randint(0, min(4, len(others))))
        yield {
            name: copy.deepcopy(
                rng.choice(fits[name])
                if fits.get(name) and rng.random() < 0.75
                else rng.choice(values)
            )
            for name in picked
        }


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_the_check_accepts_exactly_what_jsonschema_accepts_with_fastjsonschemas_defaults(
    name: str,
) -> None:
    schema = SCHEMAS[name]
    check = compile_check(schema)
    judge = jsonschema.Draft202012Validator(schema)
    reference = fastjsonschema.compile(schema, use_default=True)
    rng = random.Random(name)
    valid = invalid = 0
    for raw in _inputs(schema, rng, 4000):
        data = copy.deepcopy(raw)
        try:
            check(data)
        except (Refused, fastjsonschema.JsonSchemaValueException):
            assert not judge.is_valid(raw), raw
            invalid += 1
            continue
        assert judge.is_valid(raw), raw
        expected = reference(copy.deepcopy(raw))
        assert data == expected
        assert list(data) == list(expected)  # the same key order: fal sees the same JSON
        valid += 1
    assert valid > 100
    assert invalid > 100


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_every_shipped_models_valid_inputs_and_one_fault_each(name: str) -> None:
    schema = SCHEMAS[name]
    check = compile_check(schema)
    judge = jsonschema.Draft202012Validator(schema)
    # Each field alone at each value, beside the required fields at a valid value.
    base = {field: "p" for field in schema.get("required", [])}
    if "image_url" in base:
        base["image_url"] = "https://example.com/in.png"
    if name == "bounds and lengths":
        base = {"flag": True, "elsewhere": None}
    assert judge.is_valid(base)
    for field in schema.get("properties", {}):
        for value in VALUES:
            raw = {**base, field: value}
            try:
                check(copy.deepcopy(raw))
                accepted = True
            except (Refused, fastjsonschema.JsonSchemaValueException):
                accepted = False
            assert accepted == judge.is_valid(raw), (field, value)


def test_a_flat_schema_gets_the_generated_check_and_a_richer_one_fastjsonschemas() -> None:
    flat = compile_check(SCHEMAS["imagineart/imagineart-2.0-preview/text-to-image"])
    with pytest.raises(Refused):
        flat({"prompt": "p", "aspect_ratio": "2:1"})
    rich = compile_check({"type": "object", "properties": {}, "minProperties": 1})
    with pytest.raises(fastjsonschema.JsonSchemaValueException):
        rich({})


def test_a_mutable_default_is_each_inputs_own() -> None:
    check = compile_check(SCHEMAS["bounds and lengths"])
    first: dict[str, Any] = {"flag": True, "elsewhere": 1}
    second: dict[str, Any] = {"flag": False, "elsewhere": 2}
    check(first)
    check(second)
    first["tags"].append("b")
    assert second["tags"] == ["a"]
    assert SCHEMAS["bounds and lengths"]["properties"]["tags"]["default"] == ["a"]


def test_a_field_name_is_data_not_code() -> None:
    name = "x') or True or ('"
    check = compile_check(
        {
            "type": "object",
            "properties": {name: {"type": "integer"}},
            "additionalProperties": False,
        }
    )
    assert check({name: 1}) == {name: 1}
    with pytest.raises(Refused):
        check({name: "1"})
