"""`falrelay models list|import|remove`: the catalog from an operator's shell.

`import` takes the OpenAPI document fal publishes for a model endpoint (or a catalog entry
already in falrelay's own form), says what it understood, and stores it in Postgres, where every
running process finds it (at once for new jobs, within a refresh period for everything else).
fal's document carries no price, so `--price` is required for one.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Coroutine
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from app.catalog import fal_openapi, registry
from app.catalog.files import KINDS
from app.catalog.pricing import PriceUnit
from app.catalog.registry import shipped_models
from app.catalog.spec import EntryInvalid, ModelSpec, from_document
from app.cli import command
from app.db.pool import Pool, run_with_pool
from app.settings import Settings

if TYPE_CHECKING:
    from falrelay.cli import Commands


def add_models(commands: Commands) -> None:
    models = commands.add_parser(
        "models", help="the model catalog: `list`, `import` a fal model, `remove`"
    )
    add_arguments(models)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="models_command", required=True, metavar="COMMAND")

    listing = commands.add_parser("list", help="the catalog: shipped and imported models")
    listing.add_argument("--json", action="store_true", help="the full entries, as JSON")
    listing.set_defaults(func=cmd_list)

    imported = commands.add_parser(
        "import",
        help="add a model from fal's OpenAPI document for it",
        description="Add (or replace) a model from the OpenAPI document fal publishes for its "
        "endpoint (https://fal.ai/api/openapi/queue/openapi.json?endpoint_id=<id>), saved to a "
        "file, or from a catalog entry in falrelay's own form. Prints what it understood.",
    )
    imported.add_argument("file", type=Path, help="the saved document (- for stdin)")
    imported.add_argument(
        "--price",
        metavar="UNIT:USD",
        help="fal's price from the model's page: image:0.04, megapixel:0.003 or second:0.056",
    )
    imported.add_argument(
        "--price-by-resolution",
        metavar="RES=USD,...",
        help="per-image prices by the input's resolution, e.g. 1K=0.03,2K=0.05",
    )
    imported.add_argument(
        "--typical-units",
        metavar="N",
        help="units a job with default input uses (megapixels of the default image, seconds "
        "of the default video); 1 if not given",
    )
    imported.add_argument(
        "--typical-seconds", type=float, metavar="S", help="typical run time at fal"
    )
    imported.add_argument(
        "--dry-run", action="store_true", help="say what would be imported, store nothing"
    )
    imported.set_defaults(func=cmd_import)

    remove = commands.add_parser("remove", help="remove an imported model")
    remove.add_argument("id", help="the model id")
    remove.set_defaults(func=cmd_remove)


@command
def cmd_list(args: argparse.Namespace) -> None:
    imported = _imported_documents()
    models = {**shipped_models(), **_specs(imported)}
    if args.json:
        _print_json([models[model_id].document() for model_id in sorted(models)])
        return
    for model_id in sorted(models):
        spec = models[model_id]
        origin = "imported" if model_id in imported else "shipped"
        sys.stdout.write(
            f"{spec.id}  {spec.category or '-'}  {_price_text(spec)}  ({origin})  {spec.title}\n"
        )
    if not Settings().database_url:
        sys.stderr.write("FALRELAY_DATABASE_URL is not set: imported models are not listed\n")


@command
def cmd_import(args: argparse.Namespace) -> None:
    raw = sys.stdin.buffer.read() if str(args.file) == "-" else args.file.read_bytes()
    try:
        document = _entry(json.loads(raw), args)
        spec = from_document(document)
    except (ValueError, EntryInvalid) as exc:
        sys.stderr.write(f"falrelay: cannot import {args.file}: {exc}\n")
        raise SystemExit(1) from None
    sys.stdout.write(_report(spec))
    if args.dry_run:
        sys.stderr.write("dry run: nothing was stored\n")
        return
    created = _with_pool(lambda pool: registry.save_imported(pool, spec))
    replaced = "replaces the shipped entry" if spec.id in shipped_models() else ""
    verb = "imported" if created else "updated"
    sys.stderr.write(f"{verb} {spec.id}{'; ' + replaced if replaced else ''}\n")


@command
def cmd_remove(args: argparse.Namespace) -> None:
    removed = _with_pool(lambda pool: registry.remove_imported(pool, args.id))
    if not removed:
        shipped = " (a shipped model cannot be removed)" if args.id in shipped_models() else ""
        sys.stderr.write(f"falrelay: no imported model {args.id!r}{shipped}\n")
        raise SystemExit(1)
    sys.stderr.write(f"removed {args.id}; jobs already accepted keep running\n")


def _entry(document: Any, args: argparse.Namespace) -> dict[str, Any]:
    price = _price(args)
    if isinstance(document, dict) and "input_schema" in document:
        entry = dict(document)  # falrelay's own form, as `models list --json` prints it
        if price is not None:
            entry["price"] = price
        if args.typical_seconds is not None:
            entry["typical_seconds"] = args.typical_seconds
        return entry
    if price is None:
        raise EntryInvalid(
            "fal's document carries no price: give --price (or --price-by-resolution) from "
            "the model's page"
        )
    return fal_openapi.entry_from_openapi(
        document, price=price, typical_seconds=args.typical_seconds
    )


def _price(args: argparse.Namespace) -> dict[str, Any] | None:
    price: dict[str, Any] | None = None
    if args.price_by_resolution:
        prices = {}
        for pair in args.price_by_resolution.split(","):
            name, _, amount = pair.partition("=")
            prices[name.strip()] = _amount(amount)
        price = {"unit": PriceUnit.IMAGE.value, "by_resolution": prices}
    elif args.price:
        unit, _, amount = args.price.partition(":")
        price = {"unit": unit.strip(), "unit_price_usd": _amount(amount)}
    if price is not None and args.typical_units is not None:
        price["typical_units"] = _amount(args.typical_units)
    return price


def _amount(text: str) -> str:
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise EntryInvalid(f"{text!r} is not an amount") from None
    return format(value, "f")


def _report(spec: ModelSpec) -> str:
    schema = spec.input_schema
    required = set(schema.get("required") or [])
    files = {field.name: field for field in spec.file_inputs}
    lines = [
        f"model      {spec.id}",
        f"title      {spec.title}",
        f"category   {spec.category or '-'}",
        f"price      {_price_text(spec)}",
        f"run time   about {spec.typical_seconds:g} s",
        "input",
    ]
    for name, field in (schema.get("properties") or {}).items():
        facts = [str(field.get("type") or "value") if isinstance(field, dict) else "value"]
        if name in required:
            facts.append("required")
        if name in files:
            accepts = files[name].accepts[0] + "*" if files[name].accepts else "any file"
            facts.append(f"file input ({accepts}{', several' if files[name].many else ''})")
        lines.append(f"  {name}: {', '.join(facts)}")
    lines.append("output")
    for name in spec.output_schema.get("properties") or {}:
        lines.append(f"  {name}{_output_kind(spec, name)}")
    return "\n".join(lines) + "\n"


def _output_kind(spec: ModelSpec, name: str) -> str:
    """` (image files)` for an output field that holds files, found as the job's files are."""
    text = json.dumps(spec.output_schema["properties"][name])
    definitions = spec.output_schema.get("$defs") or {}
    for definition, schema in definitions.items():
        title = str(schema.get("title", definition)).lower() if isinstance(schema, dict) else ""
        if f'"#/$defs/{definition}"' in text and title in KINDS:
            return f" ({title} files)"
    return ""


def _price_text(spec: ModelSpec) -> str:
    price = spec.price
    if price.by_resolution:
        per = ", ".join(f"{name} ${amount}" for name, amount in price.by_resolution.items())
        return f"per image: {per}"
    return f"${price.unit_price_usd} per {price.unit.value}"


def _specs(documents: dict[str, Any]) -> dict[str, ModelSpec]:
    specs = {}
    for model_id, document in documents.items():
        try:
            specs[model_id] = from_document(document)
        except EntryInvalid as exc:
            sys.stderr.write(f"falrelay: imported model {model_id} is unusable: {exc}\n")
    return specs


def _imported_documents() -> dict[str, Any]:
    if not Settings().database_url:
        return {}
    rows: list[tuple[str, Any]] = _with_pool(registry.imported_documents)
    return dict(rows)


def _print_json(document: Any) -> None:
    sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")


def _with_pool(work: Callable[[Pool], Coroutine[Any, Any, Any]]) -> Any:
    return run_with_pool(Settings().require_database_url(), work)
