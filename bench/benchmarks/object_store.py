"""Object stores: which library falrelay mirrors outputs to S3 with, measured.

`python -m bench.benchmarks.object_store [--smoke] [--runs N]` starts a `moto_server` (a real
S3 API, in memory) on a loopback port and, in turn (ABAB...), one fresh Python process per
library and run that does what the mirror does:

- imports the library and makes its first S3 client (timed);
- uploads FILES files of FILE_MIB MiB at once, each streamed from an async iterator of 64 KiB
  chunks (what an HTTP download yields) as a multipart upload of 5 MiB parts, two parts in
  flight per file: wall time, the process's CPU, and its peak RSS above the RSS it had ready
  (VmHWM, reset just before);
- checks every object's size (HEAD), presigns PRESIGNS GET URLs (timed), deletes the objects in
  one batched call (timed).

obstore runs as app.storage.s3 ships it (its put: one part held to tell small bodies from
large, then `obstore.put_async` with the async iterator). aiobotocore has no streaming upload
of its own (s3transfer is synchronous), so the part loop below is what falrelay would have to
own with it: gather a part, `upload_part` with two in flight, complete, abort on failure.
Its connection pool is raised to 64, above the 40 parts in flight, so it is not the limit.

Not in `python -m bench all`: aiobotocore and moto come with the `bench` extra only.
Writes bench/results/object-store.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

BUCKET = "bench"
REGION = "us-east-1"
FILES = 20
FILE_MIB = 20
CHUNK_BYTES = 64 * 1024
PART_BYTES = 5 * 1024 * 1024
PARTS_IN_FLIGHT = 2
PRESIGNS = 1000
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench-secret",
    "AWS_REGION": REGION,
}
LIBRARIES = ("obstore", "aiobotocore")


# The worker: one library, one run, in a fresh process; prints one JSON line.


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    except OSError:
        return False
    return True


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _body(size: int, block: bytes) -> AsyncIterator[bytes]:
    sent = 0
    while sent < size:
        n = min(CHUNK_BYTES, size - sent)
        offset = sent % len(block)
        chunk = block[offset : offset + n]
        sent += len(chunk)
        yield chunk
        await asyncio.sleep(0)  # a network read would yield to the loop


async def _worker_obstore(endpoint: str, keys: list[str], size: int) -> dict[str, Any]:
    started = time.perf_counter()
    import obstore  # noqa: F401  (the import is what is timed)
    from obstore.store import S3Store  # noqa: F401

    imported = time.perf_counter()
    from app.storage.location import S3Location
    from app.storage.s3 import S3ObjectStore

    store = S3ObjectStore.open(
        S3Location(BUCKET, None),
        endpoint_url=endpoint,
        url_ttl_seconds=3600,
        public_url=None,
    )
    ready = time.perf_counter()

    async def upload(block: bytes) -> list[int]:
        return list(
            await asyncio.gather(
                *(store.put(k, _body(size, block), content_type="video/mp4") for k in keys)
            )
        )

    async def presign() -> None:
        for k in keys * (PRESIGNS // len(keys)):
            store.url(k)

    async def sizes() -> list[int]:
        import obstore as obs

        return [
            (await obs.head_async(store._store, k))["size"]  # type: ignore[attr-defined]
            for k in keys
        ]

    async def delete() -> None:
        await store.delete(keys)

    return await _measure(
        upload, presign, sizes, delete, import_s=imported - started, ready_s=ready - started
    )


async def _worker_aiobotocore(endpoint: str, keys: list[str], size: int) -> dict[str, Any]:
    started = time.perf_counter()
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    imported = time.perf_counter()
    session = get_session()
    async with session.create_client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        config=AioConfig(max_pool_connections=64),
    ) as s3:
        ready = time.perf_counter()

        async def put(key: str, chunks: AsyncIterator[bytes]) -> int:
            upload_id = (
                await s3.create_multipart_upload(Bucket=BUCKET, Key=key, ContentType="video/mp4")
            )["UploadId"]
            parts: list[dict[str, Any]] = []
            slots = asyncio.Semaphore(PARTS_IN_FLIGHT)
            tasks: list[asyncio.Task[None]] = []

            async def send(number: int, body: bytes) -> None:
                try:
                    answer = await s3.upload_part(
                        Bucket=BUCKET, Key=key, UploadId=upload_id, PartNumber=number, Body=body
                    )
                    parts.append({"PartNumber": number, "ETag": answer["ETag"]})
                finally:
                    slots.release()

            try:
                buffer = bytearray()
                number = written = 0
                async for chunk in chunks:
                    buffer += chunk
                    written += len(chunk)
                    if len(buffer) >= PART_BYTES:
                        await slots.acquire()
                        number += 1
                        tasks.append(asyncio.create_task(send(number, bytes(buffer))))
                        buffer = bytearray()
                if buffer or number == 0:
                    await slots.acquire()
                    number += 1
                    tasks.append(asyncio.create_task(send(number, bytes(buffer))))
                await asyncio.gather(*tasks)
                parts.sort(key=lambda part: part["PartNumber"])
                await s3.complete_multipart_upload(
                    Bucket=BUCKET, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
                )
                return written
            except BaseException:
                for task in tasks:
                    task.cancel()
                await s3.abort_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload_id)
                raise

        async def upload(block: bytes) -> list[int]:
            return list(await asyncio.gather(*(put(k, _body(size, block)) for k in keys)))

        async def presign() -> None:
            for k in keys * (PRESIGNS // len(keys)):
                await s3.generate_presigned_url(
                    "get_object", Params={"Bucket": BUCKET, "Key": k}, ExpiresIn=3600
                )

        async def sizes() -> list[int]:
            return [(await s3.head_object(Bucket=BUCKET, Key=k))["ContentLength"] for k in keys]

        async def delete() -> None:
            await s3.delete_objects(
                Bucket=BUCKET, Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True}
            )

        return await _measure(
            upload, presign, sizes, delete, import_s=imported - started, ready_s=ready - started
        )


async def _measure(
    upload: Any, presign: Any, sizes: Any, delete: Any, *, import_s: float, ready_s: float
) -> dict[str, Any]:
    block = os.urandom(1024 * 1024)
    rss_ready = _status_kib("VmRSS")
    peak_reset = _reset_peak()
    cpu0, wall0 = _cpu(), time.perf_counter()
    written = await upload(block)
    upload_s = time.perf_counter() - wall0
    upload_cpu_s = _cpu() - cpu0
    peak_growth_kib = _status_kib("VmHWM") - rss_ready if peak_reset else None
    stored = await sizes()
    started = time.perf_counter()
    await presign()
    presign_us = (time.perf_counter() - started) / PRESIGNS * 1e6
    started = time.perf_counter()
    await delete()
    delete_s = time.perf_counter() - started
    return {
        "import_ms": import_s * 1000,
        "ready_ms": ready_s * 1000,
        "rss_ready_mib": rss_ready / 1024,
        "upload_s": upload_s,
        "upload_cpu_s": upload_cpu_s,
        "peak_growth_mib": None if peak_growth_kib is None else peak_growth_kib / 1024,
        "presign_us": presign_us,
        "delete_ms": delete_s * 1000,
        "written": written,
        "stored": stored,
    }


def worker(library: str, endpoint: str, files: int, size: int, run: int) -> None:
    keys = [f"run{run}/{library}/{i:03d}-video.mp4" for i in range(files)]
    work = _worker_obstore if library == "obstore" else _worker_aiobotocore
    try:
        import uvloop  # the loop falrelay serves on

        result = uvloop.run(work(endpoint, keys, size))
    except ImportError:
        result = asyncio.run(work(endpoint, keys, size))
    sys.stdout.write(json.dumps(result) + "\n")


# The orchestrator.


class MotoServer:
    """`moto_server` on a free loopback port, until closed."""

    def __init__(self, log: Path) -> None:
        from bench.processes import HOST, free_port

        self.url = f"http://{HOST}:{free_port()}"
        host, port = self.url.removeprefix("http://").split(":")
        script = Path(sys.executable).parent / "moto_server"
        self._log = log.open("w")
        self._process = subprocess.Popen(
            [str(script), "-H", host, "-p", port], stdout=self._log, stderr=subprocess.STDOUT
        )

    def wait_ready(self, within: float = 60.0) -> None:
        import httpx

        deadline = time.monotonic() + within
        while True:
            try:
                if httpx.get(f"{self.url}/moto-api/", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("moto_server did not start")
            time.sleep(0.1)

    def create_bucket(self, name: str) -> None:
        import boto3  # moto's own dependency: a real client for the set-up

        boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        ).create_bucket(Bucket=name)

    def close(self) -> None:
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._log.close()


def _run_worker(library: str, endpoint: str, files: int, size: int, run: int) -> dict[str, Any]:
    env = {**os.environ, **CREDENTIALS}
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        env.pop(name, None)
    argv = [sys.executable, "-m", "bench.benchmarks.object_store", "--worker", library]
    argv += ["--endpoint", endpoint, "--files", str(files), "--size", str(size)]
    argv += ["--run", str(run)]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{library} worker failed: {done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if result["written"] != [size] * files or result["stored"] != [size] * files:
        raise RuntimeError(f"{library}: sizes written/stored are not {size}: {result}")
    return result


FIGURES = [
    # key, name, unit
    ("import_ms", "import", "ms"),
    ("ready_ms", "import + first S3 client", "ms"),
    ("rss_ready_mib", "RSS with the client ready", "MiB"),
    ("upload_s", "upload {files} x {mib} MiB at once, streamed", "s"),
    ("throughput_mib_s", "upload throughput", "MiB/s"),
    ("upload_cpu_s", "client CPU for the uploads", "s"),
    ("peak_growth_mib", "peak RSS growth while uploading", "MiB"),
    ("presign_us", "presign one GET URL", "µs"),
    ("delete_ms", "delete {files} objects (one batched call)", "ms"),
]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.benchmarks.object_store")
    parser.add_argument("--smoke", action="store_true", help="3 files of 6 MiB, one run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--worker", choices=LIBRARIES, help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--files", type=int, default=FILES, help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=FILE_MIB * 1024 * 1024, help=argparse.SUPPRESS)
    parser.add_argument("--run", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.endpoint, args.files, args.size, args.run)
        return

    import tempfile

    from bench import machine
    from bench.context import RESULTS_DIR
    from bench.report import Figure, Report

    files, mib, runs = (3, 6, 1) if args.smoke else (FILES, FILE_MIB, max(1, args.runs))
    size = mib * 1024 * 1024
    started = time.monotonic()
    report = Report(
        name="object-store",
        title="S3 library for mirrored outputs: obstore (value) against aiobotocore (baseline)",
        baseline="aiobotocore, the same work in the same run against the same moto_server",
        goal="a choice, no goal: streaming, memory, then time",
        command="python -m bench.benchmarks.object_store" + (" --smoke" if args.smoke else ""),
        mode="smoke" if args.smoke else "full",
        machine=machine.describe(),
        settings={
            "files": files,
            "file_mib": mib,
            "chunk_bytes": CHUNK_BYTES,
            "part_bytes": PART_BYTES,
            "parts_in_flight": PARTS_IN_FLIGHT,
            "presigns": PRESIGNS,
            "runs": runs,
        },
    )
    results: dict[str, list[dict[str, Any]]] = {library: [] for library in LIBRARIES}
    with tempfile.TemporaryDirectory(prefix="falrelay-bench-s3-") as tmp:
        moto = MotoServer(Path(tmp) / "moto.log")
        try:
            moto.wait_ready()
            moto.create_bucket(BUCKET)
            for run in range(runs):
                # ABAB: whatever the machine does meanwhile falls on both.
                order = LIBRARIES if run % 2 == 0 else LIBRARIES[::-1]
                for library in order:
                    result = _run_worker(library, moto.url, files, size, run)
                    result["throughput_mib_s"] = files * mib / result["upload_s"]
                    results[library].append(result)
        finally:
            moto.close()
    for key, name, unit in FIGURES:
        report.figures.append(
            Figure(
                name=name.format(files=files, mib=mib),
                unit=unit,
                runs=[round(r[key], 3) for r in results["obstore"] if r[key] is not None],
                baseline_runs=[
                    round(r[key], 3) for r in results["aiobotocore"] if r[key] is not None
                ],
            )
        )
    report.details = {
        library: [{k: v for k, v in r.items() if k not in ("written", "stored")} for r in rs]
        for library, rs in results.items()
    }
    report.notes.append(
        "moto_server (Python, one process) is the far end for both: upload times include its "
        "work, so compare the client's CPU and memory first."
    )
    report.duration_s = round(time.monotonic() - started, 1)
    path = report.write(args.out or RESULTS_DIR)
    sys.stdout.write(report.table() + f"\nwrote {path}\n")


if __name__ == "__main__":
    main()
