"""The server's `falrelay` commands, one module per command group.

The `falrelay` command itself is the SDK's (falrelay.cli), which holds the client commands
(`submit`, `jobs`). It finds the commands here through pyproject.toml's entry points in the group
`falrelay.commands`: one per command, naming the function of its module that adds it to the
parser. A command's heavy imports stay inside its functions.
"""

from __future__ import annotations

import argparse
import functools
import gc
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


def freeze_startup_heap() -> None:
    """What start-up built (the imported modules, the app, its routes, models and schemas: about
    155,000 objects) lives as long as the process. Frozen, it leaves the collector's full passes,
    which otherwise re-scan all of it: 107 ms a pass before, under 0.1 ms after, measured on
    `create_app` (the delivery worker spent 17 % of its CPU in collections, 12 full passes of
    about 94 ms each, in a 20,000-delivery run). The fake fal's full passes, over a heap that also
    holds every request it remembers, took 0.26 s of its 7.1 s of CPU in the end-to-end
    benchmark; 0.09 s frozen, its CPU per job 0.64 -> 0.56 ms at 500 jobs/s."""
    gc.collect()
    gc.freeze()
    # Young collections a tenth as often: a claim decodes a hundred-odd rows at once, each
    # with its payload's dicts and lists, and at Python's 700 a collection ran every few
    # claims, promoting rows still in flight to the older generations for their full passes
    # to scan again. Measured on the delivery worker in the fan-out benchmark: 4.0 % of its
    # CPU in collections (py-spy --native), none seen at 10,000.
    gc.set_threshold(10_000, 10, 10)
