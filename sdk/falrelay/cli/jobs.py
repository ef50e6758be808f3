"""`falrelay jobs delete JOB_ID...`: delete finished jobs through the API, with the SDK.

Exit codes: 0 every job was deleted, 1 some job was not (unknown, or not finished: the
problem's detail on stderr), 2 no answer from the service or no API key.
"""

from __future__ import annotations

import argparse
import sys

from falrelay.cli import connection
from falrelay.cli.connection import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="jobs_command", required=True, metavar="COMMAND")
    delete = commands.add_parser(
        "delete",
        help="delete finished jobs with their events, deliveries and files",
        description="Delete finished jobs (DELETE /v1/jobs/{id}) with their events, webhook "
        "deliveries and mirrored files. An unfinished job is refused: cancel it first.",
    )
    delete.add_argument("ids", nargs="+", metavar="JOB_ID", help="job_...")
    connection.add_arguments(delete)
    delete.set_defaults(func=cmd_delete)


def cmd_delete(args: argparse.Namespace) -> None:
    from falrelay import APIConnectionError, APIError, Client

    try:
        key = connection.api_key(args)
    except UsageError as exc:
        sys.stderr.write(f"falrelay: {exc}\n")
        raise SystemExit(2) from None
    url = connection.service_url(args)
    code = 0
    with Client(key, base_url=url) as client:
        for job_id in args.ids:
            try:
                client.jobs.delete(job_id)
            except APIError as exc:
                sys.stderr.write(f"falrelay: {job_id} not deleted: {exc}\n")
                code = 1
            except APIConnectionError as exc:
                sys.stderr.write(f"falrelay: no answer from {url}: {exc}\n")
                raise SystemExit(2) from None
            else:
                sys.stdout.write(f"deleted {job_id}\n")
    raise SystemExit(code)
