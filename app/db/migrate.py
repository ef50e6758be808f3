"""Alembic, driven from code: `falrelay migrate`, `falrelay dev`, the tests and `/readyz`."""

from __future__ import annotations

import threading
from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

import migrations


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    # Passed as an attribute, not a main option: ConfigParser interpolation breaks on the `%2F`
    # of a URL-encoded socket path.
    config.attributes["database_url"] = database_url
    return config


# Alembic's `context` and `op` are process-wide proxies: two upgrades in threads of one process
# would share them (and deadlock on each other's locks), so they take turns.
_one_at_a_time = threading.Lock()


def upgrade_to_head(database_url: str) -> None:
    """Blocking; from async code run it with `asyncio.to_thread` (env.py runs its own loop)."""
    with _one_at_a_time:
        command.upgrade(alembic_config(database_url), "head")


@cache
def known_revisions() -> frozenset[str]:
    script = ScriptDirectory.from_config(alembic_config(""))
    return frozenset(revision.revision for revision in script.walk_revisions())


def schema_is_usable(current: str | None) -> bool:
    """At this release's head, or at a revision this release does not know: a newer one,
    migrated by the next release during a rolling upgrade (migrations only add, so the old
    code keeps working). Behind the head, this release's queries would fail."""
    return current is not None and (current == head_revision() or current not in known_revisions())


@cache
def head_revision() -> str:
    heads = ScriptDirectory.from_config(alembic_config("")).get_heads()
    if len(heads) != 1:
        raise RuntimeError(f"migrations must have exactly one head, found {heads}")
    return heads[0]
