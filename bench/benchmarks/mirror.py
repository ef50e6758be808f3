"""Mirror: the memory of copying 50 output files from fal into the operator's store at once.

The issue: "A 2K PNG, or a video of tens of MB, is streamed, not held whole in memory. Show the
peak RSS while mirroring 50 such files at once."

- **The source** stands in for fal's CDN: a raw ASGI app under uvicorn in a process of its own
  on loopback. It serves VIDEO_FILES videos of VIDEO_MIB MiB (`video/mp4`) and PNG_FILES PNGs
  of PNG_SIDE x PNG_SIDE (RGB), each generated chunk by chunk from a seed as it is sent (a
  window into one MiB of seeded noise; the PNGs as stored-deflate IDAT chunks, about 12 MiB
  for a 2K image, so the exact size is known before the first byte), so the source holds
  almost nothing and every file's bytes, size and sha256 are known in advance.
- **The stores**: a `file://` directory in a temp dir on disk, and an `s3://` bucket on a
  `moto_server` the benchmark starts on loopback, both opened by `app.storage.open_store`.
  moto keeps every object in its own memory: only the copying process is measured, and each
  run deletes what it wrote.
- **The copying process** (`python -m bench.benchmarks.mirror child SPEC`, a fresh process
  per run, way, store and workload) opens the store and the HTTP client, warms both up on
  one small file, then copies the whole set at once and measures itself: RSS before, peak
  RSS (VmHWM, reset to the current RSS through /proc/self/clear_refs just before; and VmRSS
  polled every 5 ms by a thread), bytes copied, wall time and CPU (getrusage: every thread,
  obstore's Rust runtime and the thumbnail threads included). Then it checks every copy
  (outside the measurement): the sha256 and size mirror_files recorded, and the stored
  object read back from the store, against the source's; a PNG's thumbnail too.

The ways it copies, in turn (ABAB across runs):

- `falrelay`: one `app.outputs.mirror.mirror_files` call per job (one file each), all at once,
  with the HTTP client the worker hands it (`app.runtime.downloads_client`: httpx's own
  streaming pool) and the default `FALRELAY_MIRROR_MAX_FILE_BYTES`: what the worker does.
  (Until the first run of this benchmark it was the fal client's, httpx over aiohttp's pool,
  which reads every body whole: 4.1 GB of peak growth for 50 videos, the finding that changed
  it.)
- `naive` (the baseline): each body read whole (`response.content`) with the same client,
  then `store.put_bytes`. It makes no thumbnails (mirror_files does, for each PNG).
- `experiment: aiohttp's pool`: mirror_files with the fal client's HTTP client
  (`app.runtime.fal_http_client`), the one it used before: what a client that reads bodies
  whole costs. No goal.

The real worker copies at most FALRELAY_MIRROR_CONCURRENCY (8) jobs at once; 50 at once is the
issue's load. Writes bench/results/mirror.json.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import os
import random
import resource
import struct
import sys
import tempfile
import threading
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.context import Context, uvicorn_argv
from bench.processes import HOST, Process, Processes, free_port, python_argv
from bench.report import Figure, Report

VIDEO_FILES = 50
VIDEO_MIB = 40
PNG_FILES = 50
PNG_SIDE = 2048
SMOKE_FILES = 3
SMOKE_VIDEO_MIB = 6  # above one S3 part (5 MiB): the multipart path runs in smoke too
SMOKE_PNG_SIDE = 256
SEED = 20261201
MODEL = "bench/mirror"  # no model of the catalog: files are found by their url + content_type
WORKLOADS = ("video", "png")
STORES = ("file", "s3")
WAYS = ("falrelay", "naive", "aiohttp")
WAY_NAMES = {
    "falrelay": "mirror_files, the worker's client",
    "naive": "naive: whole body, then put_bytes",
    "aiohttp": "mirror_files on the fal client's aiohttp pool (reads bodies whole)",
}
BUCKET = "bench-mirror"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench-secret",
    "AWS_REGION": "us-east-1",
}
# Bounds, not waits: a child copies 2 GB through moto on two busy cores.
CHILD_TIMEOUT_S = 900.0
SAMPLE_INTERVAL_S = 0.005
# The goal, per file in flight: what an S3 put may hold (app.storage.s3), the larger of the two
# stores' bounds (a file store's put holds about 1 MiB).
PER_FILE_MIB = (1 + 2) * 5  # (PARTS_IN_FLIGHT + 1) x PART_BYTES, in MiB


GOAL = (
    "peak RSS growth of mirror_files < 15 MiB per file in flight (app/storage/s3.py's bound: "
    "a put holds at most 3 parts of 5 MiB, whatever the file's size)"
)
NOTES = [
    "every copy's sha256 and size (as recorded, and read back from the store) matched the "
    "source's; a run with any mismatch or failed copy fails the benchmark",
    "naive makes no thumbnails; mirror_files makes one per PNG (Pillow decodes the whole "
    "image, in the default thread pool)",
    "moto_server keeps objects in its own memory: only the copying process is measured",
]


# The files: every byte a function of (seed, index, size) -------------------------------------

SEND_BYTES = 256 * 1024
NOISE_WINDOW = 64 * 1024
NOISE_BYTES = 1024 * 1024 + NOISE_WINDOW  # a window start plus the largest slice taken
# An ISO base media `ftyp` box: the file starts like an MP4, whatever follows.
FTYP = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
STORED_BLOCK_BYTES = 65535  # deflate's stored blocks hold at most this


@functools.cache
def _noise(seed: int) -> bytes:
    return random.Random(seed).randbytes(NOISE_BYTES)


def _offset(index: int, step: int) -> int:
    return (index * 7919 + step * 104729) % NOISE_WINDOW


def video_chunks(seed: int, index: int, size: int) -> Iterator[bytes]:
    noise = _noise(seed)
    sent = step = 0
    while sent < size:
        n = min(SEND_BYTES, size - sent)
        start = _offset(index, step)
        chunk = noise[start : start + n]
        if step == 0:
            chunk = (FTYP + chunk[len(FTYP) :])[:n]
        sent += n
        step += 1
        yield chunk


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_rows_per_block(side: int) -> int:
    return max(1, STORED_BLOCK_BYTES // (1 + 3 * side))


def png_size(side: int) -> int:
    row = 1 + 3 * side
    blocks = -(-side // _png_rows_per_block(side))
    # signature, IHDR, IEND; per block an IDAT chunk (12) around a stored block (5 + rows);
    # the zlib header (2) and its Adler-32 (4) once.
    return len(PNG_SIGNATURE) + 25 + 12 + blocks * (12 + 5) + side * row + 2 + 4


def png_chunks(seed: int, index: int, side: int) -> Iterator[bytes]:
    """An RGB PNG of seeded noise, streamed: IHDR, then one IDAT chunk per stored deflate
    block of whole rows (filter 0), then IEND. Stored, not compressed: its size is known
    before it is made, and making it costs copies, not zlib's CPU."""
    noise = _noise(seed)
    yield PNG_SIGNATURE + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
    per_block = _png_rows_per_block(side)
    adler = 1
    for first in range(0, side, per_block):
        rows = range(first, min(side, first + per_block))
        raw = b"".join(
            b"\x00" + noise[_offset(index, r) : _offset(index, r) + 3 * side] for r in rows
        )
        adler = zlib.adler32(raw, adler)
        last = rows.stop == side
        payload = b"\x78\x01" if first == 0 else b""
        payload += struct.pack("<BHH", 1 if last else 0, len(raw), len(raw) ^ 0xFFFF) + raw
        if last:
            payload += struct.pack(">I", adler)
        yield _png_chunk(b"IDAT", payload)
    yield _png_chunk(b"IEND", b"")


@dataclass(frozen=True)
class SourceFile:
    url: str
    content_type: str
    file_name: str
    size: int
    sha256: str


def _file_set(source: str, workload: str, count: int, param: int) -> list[SourceFile]:
    """The workload's files (`param`: a video's bytes, a PNG's side), with their sha256
    computed here from the same generator the source serves them from."""
    files = []
    for index in range(count):
        if workload == "video":
            name, chunks = f"clip-{index:03d}.mp4", video_chunks(SEED, index, param)
            content_type = "video/mp4"
        else:
            name, chunks = f"image-{index:03d}.png", png_chunks(SEED, index, param)
            content_type = "image/png"
        digest, size = hashlib.sha256(), 0
        for chunk in chunks:
            digest.update(chunk)
            size += len(chunk)
        url = f"{source}/{workload}/{SEED}/{index}-{param}/{name}"
        files.append(SourceFile(url, content_type, name, size, digest.hexdigest()))
    return files


# The source: an ASGI app (uvicorn, its own process) ------------------------------------------


async def source(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """`/{video|png}/{seed}/{index}-{size or side}/{name}`; `/health`. uvicorn pauses `send`
    while the socket's buffer is full, so each response holds a chunk or two, not a file."""
    if scope["type"] != "http":
        return
    parts = scope["path"].strip("/").split("/")
    chunks: Iterator[bytes] | None = None
    if parts == ["health"]:
        chunks, size, content_type = iter([b"ok"]), 2, "text/plain"
    elif len(parts) == 4 and parts[0] in WORKLOADS:
        seed = int(parts[1])
        index, param = (int(p) for p in parts[2].split("-"))
        if parts[0] == "video":
            chunks, size, content_type = video_chunks(seed, index, param), param, "video/mp4"
        else:
            chunks, size, content_type = (
                png_chunks(seed, index, param),
                png_size(param),
                "image/png",
            )
    if chunks is None:
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    headers = [(b"content-type", content_type.encode()), (b"content-length", str(size).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    if scope["method"] != "HEAD":
        for chunk in chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


# The copying process -------------------------------------------------------------------------


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := the current RSS
    except OSError:
        return False
    return True


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _RssSampler:
    """VmRSS every few ms on a thread: the peak where VmHWM cannot be reset, and the curve."""

    def __init__(self) -> None:
        self.peak_kib = 0
        self.curve: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        started = time.perf_counter()
        last_kept = -1.0
        while not self._stop.wait(SAMPLE_INTERVAL_S):
            kib = _status_kib("VmRSS")
            self.peak_kib = max(self.peak_kib, kib)
            now = time.perf_counter() - started
            if now - last_kept >= 0.25:
                self.curve.append((round(now, 2), round(kib / 1024, 1)))
                last_kept = now


class _NoDatabase:
    """`open_store` asks the database for a file store's URL-signing secret (which the copy
    never uses); this answers in its place, so the copying process needs no Postgres."""

    async def execute(self, *args: object) -> str:
        return "INSERT 0 1"

    async def fetchval(self, *args: object) -> str:
        return "0" * 64


def _output(workload: str, file: dict[str, Any]) -> dict[str, Any]:
    entry = {
        "url": file["url"],
        "content_type": file["content_type"],
        "file_name": file["file_name"],
        "file_size": file["size"],
    }
    return {"video": entry} if workload == "video" else {"images": [entry]}


async def _child(spec: dict[str, Any]) -> dict[str, Any]:

    from app.outputs.mirror import Limits, mirror_files
    from app.runtime import downloads_client, fal_http_client
    from app.settings import Settings
    from app.storage import open_store

    way, workload = spec["way"], spec["workload"]
    settings = Settings(storage_url=spec["store_url"], s3_endpoint_url=spec.get("endpoint"))
    store = await open_store(settings, _NoDatabase())  # type: ignore[arg-type]
    assert store is not None
    http = fal_http_client(settings) if way == "aiohttp" else downloads_client(settings)
    limits = Limits(max_file_bytes=settings.mirror_max_file_bytes)

    async def mirrored(file: dict[str, Any]) -> dict[str, Any]:
        entries = await mirror_files(
            store, http, uuid.uuid4(), MODEL, _output(workload, file), None, limits
        )
        return entries[0]

    async def naive(file: dict[str, Any]) -> dict[str, Any]:
        response = await http.get(file["url"])
        if response.status_code != 200:
            return {"key": None, "error": f"answered {response.status_code}"}
        data = response.content
        key = f"jobs/{uuid.uuid4()}/0-{file['file_name']}"
        await store.put_bytes(key, data, content_type=file["content_type"])
        return {"key": key, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}

    copy: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]] = (
        naive if way == "naive" else mirrored
    )
    # Warm-up: the client's pool, the store's client, Pillow's plugins, the thread pool all
    # made and imported, as in a worker that has copied before.
    warm = await copy(spec["warmup"])
    if not warm.get("key"):
        raise RuntimeError(f"warm-up copy failed: {warm}")
    await store.delete([k for k in (warm["key"], warm.get("thumbnail_key")) if k])

    rss_before = _status_kib("VmRSS")
    hwm_reset = _reset_peak()
    with _RssSampler() as sampler:
        cpu0, wall0 = _cpu_s(), time.perf_counter()
        entries = await asyncio.gather(*(copy(file) for file in spec["files"]))
        wall = time.perf_counter() - wall0
        cpu = _cpu_s() - cpu0
    peak = _status_kib("VmHWM") if hwm_reset else sampler.peak_kib
    rss_after = _status_kib("VmRSS")

    # The check, outside the measurement: what mirror_files recorded, and what the store holds.
    problems: list[str] = []
    keys: list[str] = []
    thumbnails = 0
    for file, entry in zip(spec["files"], entries, strict=True):
        name = file["file_name"]
        if not entry.get("key"):
            problems.append(f"{name}: not copied: {entry.get('error')}")
            continue
        keys.append(entry["key"])
        if entry.get("sha256") != file["sha256"] or entry.get("size") != file["size"]:
            problems.append(f"{name}: recorded {entry.get('size')} bytes, {entry.get('sha256')}")
        stored = await store.read(entry["key"])
        if hashlib.sha256(stored).hexdigest() != file["sha256"]:
            problems.append(f"{name}: the stored copy ({len(stored)} bytes) differs")
        del stored
        if entry.get("thumbnail_key"):
            keys.append(entry["thumbnail_key"])
            if (await store.read(entry["thumbnail_key"]))[8:12] == b"WEBP":
                thumbnails += 1
    await store.delete(keys)
    await http.aclose()
    await store.aclose()
    return {
        "rss_before_mib": rss_before / 1024,
        "peak_rss_mib": peak / 1024,
        "peak_growth_mib": (peak - rss_before) / 1024,
        "peak_sampled_mib": sampler.peak_kib / 1024,
        "rss_after_mib": rss_after / 1024,
        "hwm_reset": hwm_reset,
        "wall_s": wall,
        "cpu_s": cpu,
        "bytes_copied": sum(int(e.get("size") or 0) for e in entries),
        "copies_checked": len(spec["files"]),
        "thumbnails": thumbnails,
        "attempts": sum(int(e.get("attempts", 1)) for e in entries),
        "problems": problems,
        "rss_curve_mib": sampler.curve,
    }


def child_main(spec_json: str) -> None:
    spec = json.loads(spec_json)
    try:
        import uvloop  # the loop the worker runs on

        result = uvloop.run(_child(spec))
    except ImportError:
        result = asyncio.run(_child(spec))
    sys.stdout.write(json.dumps(result) + "\n")


# The orchestrator ----------------------------------------------------------------------------


def _child_env(endpoint: str | None) -> dict[str, str]:
    # No FALRELAY_* from the shell (the spec says what the child needs) and no proxy: loopback.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("FALRELAY_")
        and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")
    }
    if endpoint is not None:
        env.update(CREDENTIALS)
    env["NO_PROXY"] = env["no_proxy"] = HOST
    return env


async def _run_child(spec: dict[str, Any], log: Path) -> dict[str, Any]:
    with log.open("ab") as err:
        child = await asyncio.create_subprocess_exec(
            *python_argv("-m", "bench.benchmarks.mirror", "child", json.dumps(spec)),
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
            env=_child_env(spec.get("endpoint")),
        )
        try:
            out, _ = await asyncio.wait_for(child.communicate(), CHILD_TIMEOUT_S)
        except BaseException:
            if child.returncode is None:
                child.kill()
                await child.wait()
            raise
    if child.returncode != 0:
        tail = (await asyncio.to_thread(log.read_text, errors="replace"))[-3000:]
        raise RuntimeError(f"the {spec['way']} copy exited with {child.returncode}: {tail}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    if result["problems"]:
        raise RuntimeError(f"{spec['way']} into {spec['store']}: {result['problems'][:5]}")
    return result


async def _start_moto(procs: Processes) -> tuple[Process, str] | None:
    script = Path(sys.executable).parent / "moto_server"
    if not script.exists():
        return None
    port = free_port()
    url = f"http://{HOST}:{port}"
    process = procs.start("moto", [str(script), "-H", HOST, "-p", str(port)])
    await process.wait_http(f"{url}/moto-api/")

    def create_bucket() -> None:
        import boto3  # moto's own dependency: a real S3 client for the set-up

        boto3.client(
            "s3",
            endpoint_url=url,
            region_name=CREDENTIALS["AWS_REGION"],
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        ).create_bucket(Bucket=BUCKET)

    await asyncio.to_thread(create_bucket)
    return process, url


async def run(ctx: Context) -> Report:
    opts = ctx.options
    smoke = opts.smoke
    files = {
        "video": SMOKE_FILES if smoke else VIDEO_FILES,
        "png": SMOKE_FILES if smoke else PNG_FILES,
    }
    params = {
        "video": (SMOKE_VIDEO_MIB if smoke else VIDEO_MIB) * 1024 * 1024,
        "png": SMOKE_PNG_SIDE if smoke else PNG_SIDE,
    }
    runs = 1 if smoke else opts.runs
    report = ctx.report(
        "mirror",
        f"peak RSS while mirroring {files['video']} output files from fal at once",
        baseline="the naive copy, same run: each body read whole (`response.content`), "
        "then `put_bytes`",
        goal=GOAL,
    )
    results: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    with (
        ctx.processes("mirror") as procs,
        tempfile.TemporaryDirectory(prefix="falrelay-bench-mirror-") as scratch,
    ):
        port = free_port()
        source_url = f"http://{HOST}:{port}"
        source_process = procs.start(
            "source", uvicorn_argv("bench.benchmarks.mirror:source", port, lifespan="off")
        )
        await source_process.wait_http(f"{source_url}/health")
        moto = await _start_moto(procs)
        stores = STORES if moto is not None else ("file",)
        if moto is None:
            report.notes.append("moto_server is not installed: the s3:// store was skipped")
        sets = {
            w: await asyncio.to_thread(_file_set, source_url, w, files[w], params[w])
            for w in WORKLOADS
        }
        warmups = {
            "video": _file_set(source_url, "video", 1, 64 * 1024)[0],
            "png": _file_set(source_url, "png", 1, 16)[0],
        }
        log = ctx.work_dir / "mirror" / "children.log"
        for run_number in range(runs):
            # Rotated per run: whatever the machine does meanwhile falls on every way.
            order = WAYS[run_number % 3 :] + WAYS[: run_number % 3]
            for workload in WORKLOADS:
                for store in stores:
                    for way in order:
                        root = Path(scratch) / f"{workload}-{way}-{run_number}"
                        spec = {
                            "way": way,
                            "workload": workload,
                            "store": store,
                            "store_url": root.as_uri()
                            if store == "file"
                            else f"s3://{BUCKET}/{workload}-{way}-{run_number}",
                            "endpoint": None if moto is None or store == "file" else moto[1],
                            "files": [asdict(f) for f in sets[workload]],
                            "warmup": asdict(warmups[workload]),
                        }
                        result = await _run_child(spec, log)
                        results.setdefault((workload, store, way), []).append(result)
        report.details["source_peak_rss_mib"] = source_process.peak_rss_mib()
        if moto is not None:
            report.details["moto_peak_rss_mib"] = moto[0].peak_rss_mib()

    report.settings = {
        "files": files,
        "video_bytes": params["video"],
        "png_side": params["png"],
        "png_bytes": png_size(params["png"]),
        "runs": runs,
        "stores": list(stores),
        "ways": {way: WAY_NAMES[way] for way in WAYS},
    }
    report.figures = _figures(results, sets, stores)
    report.details["runs"] = {
        f"{w}/{s}/{way}": [{k: v for k, v in r.items() if k != "problems"} for r in rs]
        for (w, s, way), rs in results.items()
    }
    report.notes += NOTES
    return report


def _figures(
    results: dict[tuple[str, str, str], list[dict[str, Any]]],
    sets: dict[str, list[SourceFile]],
    stores: tuple[str, ...],
) -> list[Figure]:
    figures: list[Figure] = []

    def runs(workload: str, store: str, way: str, key: str) -> list[float]:
        return [round(float(r[key]), 3) for r in results.get((workload, store, way), [])]

    for workload in WORKLOADS:
        count = len(sets[workload])
        total_mib = sum(f.size for f in sets[workload]) / 1024 / 1024
        size_mib = sets[workload][0].size / 1024 / 1024
        for store in stores:
            label = f"{count} x {size_mib:.1f} MiB {workload} -> {store}"
            for key, name, unit in (
                ("peak_growth_mib", "peak RSS growth", "MiB"),
                ("peak_rss_mib", "peak RSS", "MiB"),
                ("rss_after_mib", "RSS once copied", "MiB"),
                ("wall_s", "wall time", "s"),
                ("cpu_s", "CPU", "s"),
            ):
                figure = Figure(
                    f"{label}: {name}",
                    unit,
                    runs(workload, store, "falrelay", key),
                    runs(workload, store, "naive", key),
                )
                if key == "peak_growth_mib":
                    figure.goal = f"< {count * PER_FILE_MIB:,.0f} MiB"
                    figure.met = figure.value is not None and figure.value < count * PER_FILE_MIB
                figures.append(figure)
            figures.append(
                Figure(
                    f"{label}: throughput",
                    "MiB/s",
                    [total_mib / w for w in runs(workload, store, "falrelay", "wall_s") if w],
                    [total_mib / w for w in runs(workload, store, "naive", "wall_s") if w],
                )
            )
            for key, name, unit in (
                ("peak_growth_mib", "peak RSS growth", "MiB"),
                ("wall_s", "wall time", "s"),
            ):
                figures.append(
                    Figure(
                        f"experiment: {label}: {name}, {WAY_NAMES['aiohttp']}",
                        unit,
                        runs(workload, store, "aiohttp", key),
                        runs(workload, store, "naive", key),
                    )
                )
        figures.append(
            Figure(
                f"{workload}: bytes copied per run",
                "MiB",
                [
                    round(float(r["bytes_copied"]) / 1024 / 1024, 1)
                    for (w, _, way), rs in results.items()
                    if w == workload and way == "falrelay"
                    for r in rs
                ],
                [
                    round(float(r["bytes_copied"]) / 1024 / 1024, 1)
                    for (w, _, way), rs in results.items()
                    if w == workload and way == "naive"
                    for r in rs
                ],
            )
        )
    return figures


def main(argv: list[str]) -> None:
    if argv[:1] == ["child"] and len(argv) == 2:
        child_main(argv[1])
    else:
        raise SystemExit("usage: python -m bench.benchmarks.mirror child SPEC_JSON")


if __name__ == "__main__":
    main(sys.argv[1:])
