"""`falrelay submit`: a job of any model through the API with the SDK, its progress, and its
files (images, videos, sounds...).

The input is built from, in this order (a later source overrides a key of an earlier one):
`--input-json` (a whole input object), the prompt and the ImagineArt convenience flags
(`--aspect-ratio`...), then each `--input KEY=VALUE`.

Exit codes: 0 the job succeeded (or was only submitted), 1 it failed, was canceled or did not
finish in time, 2 a usage or API error (the problem's details on stderr). With `--json`,
stdout carries the final job as JSON and nothing else; progress always goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import json
import os
import sys
import time
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from falrelay.cli import connection
from falrelay.cli.connection import UsageError

# httpx and the client are imported where they are used: `falrelay submit --help` needs neither.
if TYPE_CHECKING:
    import httpx

    from falrelay import AsyncClient, File, Job

DEFAULT_TIMEOUT = 600.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", nargs="?", help="the input's `prompt` (what the image shows)")
    parser.add_argument(
        "--input",
        action="append",
        type=_pair,
        default=[],
        metavar="KEY=VALUE",
        help="an input field (repeatable): VALUE is read as JSON when it is JSON (42, true, "
        '{"w": 1}), else as text, and as text wherever the --model\'s input schema takes '
        "text; @PATH sends a local file as a data: URI; a KEY ending in _urls given more than "
        "once makes a list",
    )
    parser.add_argument(
        "--input-json",
        metavar="FILE",
        help="the whole input as a JSON object, from FILE (- reads stdin)",
    )
    # ImagineArt's fields as flags, from before any model could run.
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
    parser.add_argument(
        "--model", help="a model id from `GET /v1/models` (default: the service's default model)"
    )
    parser.add_argument("--wait", action="store_true", help="follow the job until it finishes")
    parser.add_argument(
        "--out",
        metavar="DIR",
        help="save every file of the finished job in DIR as JOB_ID-1.png, JOB_ID-2.mp4, ... "
        "(made if missing; implies --wait). A name with a suffix (fox.png) is one file "
        "instead: several files are then fox-1.png, fox-2.png, ...",
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
    connection.add_arguments(parser)


def _pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


def run(args: argparse.Namespace) -> None:
    from falrelay import APIConnectionError, APIError, FalrelayError

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
        _err(f"falrelay: no answer from {connection.service_url(args)}: {exc}")
        _err("  Is the service running there? Start one with `falrelay dev`, or pass --url.")
        code = 2
    except FalrelayError as exc:
        _err(f"falrelay: {exc}")
        code = 2
    raise SystemExit(code)


# The ImagineArt flags, kept as shorthands for their input fields.
CONVENIENCE_FIELDS = ("aspect_ratio", "resolution", "seed", "reasoning")


async def submit(args: argparse.Namespace) -> int:
    from falrelay import AsyncClient
    from falrelay.files import files_of

    job_input = build_input(args)
    waiting = args.wait or args.out is not None
    key = connection.api_key(args)
    async with AsyncClient(key, base_url=connection.service_url(args)) as client:
        if args.model is not None and args.input:
            schema = await _input_schema(client, args.model)
            if schema is not None:
                keep_text(job_input, args.input, schema)
        job = await client.jobs.create(
            job_input, model=args.model, metadata=dict(args.metadata) or None
        )
        if waiting:
            job = await _follow(client, job, Progress(job, sys.stderr), args.timeout)
    saved: list[Path] = []
    if args.out is not None and _succeeded(job):
        saved = await download(job, files_of(job), Path(args.out), is_directory(args.out))
    _report(job, saved, waiting=waiting, as_json=args.json)
    if not waiting or _succeeded(job):
        return 0
    return 1


def build_input(args: argparse.Namespace) -> dict[str, Any]:
    job_input = _read_input_json(args.input_json) if args.input_json else {}
    if args.prompt is not None:
        job_input["prompt"] = args.prompt
    for name in CONVENIENCE_FIELDS:
        if getattr(args, name) is not None:
            job_input[name] = getattr(args, name)
    flags: dict[str, Any] = {}
    for key, text in args.input:
        value = input_value(text)
        if key.endswith("_urls") and not isinstance(value, list):
            # `--input image_urls=@a.png --input image_urls=@b.png`: one list of both.
            value = [*flags.get(key, []), value]
        flags[key] = value
    job_input.update(flags)
    if not job_input:
        raise UsageError("no input: give a prompt, --input KEY=VALUE or --input-json FILE")
    return job_input


async def _input_schema(client: AsyncClient, model: str) -> dict[str, Any] | None:
    from falrelay import APIError

    try:
        models = await client.models.list()
    except APIError:
        return None  # the job's create answers for an unknown model
    return next((m.input_schema for m in models if m.id == model), None)


def keep_text(
    job_input: dict[str, Any], pairs: list[tuple[str, str]], schema: dict[str, Any]
) -> None:
    """`--input duration=5` where the model's input schema takes text (Kling's duration is
    "5" or "10"): the text, not the number JSON reads in it."""
    properties = schema.get("properties") or {}
    for key, text in dict(pairs).items():  # a key given twice: its last value
        value = job_input.get(key)
        if value is None or isinstance(value, str | list) or text.startswith("@"):
            continue
        if _takes_text(properties.get(key), schema):
            job_input[key] = text


def _takes_text(prop: Any, schema: dict[str, Any], depth: int = 0) -> bool:
    """Whether a property's schema takes only strings (or null)."""
    if not isinstance(prop, dict) or depth > 8:
        return False
    ref = prop.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = schema
        for part in ref[2:].split("/"):
            target = target.get(part) if isinstance(target, dict) else None
        return _takes_text(target, schema, depth + 1)
    if prop.get("type") == "string":
        return True
    enum = prop.get("enum")
    if isinstance(enum, list) and enum:
        return all(isinstance(item, str) for item in enum)
    for combined in ("anyOf", "oneOf"):
        branches = prop.get(combined)
        if isinstance(branches, list):
            kept = [b for b in branches if not (isinstance(b, dict) and b.get("type") == "null")]
            return bool(kept) and all(_takes_text(b, schema, depth + 1) for b in kept)
    return False


def input_value(text: str) -> Any:
    """`@PATH`: the local file as a data: URI. Else the text as JSON when it parses as JSON
    (numbers, booleans, null, objects, arrays, "quoted strings"), else the text itself."""
    if text.startswith("@"):
        from falrelay.files import data_uri

        path = Path(text[1:]).expanduser()
        if not path.is_file():
            raise UsageError(f"{text!r}: no file {str(path)!r} to send")
        return data_uri(path)
    try:
        return json.loads(text, parse_constant=_not_json)
    except ValueError:
        return text


def _not_json(constant: str) -> None:
    # Python reads NaN and Infinity, which are not JSON: such a value stays text.
    raise ValueError(constant)


def _read_input_json(source: str) -> dict[str, Any]:
    name = "stdin" if source == "-" else source
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text()
        value = json.loads(text)
    except OSError as exc:
        raise UsageError(f"--input-json: cannot read {name}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise UsageError(f"--input-json: {name} is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise UsageError(f"--input-json: {name} holds {type(value).__name__}, not an object")
    return value


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


def is_directory(out: str) -> bool:
    """Whether `--out` names a directory: one that exists, or a path ending in a separator or
    without a suffix. `fox.png` is a file name (the old `--out FILE`)."""
    path = Path(out)
    return path.is_dir() or out.endswith(("/", os.sep)) or not path.suffix


def output_paths(out: Path, count: int) -> list[Path]:
    """FILE for one file; FILE-1, FILE-2, ... (before the suffix) for several."""
    if count == 1:
        return [out]
    return [out.with_name(f"{out.stem}-{n}{out.suffix}") for n in range(1, count + 1)]


def directory_paths(directory: Path, job_id: str, files: list[File]) -> list[Path]:
    """JOB_ID-1.png, JOB_ID-2.mp4, ...: numbered in the output's order, each with its own
    type's suffix."""
    from falrelay.files import suffix_for

    return [directory / f"{job_id}-{n}{suffix_for(file)}" for n, file in enumerate(files, 1)]


def save_paths(job: Job, files: list[File], out: Path, into_directory: bool) -> list[Path]:
    if into_directory:
        out.mkdir(parents=True, exist_ok=True)
        return directory_paths(out, job.id, files)
    return output_paths(out, len(files))


async def download(job: Job, files: list[File], out: Path, into_directory: bool) -> list[Path]:
    import httpx

    if not files:
        _err(f"falrelay: {job.id} has no files to save")
        return []
    paths = await asyncio.to_thread(save_paths, job, files, out, into_directory)
    # A client of its own, without the API key: file URLs may point anywhere (fal's CDN).
    async with httpx.AsyncClient(timeout=60.0, follow_redirects=True) as http:
        for file, path in zip(files, paths, strict=True):
            await _save(http, file.url, path)
    return paths


async def _save(http: httpx.AsyncClient, url: str, path: Path) -> None:
    import httpx

    from falrelay import FalrelayError

    if url.startswith("data:"):
        # fal's sync mode sends the bytes in the output itself.
        await asyncio.to_thread(path.write_bytes, _data_uri_bytes(url))
        return
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise FalrelayError(f"cannot download {url!r}: not an http(s) URL")
    sink = await asyncio.to_thread(path.open, "wb")
    try:
        async with http.stream("GET", url) as response:
            response.raise_for_status()
            # Streamed: a video need not fit in memory.
            async for chunk in response.aiter_bytes():
                sink.write(chunk)
    except httpx.HTTPError as exc:
        sink.close()
        await asyncio.to_thread(path.unlink, True)
        raise FalrelayError(f"could not download {url}: {exc}") from exc
    finally:
        sink.close()


def _data_uri_bytes(url: str) -> bytes:
    from falrelay import FalrelayError

    header, sep, payload = url.partition(",")
    if not sep:
        raise FalrelayError("a data: URI without data")
    if header.endswith(";base64"):
        try:
            return base64.b64decode(payload, validate=True)
        except binascii.Error as exc:
            raise FalrelayError(f"a data: URI that is not base64: {exc}") from exc
    return urllib.parse.unquote_to_bytes(payload)


def _report(job: Job, saved: list[Path], *, waiting: bool, as_json: bool) -> None:
    if as_json:
        # As the service sent it: no field the SDK only defaults (an older service's `files`).
        _out(
            json.dumps(
                job.model_dump(mode="json", exclude_unset=True), indent=2, ensure_ascii=False
            )
        )
        for path in saved:
            _err(f"saved {path}")
    elif not waiting:
        _out(job.id)
    elif _succeeded(job):
        if saved:
            lines = [str(path) for path in saved]
        else:
            # No --out: where the files are; a model without files: its output.
            from falrelay.files import files_of

            files = files_of(job)
            lines = [file.url for file in files] or [
                json.dumps(job.output, indent=2, ensure_ascii=False)
            ]
        for line in lines:
            _out(line)
    if waiting and job.is_terminal and not _succeeded(job):
        reason = f": {job.error.type}: {job.error.message}" if job.error else ""
        _err(f"falrelay: {job.id} {job.status}{reason}")


def _out(line: str) -> None:
    sys.stdout.write(line + "\n")


def _err(line: str) -> None:
    sys.stderr.write(line + "\n")
