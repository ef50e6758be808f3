"""`falrelay submit`: a job through the API with the SDK, its progress, and its image.

Exit codes: 0 the job succeeded (or was only submitted), 1 it failed, was canceled or did not
finish in time, 2 a usage or API error (the problem's details on stderr). With `--json`,
stdout carries the final job as JSON and nothing else; progress always goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import httpx

from falrelay import APIConnectionError, APIError, AsyncClient, FalrelayError, Job

DEFAULT_URL = "http://127.0.0.1:8000"
# Where `falrelay dev` (run from this directory with its default --data-dir) keeps its key.
DEV_KEY_FILE = Path(".falrelay") / "dev-api-key"
DEFAULT_TIMEOUT = 600.0


class UsageError(Exception):
    """Exit 2 with this message."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", help="what the image shows")
    parser.add_argument("--aspect-ratio", help="e.g. 1:1 (the default), 16:9, 9:16, 4:3")
    parser.add_argument("--resolution", help="1K or 2K (the default)")
    parser.add_argument("--seed", type=int, help="the same seed gives the same image")
    parser.add_argument("--reasoning", help="low (the default) or high")
    parser.add_argument(
        "--metadata",
        action="append",
        type=_pair,
        default=[],
        metavar="KEY=VALUE",
        help="a metadata pair for the job (repeatable)",
    )
    parser.add_argument("--model", help="a model id from GET /v1/models (default: the service's)")
    parser.add_argument("--wait", action="store_true", help="follow the job until it finishes")
    parser.add_argument(
        "--out",
        type=Path,
        metavar="FILE",
        help="download the image here (implies --wait; several images: FILE-1, FILE-2, ...)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the final job as JSON on stdout, nothing else"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"how long --wait waits (default {DEFAULT_TIMEOUT:g})",
    )
    parser.add_argument("--url", help=f"the service (default: FALRELAY_URL, else {DEFAULT_URL})")
    parser.add_argument(
        "--key",
        help=f"API key (default: FALRELAY_API_KEY, else ./{DEV_KEY_FILE} from falrelay dev)",
    )


def _pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


def run(args: argparse.Namespace) -> None:
    try:
        code = asyncio.run(submit(args))
    except UsageError as exc:
        _err(f"falrelay: {exc}")
        code = 2
    except APIError as exc:
        _err(f"falrelay: the API refused: {exc}")
        if exc.request_id:
            _err(f"  (request id {exc.request_id})")
        code = 2
    except APIConnectionError as exc:
        _err(f"falrelay: no answer from {_url(args)}: {exc}")
        _err("  Is the service running there? Start one with `falrelay dev`, or pass --url.")
        code = 2
    except FalrelayError as exc:
        _err(f"falrelay: {exc}")
        code = 2
    raise SystemExit(code)


async def submit(args: argparse.Namespace) -> int:
    job_input: dict[str, Any] = {"prompt": args.prompt}
    for name in ("aspect_ratio", "resolution", "seed", "reasoning"):
        if getattr(args, name) is not None:
            job_input[name] = getattr(args, name)
    waiting = args.wait or args.out is not None
    async with AsyncClient(_key(args), base_url=_url(args)) as client:
        job = await client.jobs.create(
            job_input, model=args.model, metadata=dict(args.metadata) or None
        )
        if waiting:
            job = await _follow(client, job, Progress(job, sys.stderr), args.timeout)
    saved = await _download(job, args.out) if args.out is not None and _succeeded(job) else []
    _report(job, saved, waiting=waiting, as_json=args.json)
    if not waiting or _succeeded(job):
        return 0
    return 1


async def _follow(client: AsyncClient, job: Job, progress: Progress, within: float) -> Job:
    """The job once finished (or as it stands after `within` seconds), its states shown as
    they come."""
    ticking = asyncio.create_task(progress.tick()) if progress.tty else None
    try:
        async with asyncio.timeout(within):
            async with contextlib.aclosing(client.jobs.events(job.id)) as events:
                async for event in events:
                    job = event.data
                    progress.show(job)
    except TimeoutError:
        job = await client.jobs.get(job.id)
    finally:
        if ticking is not None:
            ticking.cancel()
        progress.close()
    if not job.is_terminal:
        job = await client.jobs.get(job.id)
    if not job.is_terminal:
        _err(f"falrelay: {job.id} is still {job.status} after {within:g} s")
    return job


class Progress:
    """queued → submitted → running → succeeded on stderr: one line rewritten in place on a
    terminal (with the seconds so far), one line per change otherwise (logs, pipes)."""

    def __init__(self, job: Job, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.job_id = job.id
        self.states: list[str] = []
        self.started = time.monotonic()
        self.show(job)

    def show(self, job: Job) -> None:
        status = str(job.status)
        if self.states and self.states[-1] == status:
            return
        self.states.append(status)
        if self.tty:
            self._render()
        else:
            self.stream.write(f"{self.job_id} {status} ({self._elapsed():.1f} s)\n")
            self.stream.flush()

    async def tick(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            self._render()

    def close(self) -> None:
        if self.tty:
            self._render()
            self.stream.write("\n")
            self.stream.flush()

    def _render(self) -> None:
        line = f"{self.job_id}  {' → '.join(self.states)}  {self._elapsed():.1f} s"
        self.stream.write("\r\x1b[K" + line)
        self.stream.flush()

    def _elapsed(self) -> float:
        return time.monotonic() - self.started


def _succeeded(job: Job) -> bool:
    return job.status == "succeeded"


def output_paths(out: Path, count: int) -> list[Path]:
    """FILE for one image; FILE-1, FILE-2, ... (before the suffix) for several."""
    if count == 1:
        return [out]
    return [out.with_name(f"{out.stem}-{n}{out.suffix}") for n in range(1, count + 1)]


async def _download(job: Job, out: Path) -> list[Path]:
    images = job.images
    paths = output_paths(out, len(images))
    # A client of its own, without the API key: image URLs may point anywhere (fal's CDN).
    async with httpx.AsyncClient(timeout=60.0, follow_redirects=True) as http:
        for image, path in zip(images, paths, strict=True):
            try:
                response = await http.get(image.url)
                response.raise_for_status()
            except httpx.HTTPError as exc:
                raise FalrelayError(f"could not download {image.url}: {exc}") from exc
            path.write_bytes(response.content)
    return paths


def _report(job: Job, saved: list[Path], *, waiting: bool, as_json: bool) -> None:
    if as_json:
        _out(json.dumps(job.model_dump(mode="json"), indent=2, ensure_ascii=False))
        for path in saved:
            _err(f"saved {path}")
    elif not waiting:
        _out(job.id)
    elif _succeeded(job):
        for line in [str(path) for path in saved] or [image.url for image in job.images]:
            _out(line)
    if waiting and job.is_terminal and not _succeeded(job):
        reason = f": {job.error.type}: {job.error.message}" if job.error else ""
        _err(f"falrelay: {job.id} {job.status}{reason}")


def _out(line: str) -> None:
    sys.stdout.write(line + "\n")


def _err(line: str) -> None:
    sys.stderr.write(line + "\n")


def _url(args: argparse.Namespace) -> str:
    url: str = args.url or os.environ.get("FALRELAY_URL") or DEFAULT_URL
    return url


def _key(args: argparse.Namespace) -> str:
    key: str | None = args.key or os.environ.get("FALRELAY_API_KEY")
    if key:
        return key
    if DEV_KEY_FILE.is_file():
        return DEV_KEY_FILE.read_text().strip()
    raise UsageError(
        f"no API key: pass --key, set FALRELAY_API_KEY, or run `falrelay dev` here "
        f"(it writes ./{DEV_KEY_FILE})"
    )
