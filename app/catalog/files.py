"""The files in a model's output, found through its output schema.

fal's output schemas name their file objects with shared components: `Image`, `Video`,
`Audio`, `File` (each `{url, content_type, file_name, file_size, ...}`). Walking the output
together with its schema finds every one of them, wherever the model puts it (`images[]`,
`video`, `audio_file`...), and lists them uniformly on the job. Where the schema says nothing
(an output field it does not describe, or a model this process does not know), an object with
a `url` and a `content_type` or `file_name` is taken for a file, as fal's clients do.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

FILE_TITLES = {"image": "image", "video": "video", "audio": "audio", "file": "file"}
KINDS = ("image", "video", "audio", "file")
# Deep enough for any real output; a hostile one cannot make the walk recurse without end.
MAX_DEPTH = 12
MAX_FILES = 100


def output_files(output_schema: Mapping[str, Any] | None, output: Any) -> list[dict[str, Any]]:
    """Each file of `output`: `{url, content_type, kind, width, height, duration, file_name,
    file_size}`, in the order the output holds them."""
    found: list[dict[str, Any]] = []
    _walk(output_schema or {}, output_schema, output, None, found, 0)
    return found


def _walk(
    root: Mapping[str, Any],
    schema: Any,
    value: Any,
    kind: str | None,
    found: list[dict[str, Any]],
    depth: int,
) -> None:
    if depth > MAX_DEPTH or len(found) >= MAX_FILES:
        return
    schema = _resolved(root, schema)
    kind = _file_kind(schema) or kind
    if isinstance(value, Mapping):
        if isinstance(value.get("url"), str) and (
            kind is not None or "content_type" in value or "file_name" in value
        ):
            found.append(_file(value, kind))
            return
        properties = schema.get("properties") if schema else None
        for name, item in value.items():
            child = properties.get(name) if isinstance(properties, Mapping) else None
            _walk(root, child, item, None, found, depth + 1)
    elif isinstance(value, list):
        items = schema.get("items") if schema else None
        for item in value:
            _walk(root, items, item, kind, found, depth + 1)


def _resolved(root: Mapping[str, Any], schema: Any, depth: int = 0) -> Mapping[str, Any]:
    """The schema to read: `$ref` followed; for `anyOf`/`oneOf`/`allOf`, the branch that
    names a file kind if one does (fal writes optional files as `anyOf: [File, null]`). The
    depth is shared by refs and branches alike: a schema that refers to itself ends here."""
    while depth < MAX_DEPTH:
        depth += 1
        if not isinstance(schema, Mapping):
            return {}
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/"):
            schema = _pointer(root, ref)
            continue
        for key in ("anyOf", "oneOf", "allOf"):
            branches = schema.get(key)
            if isinstance(branches, list):
                resolved = [_resolved(root, branch, depth) for branch in branches]
                for branch in resolved:
                    if _file_kind(branch):
                        return branch
                objects = [b for b in resolved if b.get("type") in ("object", "array")]
                if objects:
                    return objects[0]
        return schema
    return {}


def _pointer(root: Mapping[str, Any], ref: str) -> Any:
    target: Any = root
    for part in ref[2:].split("/"):
        target = target.get(part) if isinstance(target, Mapping) else None
    return target


def _file_kind(schema: Mapping[str, Any]) -> str | None:
    title = schema.get("title")
    if isinstance(title, str) and title.lower() in FILE_TITLES:
        properties = schema.get("properties")
        if not isinstance(properties, Mapping) or "url" in properties:
            return FILE_TITLES[title.lower()]
    return None


def _file(value: Mapping[str, Any], kind: str | None) -> dict[str, Any]:
    content_type = value.get("content_type")
    content_type = content_type if isinstance(content_type, str) else None
    if kind in (None, "file") and content_type:
        major = content_type.split("/", 1)[0]
        kind = major if major in ("image", "video", "audio") else "file"
    return {
        "url": value["url"],
        "content_type": content_type,
        "kind": kind or "file",
        "width": _number(value.get("width"), int),
        "height": _number(value.get("height"), int),
        "duration": _number(value.get("duration"), float),
        "file_name": value.get("file_name") if isinstance(value.get("file_name"), str) else None,
        "file_size": _number(value.get("file_size"), int),
    }


def _number(value: Any, kind: type[int] | type[float]) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return kind(value)
