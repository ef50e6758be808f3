"""`falrelay jobs delete JOB_ID...`: delete finished jobs through the API, with the SDK.

Exit codes: 0 every job was deleted, 1 some job was not (unknown, or not finished: the
problem's detail on stderr), 2 no answer from the service or no API key.
"""

from __future__ import annotations

import argparse
import sys

# The same --url and --key resolution as `falrelay submit`.
from app.submit import DEFAULT_URL, DEV_KEY_FILE, UsageError, _key, _url
from falrelay import APIConnectionError, APIError, Client


def add_arguments(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="jobs_command", required=True, metavar="COMMAND")
    delete = commands.add_parser(
        "delete",
        help="delete finished jobs with their events, deliveries and files",
        description="Delete finished jobs (DELETE /v1/jobs/{id}) with their events, webhook "
        "deliveries and mirrored files. An unfinished job is refused: cancel it first.",
    )
    delete.add_argument("ids", nargs="+", metavar="JOB_ID", help="job_...")
    delete.add_argument("--url", help=f"the service (default: FALRELAY_URL, else {DEFAULT_URL})")
    delete.add_argument(
        "--key",
        help=f"API key (default: FALRELAY_API_KEY, else ./{DEV_KEY_FILE} from falrelay dev)",
    )
    delete.set_defaults(func=cmd_delete)


def cmd_delete(args: argparse.Namespace) -> None:
    try:
        key = _key(args)
    except UsageError as exc:
        sys.stderr.write(f"falrelay: {exc}\n")
        raise SystemExit(2) from None
    code = 0
    with Client(key, base_url=_url(args)) as client:
        for job_id in args.ids:
            try:
                client.jobs.delete(job_id)
            except APIError as exc:
                sys.stderr.write(f"falrelay: {job_id} not deleted: {exc}\n")
                code = 1
            except APIConnectionError as exc:
                sys.stderr.write(f"falrelay: no answer from {_url(args)}: {exc}\n")
                raise SystemExit(2) from None
            else:
                sys.stdout.write(f"deleted {job_id}\n")
    raise SystemExit(code)
