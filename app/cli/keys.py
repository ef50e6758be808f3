"""`falrelay keys create|revoke`: API keys from an operator's shell."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING

from app.cli import command
from app.settings import Settings

if TYPE_CHECKING:
    from falrelay.cli import Commands


def add_keys(commands: Commands) -> None:
    keys = commands.add_parser("keys", help="API keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")
    create = key_commands.add_parser(
        "create", help="create a client and its API key; prints only the key on stdout"
    )
    create.add_argument("name", help="a name for the client, e.g. the calling service")
    create.set_defaults(func=cmd_keys_create)
    revoke = key_commands.add_parser("revoke", help="revoke an API key")
    revoke.add_argument("key", help="the key, or - to read it from stdin (keeps it out of ps)")
    revoke.set_defaults(func=cmd_keys_revoke)


async def _create_key(database_url: str, name: str) -> str:
    from app.auth import service
    from app.db.pool import create_pool

    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        client_id, key = await service.create_client(pool, name)
    finally:
        await pool.close()
    print(f"created client {name!r} ({client_id}); the key is shown once", file=sys.stderr)
    return key


@command
def cmd_keys_create(args: argparse.Namespace) -> None:
    key = asyncio.run(_create_key(Settings().require_database_url(), args.name))
    print(key)


async def _revoke_key(database_url: str, key: str) -> bool:
    from app.auth import service
    from app.db.pool import create_pool

    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        return await service.revoke_key(pool, key)
    finally:
        await pool.close()


@command
def cmd_keys_revoke(args: argparse.Namespace) -> None:
    key = args.key if args.key != "-" else sys.stdin.readline().strip()
    if not asyncio.run(_revoke_key(Settings().require_database_url(), key)):
        print("falrelay: no active key matches (already revoked, or never made)", file=sys.stderr)
        raise SystemExit(1)
    print(
        "revoked; processes that checked it in the last "
        f"{Settings().api_key_cache_seconds:g} s may accept it until then",
        file=sys.stderr,
    )
