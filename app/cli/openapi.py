"""`falrelay openapi`: the API's OpenAPI document, as the service serves it."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

import orjson

from app.cli import command
from app.settings import Settings

if TYPE_CHECKING:
    from falrelay.cli import Commands


def add_openapi(commands: Commands) -> None:
    openapi = commands.add_parser("openapi", help="print the OpenAPI document")
    openapi.set_defaults(func=cmd_openapi)


@command
def cmd_openapi(args: argparse.Namespace) -> None:
    from app.main import create_app

    document = create_app(Settings()).openapi()
    sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
