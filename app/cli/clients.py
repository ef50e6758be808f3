"""`falrelay clients limits|show|list`: an operator's view of clients and their limits.

Output is JSON on stdout; messages go to stderr. Running processes pick up new limits when
their cached copy of a key expires (FALRELAY_API_KEY_CACHE_SECONDS).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Coroutine
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

import orjson

from app.cli import command
from app.clients import service
from app.clients.limits import LimitDefaults
from app.db.pool import Pool, run_with_pool
from app.settings import Settings

if TYPE_CHECKING:
    from falrelay.cli import Commands

# A value that puts a limit back to the setting's default.
DEFAULT = "default"


class _Default:
    """Parsed from `default`."""


def _or_default(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse_value(text: str) -> Any:
        if text.strip().lower() == DEFAULT:
            return _Default
        return parse(text)

    parse_value.__name__ = getattr(parse, "__name__", "value")
    return parse_value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text!r}")
    return value


def _count(minimum: int) -> Callable[[str], int]:
    def count(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}") from None
        if not minimum <= value <= 2**31 - 1:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {text!r}")
        return value

    return count


def _usd(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"must be an amount in dollars, not {text!r}") from None
    if not value.is_finite() or value < 0 or value >= Decimal("1e10"):
        raise argparse.ArgumentTypeError(f"must be an amount in dollars, not {text!r}")
    if value != value.quantize(Decimal("0.0001")):
        raise argparse.ArgumentTypeError("at most four decimal places")
    return value


# (flag, parser, help); the flag's name is the limit's.
_LIMIT_FLAGS: list[tuple[str, Callable[[str], Any], str]] = [
    ("requests-per-second", _positive_float, "sustained requests per second, across replicas"),
    ("burst", _count(1), "requests at once above the rate (default: one second's worth)"),
    ("max-endpoints", _count(0), "webhook endpoints the client may have"),
    ("max-queued-jobs", _count(0), "jobs waiting to be submitted to fal"),
    ("max-in-flight", _count(0), "jobs at fal at once (submitted or running)"),
    ("monthly-budget-usd", _usd, "dollars of estimated cost per calendar month (UTC)"),
    ("weight", _count(1), "share of contended capacity relative to other clients (default 1)"),
]


def add_clients(commands: Commands) -> None:
    clients = commands.add_parser(
        "clients", help="clients (tenants): their limits and usage (`limits`, `show`, `list`)"
    )
    add_arguments(clients)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="clients_command", required=True, metavar="COMMAND")
    limits = commands.add_parser(
        "limits",
        help="set a client's limits; prints the client as `show` does",
        description="Set limits on a client. Each takes a value, or `default` for the "
        "FALRELAY_DEFAULT_* setting (which may be unlimited). Limits not given stay as they are.",
    )
    limits.add_argument("name", help="the client's name (from `keys create NAME`) or id")
    for flag, parse, text in _LIMIT_FLAGS:
        limits.add_argument(f"--{flag}", type=_or_default(parse), metavar="N", help=text)
    limits.set_defaults(func=cmd_limits)

    show = commands.add_parser("show", help="a client's limits and current usage, as JSON")
    show.add_argument("name", help="the client's name or id")
    show.set_defaults(func=cmd_show)

    listing = commands.add_parser("list", help="every client, as JSON")
    listing.set_defaults(func=cmd_list)


def _print(document: Any) -> None:
    sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")


def _with_pool(work: Callable[[Pool], Coroutine[Any, Any, Any]]) -> Any:
    try:
        return run_with_pool(Settings().require_database_url(), work)
    except LookupError as exc:
        sys.stderr.write(f"falrelay: {exc}\n")
        raise SystemExit(1) from None


@command
def cmd_limits(args: argparse.Namespace) -> None:
    changes: dict[str, Any] = {}
    for flag, _, _ in _LIMIT_FLAGS:
        value = getattr(args, flag.replace("-", "_"))
        if value is not None:
            changes[flag.replace("-", "_")] = None if value is _Default else value
    if not changes:
        sys.stderr.write("falrelay: give at least one limit to set (see --help)\n")
        raise SystemExit(2)
    defaults = LimitDefaults.from_settings(Settings())

    async def work(pool: Pool) -> dict[str, Any]:
        row = await service.set_limits(pool, args.name, changes)
        return await service.show(pool, str(row["id"]), defaults)

    _print(_with_pool(work))
    seconds = Settings().api_key_cache_seconds
    sys.stderr.write(f"limits set; running processes apply them within {seconds:g} s\n")


@command
def cmd_show(args: argparse.Namespace) -> None:
    defaults = LimitDefaults.from_settings(Settings())
    _print(_with_pool(lambda pool: service.show(pool, args.name, defaults)))


@command
def cmd_list(args: argparse.Namespace) -> None:
    _print(_with_pool(service.list_all))
