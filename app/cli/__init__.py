"""The server's `falrelay` commands, one module per command group.

The `falrelay` command itself is the SDK's (falrelay.cli), which holds the client commands
(`submit`, `jobs`). It finds the commands here through pyproject.toml's entry points in the group
`falrelay.commands`: one per command, naming the function of its module that adds it to the
parser. A command's heavy imports stay inside its functions.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable, Sequence

from app.settings import MissingSetting, Settings

Command = Callable[[argparse.Namespace], None]


def command(func: Command) -> Command:
    """A server command: a setting it needs and lacks (FALRELAY_DATABASE_URL...) is said in one
    line, exit 2, rather than as a traceback."""

    @functools.wraps(func)
    def run(args: argparse.Namespace) -> None:
        try:
            func(args)
        except MissingSetting as exc:
            print(f"falrelay: {exc}", file=sys.stderr)
            raise SystemExit(2) from None

    return run


def configured(settings: Settings) -> Settings:
    """`settings`, with logging set up by them."""
    from app import logs

    logs.configure(level=settings.log_level, fmt=settings.log_format, secrets=settings.secrets())
    return settings


def build_parser() -> argparse.ArgumentParser:
    """The whole `falrelay` command as installed: the SDK's commands and these."""
    from falrelay import cli

    return cli.build_parser()


def main(argv: Sequence[str] | None = None) -> None:
    from falrelay import cli

    cli.main(argv)
