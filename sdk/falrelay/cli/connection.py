"""Which service a client command talks to, and with which API key: `--url` and `--key`, else
FALRELAY_URL and FALRELAY_API_KEY, else `falrelay dev`'s defaults in this directory."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

DEFAULT_URL = "http://127.0.0.1:8000"
# Where `falrelay dev` (run from this directory with its default --data-dir) keeps its key.
DEV_KEY_FILE = Path(".falrelay") / "dev-api-key"


class UsageError(Exception):
    """Exit 2 with this message."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help=f"the service (default: FALRELAY_URL, else {DEFAULT_URL})")
    parser.add_argument(
        "--key",
        help=f"API key (default: FALRELAY_API_KEY, else ./{DEV_KEY_FILE} from falrelay dev)",
    )


def service_url(args: argparse.Namespace) -> str:
    url: str = args.url or os.environ.get("FALRELAY_URL") or DEFAULT_URL
    return url


def api_key(args: argparse.Namespace) -> str:
    key: str | None = args.key or os.environ.get("FALRELAY_API_KEY")
    if key:
        return key
    if DEV_KEY_FILE.is_file():
        return DEV_KEY_FILE.read_text().strip()
    raise UsageError(
        f"no API key: pass --key, set FALRELAY_API_KEY, or run `falrelay dev` here "
        f"(it writes ./{DEV_KEY_FILE})"
    )
