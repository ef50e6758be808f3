"""One catalog entry: a fal model described as data, and what falrelay does with that data.

An entry is a JSON document (the shipped ones are files in `entries/`, imported ones rows in
Postgres): the model's id, its input and output JSON Schemas as fal publishes them, its price
rule and its typical run time. Nothing about a model is code, so adding one is adding a document.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import fastjsonschema
import jsonschema

from app.catalog.check import Check, Refused, compile_check
from app.catalog.pricing import PriceRule, PriceUnit

# fal's model ids: `owner/app` with optional sub-paths, e.g. `fal-ai/flux/schnell`.
MODEL_ID = re.compile(r"^[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*)+$")
MAX_MODEL_ID_LENGTH = 200
# fal's own paths on the REST host that look like model ids but are not.
RESERVED_OWNERS = frozenset({"storage", "requests", "v1", "_fake", "run", "files"})


class EntryInvalid(ValueError):
    """A catalog document that falrelay cannot run a model from; the message says why."""


@dataclass(frozen=True, slots=True)
class InputIssue:
    """Why an input does not fit the model's schema; `path` points at the field."""

    path: tuple[str | int, ...]
    message: str
    rule: str


class InputInvalid(ValueError):
    def __init__(self, issues: Sequence[InputIssue]) -> None:
        super().__init__("; ".join(issue.message for issue in issues))
        self.issues = list(issues)


@dataclass(frozen=True, slots=True)
class FileInput:
    """An input field that names a file: a URL fal fetches, or a `data:` URI."""

    name: str
    # The media types the field accepts, as prefixes ("image/"); empty accepts any.
    accepts: tuple[str, ...]
    many: bool


@dataclass(frozen=True, slots=True)
class ModelSpec:
    id: str
    title: str
    description: str
    category: str
    source: tuple[str, ...]
    price: PriceRule
    typical_seconds: float
    input_schema: Mapping[str, Any]
    output_schema: Mapping[str, Any]
    file_inputs: tuple[FileInput, ...]
    _check: Check = field(repr=False, compare=False)
    _explain: jsonschema.protocols.Validator = field(repr=False, compare=False)

    def normalise_input(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """The input as fal will receive it: checked against the model's schema, with the
        schema's defaults filled in. Raises `InputInvalid`, pointing at the field.

        The compiled check writes defaults into what it is given. The top level is copied, so
        the caller's dict keeps its keys; a nested object with defaults of its own (an
        `image_size` object) gets them in place. Intake owns the input it parsed, and a deep
        copy was two thirds of a check's cost (bench/README.md, validation)."""
        data = dict(raw)
        try:
            self._check(data)
        except (Refused, fastjsonschema.JsonSchemaValueException) as exc:
            raise InputInvalid(_issues(self._explain, dict(raw))) from exc
        return data

    def document(self) -> dict[str, Any]:
        """The entry as JSON, the form it is stored, imported and served in."""
        return {
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "category": self.category,
            "source": list(self.source),
            "price": self.price.document(),
            "typical_seconds": self.typical_seconds,
            "input_schema": self.input_schema,
            "output_schema": self.output_schema,
        }


def check_model_id(model_id: object) -> str:
    if not isinstance(model_id, str) or len(model_id) > MAX_MODEL_ID_LENGTH:
        raise EntryInvalid("id must be a fal model id such as fal-ai/flux/schnell")
    if not MODEL_ID.match(model_id) or model_id.split("/", 1)[0] in RESERVED_OWNERS:
        raise EntryInvalid(f"{model_id!r} is not a fal model id (owner/app[/path])")
    return model_id


def from_document(document: Mapping[str, Any]) -> ModelSpec:
    """Build a model from its catalog document; `EntryInvalid` says what is wrong with it."""
    if not isinstance(document, Mapping):
        raise EntryInvalid("a catalog entry is a JSON object")
    model_id = check_model_id(document.get("id"))
    input_schema = _object_schema(document.get("input_schema"), "input_schema")
    output_schema = _object_schema(document.get("output_schema"), "output_schema")
    source = document.get("source", ())
    sources = (source,) if isinstance(source, str) else tuple(source or ())
    if not all(isinstance(url, str) for url in sources):
        raise EntryInvalid("source is a URL or a list of URLs")
    typical = document.get("typical_seconds", 5.0)
    if isinstance(typical, bool) or not isinstance(typical, int | float) or not typical > 0:
        raise EntryInvalid("typical_seconds must be a positive number")
    closed = _closed(input_schema)
    try:
        jsonschema.Draft202012Validator.check_schema(closed)
        check = compile_check(closed)
    except (jsonschema.SchemaError, fastjsonschema.JsonSchemaDefinitionException) as exc:
        message = getattr(exc, "message", str(exc))
        raise EntryInvalid(f"input_schema is not a usable JSON Schema: {message}") from exc
    return ModelSpec(
        id=model_id,
        title=_text(document.get("title"), default=model_id),
        description=_text(document.get("description"), default=""),
        category=_text(document.get("category"), default=""),
        source=sources,
        price=price_rule(document.get("price")),
        typical_seconds=float(typical),
        input_schema=input_schema,
        output_schema=output_schema,
        file_inputs=file_inputs(input_schema),
        _check=check,
        _explain=jsonschema.Draft202012Validator(closed),
    )


def price_rule(document: object) -> PriceRule:
    """A price rule from its JSON form: `{"unit", "unit_price_usd" | "by_resolution",
    "typical_units"}`, amounts as decimal strings in dollars."""
    if not isinstance(document, Mapping):
        raise EntryInvalid("price is required: {'unit': ..., 'unit_price_usd': '0.003'}")
    try:
        unit = PriceUnit(str(document.get("unit")))
    except ValueError as exc:
        units = ", ".join(unit.value for unit in PriceUnit)
        raise EntryInvalid(f"price.unit must be one of {units}") from exc
    by_resolution = document.get("by_resolution") or {}
    if not isinstance(by_resolution, Mapping):
        raise EntryInvalid("price.by_resolution maps a resolution to a price")
    rule = PriceRule(
        unit=unit,
        unit_price_usd=_amount(document.get("unit_price_usd", "0"), "price.unit_price_usd"),
        by_resolution={
            str(name): _amount(value, f"price.by_resolution.{name}")
            for name, value in by_resolution.items()
        },
        typical_units=_amount(document.get("typical_units", "1"), "price.typical_units"),
    )
    if not rule.by_resolution and rule.unit_price_usd == 0:
        raise EntryInvalid("price needs unit_price_usd or by_resolution")
    return rule


# Input fields fal fetches files from, recognised by fal's naming: `image_url`, `image_urls`,
# `mask_url`, `video_url`, `audio_url`... The name's first part says what the file must be.
_KIND_WORDS = (
    (("image", "mask", "photo", "reference", "style", "face", "start", "end", "frame"), "image/"),
    (("video",), "video/"),
    (("audio", "voice", "speech", "music", "sound"), "audio/"),
)


def file_inputs(input_schema: Mapping[str, Any]) -> tuple[FileInput, ...]:
    properties = input_schema.get("properties") or {}
    found = []
    for name, schema in properties.items():
        if not isinstance(name, str) or not name.endswith(("_url", "_urls")):
            continue
        many = name.endswith("_urls") or _resolve(input_schema, schema).get("type") == "array"
        stem = name.rsplit("_", 1)[0]
        accepts = tuple(
            prefix for words, prefix in _KIND_WORDS if any(word in stem for word in words)
        )
        found.append(FileInput(name=name, accepts=accepts[:1], many=many))
    return tuple(found)


def _resolve(root: Mapping[str, Any], schema: Any) -> Mapping[str, Any]:
    """A schema with a local `$ref` followed (one level is all fal's documents use)."""
    if not isinstance(schema, Mapping):
        return {}
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part) if isinstance(target, Mapping) else None
        return target if isinstance(target, Mapping) else {}
    return schema


def _closed(input_schema: Mapping[str, Any]) -> dict[str, Any]:
    """The schema inputs are checked with: fal's, refusing top-level fields it does not name.

    fal's models ignore unknown fields, so a misspelt `aspect_ration` would silently run with
    the default; refusing it is what an API user expects. Only where fal's schema says nothing.
    """
    schema = dict(input_schema)
    if "properties" in schema and "additionalProperties" not in schema:
        schema["additionalProperties"] = False
    return schema


def _object_schema(schema: object, name: str) -> dict[str, Any]:
    if not isinstance(schema, Mapping) or schema.get("type", "object") != "object":
        raise EntryInvalid(f"{name} must be a JSON Schema for an object")
    return dict(schema)


def _text(value: object, *, default: str) -> str:
    return value if isinstance(value, str) else default


def _amount(value: object, name: str) -> Decimal:
    try:
        amount = Decimal(str(value))
    except InvalidOperation as exc:
        raise EntryInvalid(f"{name} must be a decimal amount such as '0.003'") from exc
    if not amount.is_finite() or amount < 0:
        raise EntryInvalid(f"{name} must be a non-negative amount")
    return amount


# How many problems one refused input reports: enough to fix a form, bounded for a hostile one.
MAX_ISSUES = 20


def _issues(validator: jsonschema.protocols.Validator, data: Any) -> list[InputIssue]:
    """Every reason `data` does not fit, each pointing at its field. Messages never repeat the
    value back: an input may carry a secret, or a megabyte."""
    issues = []
    # Lazily, and only the first few: an array of a million bad items must not become a
    # million error objects on the event loop.
    first = itertools.islice(validator.iter_errors(data), MAX_ISSUES)
    errors = sorted(first, key=lambda error: [str(part) for part in error.absolute_path])
    for error in errors:
        path = list(error.absolute_path)
        message = _message(error, path)  # may extend the path to the field it names
        issues.append(InputIssue(tuple(path), message, str(error.validator)))
    return issues or [InputIssue((), "does not match the model's input schema", "schema")]


def _message(error: jsonschema.ValidationError, path: list[str | int]) -> str:
    rule: Any = error.validator
    expected: Any = error.validator_value
    instance: Any = error.instance
    schema: Any = error.schema
    if rule == "required":
        present = set(instance) if isinstance(instance, dict) else set()
        path.extend(sorted(set(expected) - present)[:1])
        return "field required"
    if rule == "additionalProperties":
        known = set(schema.get("properties") or {}) if isinstance(schema, Mapping) else set()
        extra = sorted(set(instance) - known) if isinstance(instance, dict) else []
        path.extend(extra[:1])
        return "is not a field of this model's input"
    messages = {
        "type": f"must be of type {_either(expected)}",
        "enum": f"must be one of {_either(expected)}",
        "const": f"must be {expected!r}",
        "minimum": f"must be at least {expected}",
        "maximum": f"must be at most {expected}",
        "exclusiveMinimum": f"must be greater than {expected}",
        "exclusiveMaximum": f"must be less than {expected}",
        "minLength": f"must be at least {expected} characters long",
        "maxLength": f"must be at most {expected} characters long",
        "minItems": f"must have at least {expected} items",
        "maxItems": f"must have at most {expected} items",
        "pattern": f"must match {expected!r}",
        "multipleOf": f"must be a multiple of {expected}",
        "anyOf": "does not match any of the forms this field takes",
        "oneOf": "must match exactly one of the forms this field takes",
    }
    return messages.get(str(rule), f"is not valid ({rule})")


def _either(values: Any) -> str:
    if isinstance(values, list | tuple):
        return ", ".join(repr(value) if isinstance(value, str) else str(value) for value in values)
    return str(values)
