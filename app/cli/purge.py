"""`falrelay purge --older-than DURATION [--dry-run]`: retention on demand.

Deletes what the retention loop would, with `--older-than` in place of FALRELAY_RETENTION_DAYS,
in the same batches (safe beside live traffic, and beside the loop of any replica), and prints
what it removed. The files go through the store named by FALRELAY_STORAGE_URL; without one, the
keys stay in the outbox for a worker that has the store.
"""

from __future__ import annotations

import argparse
import re
import sys
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from app.cli import command
from app.db.pool import Pool, run_with_pool
from app.lifecycle import purge
from app.lifecycle.retention import REST
from app.settings import Settings
from app.storage import open_store

if TYPE_CHECKING:
    from falrelay.cli import Commands

_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> timedelta:
    """`30d`, `12h`, `90m`, `45s`, `2w` (a number, then one unit)."""
    match = _DURATION.fullmatch(text)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration: a number and a unit, e.g. 30d, 12h, 90m"
        )
    return timedelta(seconds=float(match[1]) * _UNIT_SECONDS[match[2]])


def add_purge(commands: Commands) -> None:
    purge = commands.add_parser(
        "purge",
        help="delete jobs finished before --older-than, with their events, deliveries and files",
    )
    add_arguments(purge)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--older-than",
        type=parse_duration,
        required=True,
        metavar="DURATION",
        help="delete jobs that finished longer ago than this: 30d, 12h, 90m",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="count what would be deleted; change nothing"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        metavar="N",
        help="jobs per transaction (default FALRELAY_RETENTION_BATCH_SIZE, 500)",
    )
    parser.set_defaults(func=run)


@command
def run(args: argparse.Namespace) -> None:
    settings = Settings()
    now = datetime.now(UTC)
    cutoff = now - args.older_than
    batch_size = args.batch_size or settings.retention_batch_size

    async def work(pool: Pool) -> purge.Removed:
        if args.dry_run:
            return await purge.count(pool, cutoff, now=now)
        store = await open_store(settings, pool)
        try:
            return await purge.purge(
                pool,
                cutoff,
                now=now,
                batch_size=batch_size,
                store=store,
                copy_lease_seconds=settings.mirror_lease_seconds,
                rest=REST,
            )
        finally:
            if store is not None:
                await store.aclose()

    removed = run_with_pool(settings.require_database_url(), work)
    sys.stdout.write(report(removed, cutoff, dry_run=args.dry_run) + "\n")


def report(removed: purge.Removed, cutoff: datetime, *, dry_run: bool) -> str:
    when = cutoff.isoformat(timespec="seconds").replace("+00:00", "Z")
    verb = "would delete" if dry_run else "deleted"
    lines = [f"jobs finished before {when}: {verb}"]
    rows = [
        ("jobs", removed.jobs, ""),
        ("events", removed.events, ""),
        ("deliveries", removed.deliveries, ""),
        ("delivery_attempts", removed.delivery_attempts, ""),
        ("console_sessions", removed.console_sessions, "expired"),
    ]
    if dry_run:
        rows.append(("files", removed.files, "mirrored files and thumbnails"))
    else:
        rows.append(("files", removed.files, "deleted from the store"))
        rows.append(
            ("files_pending", removed.files_pending, "in the outbox, for the retention loop")
        )
    for name, value, note in rows:
        lines.append(f"  {name:<18} {value:>12,}" + (f"  ({note})" if note else ""))
    if dry_run:
        lines.append("nothing was changed (--dry-run)")
    return "\n".join(lines)
