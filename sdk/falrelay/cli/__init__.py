"""The `falrelay` command.

The SDK owns the name and its client commands (`submit`, `jobs`). The server (the
`falrelay-server` distribution) adds its own (`dev`, `serve`, `migrate`...) through the entry
point group `falrelay.commands`: each entry is named for its command, and its object takes
argparse's subparsers and adds that command to them. Entry points are read only for a command
that is not the SDK's own, or for the full listing, so `falrelay submit` never imports the
server, and a client service's own `app` package is never mistaken for it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint, EntryPoints

    # What a command's registration gets: argparse's subparsers, to add its parser to.
    Commands = argparse._SubParsersAction[argparse.ArgumentParser]

ENTRY_POINTS = "falrelay.commands"
# The server's commands, named here to say where they come from when it is not installed, and
# to list them in this order (the newcomer's first, then the production processes, then the
# operator's tools) rather than the entry points' alphabetical one.
SERVER_COMMANDS = (
    "dev",
    "serve",
    "api",
    "worker",
    "fakefal",
    "migrate",
    "keys",
    "clients",
    "models",
    "purge",
    "openapi",
)
SERVER_INSTALL = "pip install falrelay-server, or from falrelay's repository pip install -e ."


def _add_jobs(commands: Commands) -> None:
    from falrelay.cli import jobs

    jobs.add_arguments(commands.add_parser("jobs", help="jobs through the API: `delete`"))


def _add_submit(commands: Commands) -> None:
    from falrelay.cli import submit

    parser = commands.add_parser(
        "submit", help="create a job through the API; --wait follows it, --out saves the image"
    )
    submit.add_arguments(parser)
    parser.set_defaults(func=submit.run)


OWN_COMMANDS: dict[str, Callable[[Commands], None]] = {"jobs": _add_jobs, "submit": _add_submit}


def build_parser(
    command: str | None = None, *, server: EntryPoints | None = None
) -> argparse.ArgumentParser:
    """The parser for `command` alone when it is the SDK's own (no entry point is read), else
    for every command installed; `server`: the entry points, when the caller has read them."""
    parser = argparse.ArgumentParser(
        prog="falrelay",
        description="A durable jobs API in front of fal.ai's queue.",
        formatter_class=argparse.RawDescriptionHelpFormatter,  # the epilog's lines as written
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    own = OWN_COMMANDS.get(command or "")
    if own is not None:
        own(commands)
        return parser
    if server is None:
        server = _server_entries()
    # The command asked for alone; else (the listing, or a command no one registers, which
    # argparse refuses with the list of those it knows) every one.
    named = [entry for entry in server if entry.name == command]
    for entry in named or sorted(server, key=_listed):
        entry.load()(commands)
    for add in OWN_COMMANDS.values():
        add(commands)
    if not server:
        parser.epilog = "\n".join(
            [
                "The server's commands come with the server, falrelay-server:",
                f"  {', '.join(SERVER_COMMANDS)}",
                f"  ({SERVER_INSTALL})",
            ]
        )
    return parser


def _server_entries() -> EntryPoints:
    from importlib.metadata import entry_points

    return entry_points(group=ENTRY_POINTS)


def _listed(entry: EntryPoint) -> tuple[int, str]:
    known = entry.name in SERVER_COMMANDS
    return (SERVER_COMMANDS.index(entry.name) if known else len(SERVER_COMMANDS), entry.name)


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    # The top level takes no option but --help, so a first word is the command.
    command = argv[0] if argv and not argv[0].startswith("-") else None
    server = None
    if command in SERVER_COMMANDS:
        server = _server_entries()
        if command not in server.names:
            sys.stderr.write(f"falrelay: `{command}` comes with the server: {SERVER_INSTALL}\n")
            raise SystemExit(2)
    args = build_parser(command, server=server).parse_args(argv)
    try:
        args.func(args)
    except KeyboardInterrupt:
        raise SystemExit(130) from None
