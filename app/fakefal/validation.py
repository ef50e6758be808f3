"""A model's input checked against its JSON Schema, refused the way fal's model apps refuse it.

fal's models are FastAPI apps with pydantic inputs: an input they cannot take fails with a 422
whose `detail` lists pydantic's errors (`loc` starting at "body", `msg`, `type`, `input`, and
`ctx` for a constraint). Here the input is checked against the JSON Schema fal publishes for the
model, and the first problem is told in pydantic's words. Unknown fields are ignored, as a
FastAPI app ignores them; the schema's defaults are filled in.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Callable, Mapping
from typing import Any

import fastjsonschema

Check = Callable[[Any], Any]
_TYPES = {
    "string": ("string_type", "Input should be a valid string"),
    "integer": ("int_type", "Input should be a valid integer"),
    "number": ("float_type", "Input should be a valid number"),
    "boolean": ("bool_type", "Input should be a valid boolean"),
    "array": ("list_type", "Input should be a valid list"),
    "object": ("dict_type", "Input should be a valid dictionary"),
    "null": ("none_required", "Input should be None"),
}
# (type, message template, ctx name) per JSON Schema keyword with a pydantic counterpart.
_LIMITS = {
    "minLength": ("string_too_short", "String should have at least {} characters", "min_length"),
    "maxLength": ("string_too_long", "String should have at most {} characters", "max_length"),
    "minimum": ("greater_than_equal", "Input should be greater than or equal to {}", "ge"),
    "maximum": ("less_than_equal", "Input should be less than or equal to {}", "le"),
    "exclusiveMinimum": ("greater_than", "Input should be greater than {}", "gt"),
    "exclusiveMaximum": ("less_than", "Input should be less than {}", "lt"),
    "minItems": ("too_short", "List should have at least {} items", "min_length"),
    "maxItems": ("too_long", "List should have at most {} items", "max_length"),
    "pattern": ("string_pattern_mismatch", "String should match pattern '{}'", "pattern"),
    "multipleOf": ("multiple_of", "Input should be a multiple of {}", "multiple_of"),
}


class InputRefused(Exception):
    """The input does not fit the schema: `detail` is FastAPI's 422 body `detail`."""

    def __init__(self, detail: list[dict[str, Any]]) -> None:
        super().__init__(detail[0]["msg"] if detail else "invalid input")
        self.detail = detail


def check_input(schema: Mapping[str, Any], model_input: Any) -> dict[str, Any]:
    """The input with the schema's defaults filled in; raises `InputRefused`."""
    data = copy.deepcopy(model_input)
    try:
        checked = _compiled(_key(schema))(data)
    except fastjsonschema.JsonSchemaValueException as exc:
        raise InputRefused([_pydantic_error(exc, model_input)]) from None
    if not isinstance(checked, dict):
        raise InputRefused([_error(["body"], "model_attributes_type", _OBJECT, model_input)])
    return checked


_OBJECT = "Input should be a valid dictionary or object to extract fields from"


def _key(schema: Mapping[str, Any]) -> str:
    # The schema's text is the cache key: entries are plain JSON, and an imported model's
    # document can change under the same id.
    return json.dumps(schema, sort_keys=True)


@functools.lru_cache(maxsize=256)
def _compiled(schema_text: str) -> Check:
    schema = json.loads(schema_text)
    # An input must be an object even where fal's schema leaves `type` out.
    schema.setdefault("type", "object")
    check: Check = fastjsonschema.compile(schema, use_default=True)
    return check


def _pydantic_error(exc: fastjsonschema.JsonSchemaValueException, raw: Any) -> dict[str, Any]:
    loc = _loc(exc.path or ["data"], raw)
    rule, limit, value = exc.rule, exc.rule_definition, exc.value
    if rule == "required":
        given = set(value) if isinstance(value, Mapping) else set()
        missing = [name for name in (limit or []) if name not in given]
        return _error([*loc, *missing[:1]], "missing", "Field required", value)
    if rule == "type":
        if loc == ["body"] and limit == "object":
            return _error(loc, "model_attributes_type", _OBJECT, value)
        name = limit if isinstance(limit, str) else next(iter(limit or []), "")
        kind, message = _TYPES.get(name, ("value_error", f"Input should be {name}"))
        return _error(loc, kind, message, value)
    if rule in ("enum", "const"):
        choices = limit if rule == "enum" else [limit]
        expected = _or([repr(choice) for choice in choices])
        return _error(loc, "literal_error", f"Input should be {expected}", value, expected)
    if rule in _LIMITS:
        kind, template, ctx_name = _LIMITS[rule]
        error = _error(loc, kind, template.format(limit), value)
        error["ctx"] = {ctx_name: limit}
        return error
    if rule == "additionalProperties" and isinstance(value, Mapping):
        known = set((exc.definition or {}).get("properties", {}))
        extra = [name for name in value if name not in known]
        return _error(
            [*loc, *extra[:1]], "extra_forbidden", "Extra inputs are not permitted", value
        )
    message = exc.message
    prefix = exc.name or "data"
    if message.startswith(prefix):
        message = "Input " + message[len(prefix) :].strip()
    return _error(loc, "value_error", message, value)


def _loc(path: list[str], raw: Any) -> list[str | int]:
    """fastjsonschema's path (`["data", "images", "0"]`) as FastAPI's `loc`: list indexes
    as integers, found by walking the input itself."""
    loc: list[str | int] = ["body"]
    node = raw
    for part in path[1:]:
        if isinstance(node, list) and part.isdigit():
            loc.append(int(part))
            node = node[int(part)] if int(part) < len(node) else None
        else:
            loc.append(part)
            node = node.get(part) if isinstance(node, Mapping) else None
    return loc


def _error(
    loc: list[str | int], kind: str, message: str, value: Any, expected: str | None = None
) -> dict[str, Any]:
    error: dict[str, Any] = {"type": kind, "loc": loc, "msg": message, "input": value}
    if expected is not None:
        error["ctx"] = {"expected": expected}
    return error


def _or(choices: list[str]) -> str:
    return choices[0] if len(choices) == 1 else f"{', '.join(choices[:-1])} or {choices[-1]}"
