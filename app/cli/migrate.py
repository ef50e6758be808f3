"""`falrelay migrate`: the database schema to this release's."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from app.cli import command, configured
from app.settings import Settings

if TYPE_CHECKING:
    from falrelay.cli import Commands


def add_migrate(commands: Commands) -> None:
    migrate = commands.add_parser("migrate", help="upgrade the database schema to this release")
    migrate.set_defaults(func=cmd_migrate)


@command
def cmd_migrate(args: argparse.Namespace) -> None:
    from app.db.migrate import head_revision, upgrade_to_head

    upgrade_to_head(configured(Settings()).require_database_url())
    print(f"database schema is at {head_revision()}", file=sys.stderr)
