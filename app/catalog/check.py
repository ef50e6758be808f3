"""A model's input check, compiled once from its JSON Schema: says yes or no, and fills in the
schema's defaults. Why an input is refused is `spec._issues`'s job (jsonschema), paid only then.

Most of fal's input schemas are a flat object: named fields of strings, numbers, booleans and
string enums, with defaults. For those the check is one generated function that reads each field
once and tests it with a class test or a set look-up: under half of what fastjsonschema's
general code costs for the same schema, which keeps validation off the intake profile
(bench/README.md, validation). A field with anything richer (`anyOf`, a `$ref`, an array, a
`format`, a nested object) is checked by fastjsonschema's code for that field alone; a schema
whose top level is not such an object is compiled whole by fastjsonschema.

Both agree with jsonschema (Draft 2020-12) on what is valid: `tests/catalog/test_check.py`
compares them on every shipped model and on generated inputs.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import fastjsonschema

Check = Callable[[dict[str, Any]], object]
FieldCheck = Callable[[Any], bool]


class Refused(ValueError):
    """The input does not fit the schema (why is worked out separately, by jsonschema)."""


# Keywords that say nothing about validity: both validators ignore them.
ANNOTATIONS = frozenset(
    {"title", "description", "examples", "deprecated", "readOnly", "writeOnly", "$comment"}
)
# The top level of a flat schema: anything else (patternProperties, allOf, minProperties...)
# sends the whole schema to fastjsonschema.
FLAT_TOP = (
    frozenset(
        {
            "type",
            "properties",
            "required",
            "additionalProperties",
            "$defs",
            "definitions",
            "$schema",
        }
    )
    | ANNOTATIONS
)
SIMPLE_FIELD = {
    "string": frozenset({"type", "default", "enum", "minLength", "maxLength"}) | ANNOTATIONS,
    "integer": frozenset(
        {"type", "default", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}
    )
    | ANNOTATIONS,
    "number": frozenset(
        {"type", "default", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}
    )
    | ANNOTATIONS,
    "boolean": frozenset({"type", "default"}) | ANNOTATIONS,
}
BOUNDS = (
    ("minimum", ">="),
    ("maximum", "<="),
    ("exclusiveMinimum", ">"),
    ("exclusiveMaximum", "<"),
)
_IMMUTABLE = (str, int, float, bool, type(None))
_MISSING = object()


def compile_check(schema: Mapping[str, Any]) -> Check:
    """The check for inputs of `schema`: called with a dict it may add defaults to, it raises
    `Refused` (or fastjsonschema's error, for a schema compiled whole) when the input is invalid.
    A schema fastjsonschema cannot compile raises `fastjsonschema.JsonSchemaDefinitionException`.
    """
    whole = fastjsonschema.compile(dict(schema), use_default=True)  # also proves it compiles
    if not _flat(schema):
        return whole
    return _FlatCompiler(schema).compile()


class _FlatCompiler:
    """Writes the check of a flat schema as one Python function, as fastjsonschema does for any
    schema, but reading each field once: `data.get`, a type test, a set look-up, a default.
    Field names enter the source only through `repr`; every other value is a name bound in the
    function's namespace."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        self.schema = schema
        # What a field's own schema needs beside it: the definitions its `$ref`s point into.
        carried = ("$defs", "definitions", "$schema")
        self.defs = {key: schema[key] for key in carried if key in schema}
        self.namespace: dict[str, Any] = {
            "Refused": Refused,
            "MISSING": _MISSING,
            "deepcopy": copy.deepcopy,
            "is_integer": _is_integer,
            "is_number": _is_number,
        }

    def bind(self, value: Any) -> str:
        name = f"c{len(self.namespace)}"
        self.namespace[name] = value
        return name

    def compile(self) -> Check:
        properties: Mapping[str, Mapping[str, Any]] = self.schema["properties"]
        required = set(self.schema.get("required", ()))
        lines = ["def check(data):", "    try:"]
        if self.schema.get("additionalProperties", True) is False:
            known = self.bind(frozenset(properties))
            lines.append(
                f"        if not {known}.issuperset(data): raise Refused('an unknown field')"
            )
        unnamed = required - set(properties)
        if unnamed:
            named = self.bind(frozenset(unnamed))
            lines.append(
                f"        if not {named} <= data.keys(): raise Refused('a field is missing')"
            )
        for name, field_schema in properties.items():
            key = repr(name)
            lines.append(f"        v = data.get({key}, MISSING)")
            lines.append("        if v is MISSING:")
            if name in required:
                lines.append("            raise Refused('a required field is missing')")
            elif "default" in field_schema:
                default = field_schema["default"]
                value = self.bind(default)
                if not isinstance(default, _IMMUTABLE):
                    value = f"deepcopy({value})"  # each input gets its own
                lines.append(f"            data[{key}] = {value}")
            else:
                lines.append("            pass")
            lines.append(f"        elif not ({self.test(field_schema)}):")
            lines.append("            raise Refused('a field does not fit')")
        lines += [
            "    except TypeError:  # a set asked about an unhashable value: a list, an object",
            "        raise Refused('a field does not fit') from None",
            "    return data",
        ]
        exec("\n".join(lines), self.namespace)  # our own source: names enter it by repr
        check: Check = self.namespace["check"]
        return check

    def test(self, schema: Mapping[str, Any]) -> str:
        """An expression true when `v` fits `schema`."""
        kind = schema.get("type")
        kind = kind if isinstance(kind, str) else ""
        allowed = SIMPLE_FIELD.get(kind)
        if allowed is not None and all(key in allowed or key.startswith("x-") for key in schema):
            if kind == "boolean":
                return "v is True or v is False"
            test = self.string(schema) if kind == "string" else self.number(schema, kind)
            if test is not None:
                return test
        return f"{self.bind(_compiled(schema, self.defs))}(v)"

    def string(self, schema: Mapping[str, Any]) -> str | None:
        enum = schema.get("enum")
        low, high = schema.get("minLength"), schema.get("maxLength")
        if enum is not None:
            if low is not None or high is not None:
                return None
            if not isinstance(enum, list) or not all(isinstance(item, str) for item in enum):
                return None
            # Only strings are in the set and no other JSON value equals one; an unhashable
            # value raises TypeError, which refuses it.
            return f"v in {self.bind(frozenset(enum))}"
        if not all(bound is None or _is_int(bound) for bound in (low, high)):
            return None
        test = "isinstance(v, str)"
        if low is not None:
            test += f" and len(v) >= {self.bind(low)}"
        if high is not None:
            test += f" and len(v) <= {self.bind(high)}"
        return test

    def number(self, schema: Mapping[str, Any], kind: str) -> str | None:
        # The common case first, as a class identity test; bools are never numbers here.
        test = (
            "(v.__class__ is int or is_integer(v))"
            if kind == "integer"
            else "(v.__class__ is float or v.__class__ is int or is_number(v))"
        )
        for keyword, operator in BOUNDS:
            bound = schema.get(keyword)
            if bound is None:
                continue
            if not _is_number(bound):
                return None  # draft 4's boolean exclusiveMinimum, say: fastjsonschema's
            test += f" and v {operator} {self.bind(bound)}"
        return test


def _flat(schema: Mapping[str, Any]) -> bool:
    return (
        schema.get("type") == "object"
        and isinstance(schema.get("properties"), Mapping)
        and all(
            isinstance(name, str) and isinstance(field, Mapping)
            for name, field in schema["properties"].items()
        )
        and isinstance(schema.get("required", []), list)
        and schema.get("additionalProperties", True) in (True, False)
        and all(key in FLAT_TOP or key.startswith("x-") for key in schema)
    )


def _compiled(schema: Mapping[str, Any], defs: Mapping[str, Any]) -> FieldCheck:
    validate = fastjsonschema.compile({**schema, **defs}, use_default=True)

    def compiled(value: Any) -> bool:
        try:
            validate(value)
        except fastjsonschema.JsonSchemaValueException:
            return False
        return True

    return compiled


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_integer(value: Any) -> bool:
    # JSON Schema's integer is a number with no fraction: 1.0 is one (Draft 2020-12).
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
