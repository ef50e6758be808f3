"""`falrelay fakefal`: serve a fake fal, every knob a flag (its default from the environment)."""

from __future__ import annotations

import argparse
import sys
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import uvicorn
from pydantic import ValidationError

from app.cli import command, freeze_startup_heap
from app.fakefal.config import FakeFalConfig
from app.fakefal.server import FakeFal

if TYPE_CHECKING:
    from falrelay.cli import Commands

# (flag, type, nargs, help): one per knob of FakeFalConfig.
_KNOBS: list[tuple[str, type, str | None, str]] = [
    ("queue_latency", float, None, "seconds a request stays IN_QUEUE"),
    ("run_latency", float, None, "seconds a request stays IN_PROGRESS"),
    ("latency_scale", float, None, "runs also last the model's typical time at fal times this"),
    ("concurrency", int, None, "requests IN_PROGRESS at once (normal before low); default none"),
    ("error_rate", float, None, "share of requests (0..1) that complete with a model error"),
    ("error_types", str, "+", "failures error-rate draws from (validation, request_timeout, ...)"),
    ("submit_429_rate", float, None, "share of submits answered 429"),
    ("submit_5xx_rate", float, None, "share of submits answered with an nginx 502/503"),
    ("webhook_drop_rate", float, None, "share of webhooks never sent"),
    ("webhook_duplicate_rate", float, None, "share of webhooks sent twice"),
    ("webhook_delay", float, None, "extra seconds before a webhook is sent"),
    ("webhook_reorder", float, None, "random extra delay up to this many seconds"),
    ("payload_error_rate", float, None, "share of OK webhooks sent with payload null"),
    ("webhook_retry_delays", float, "*", "seconds before each retry of a failed webhook"),
    ("random_seed", int, None, "seed for reproducible fault runs"),
    ("billable_units", Decimal, None, "X-Fal-Billable-Units of a result (default: its images)"),
    ("user_id", str, None, "X-Fal-Webhook-User-Id of the webhooks"),
    ("stream_ping_interval", float, None, "seconds between ': ping' lines of a status stream"),
    ("max_requests", int, None, "requests remembered (oldest completed forgotten first)"),
    ("models", str, "*", "model ids served beyond falrelay's catalog (owner/app[/path])"),
    ("storage_max_bytes", int, None, "bytes of uploaded files kept (oldest dropped first)"),
]


def add_fakefal(commands: Commands) -> None:
    fakefal = commands.add_parser(
        "fakefal", help="the built-in fake fal on its own, for tests, demos and load runs"
    )
    add_arguments(fakefal)
    fakefal.set_defaults(func=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8001, help="port to listen on")
    shown = _environment_defaults()
    for name, kind, nargs, text in _KNOBS:
        env = f"FALRELAY_FAKEFAL_{name.upper()}"
        # default None: "not given", so the environment (read in `run`) applies.
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            type=kind,
            nargs=nargs,
            default=None,
            # argparse %-formats help: a "%" from the environment must not break --help.
            help=f"{text} (default {shown.get(name)!r}, env {env})".replace("%", "%%"),
        )


def config_from_args(args: argparse.Namespace) -> FakeFalConfig:
    """Flags given on the command line, the environment for the rest."""
    given = {name: getattr(args, name) for name, *_ in _KNOBS if getattr(args, name) is not None}
    try:
        return FakeFalConfig(**given)
    except ValidationError as exc:
        raise SystemExit(f"falrelay fakefal: invalid settings\n{exc}") from None


@command
def run(args: argparse.Namespace) -> None:
    fake = FakeFal(config_from_args(args))
    base = f"http://{args.host}:{args.port}"
    sys.stderr.write(
        f"fake fal on {base}\n"
        f"  queue    {base}/<owner>/<app>[/<path>]   (Authorization: Key <anything>)\n"
        f"  JWKS     {base}/.well-known/jwks.json\n"
        f"  control  {base}/_fake/config, /_fake/stats, /_fake/requests, /_fake/reset\n"
    )
    freeze_startup_heap()
    uvicorn.run(
        fake.app,
        host=args.host,
        port=args.port,
        lifespan="on",
        server_header=False,
        log_level="info",
    )


def _environment_defaults() -> dict[str, Any]:
    # A bad FALRELAY_FAKEFAL_* variable must not break `falrelay --help` or other commands:
    # fall back to the built-in defaults here; `run` reports the error.
    try:
        return FakeFalConfig().model_dump()
    except ValidationError:
        return {
            name: field.get_default(call_default_factory=True)
            for name, field in FakeFalConfig.model_fields.items()
        }
