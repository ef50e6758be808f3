"""What every benchmark gets: its options, the Postgres, a place for logs, and helpers to start
falrelay's own processes the way an operator would."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.auth.service import create_client
from app.db.pool import create_pool
from bench import load, profile
from bench.database import BenchPostgres
from bench.processes import (
    HOST,
    Process,
    Processes,
    falrelay_argv,
    free_port,
    machine_busy_seconds,
    python_argv,
)
from bench.report import Report

RESULTS_DIR = Path(__file__).resolve().parent / "results"
# The pool size of the baselines' servers (asyncpg's default, 10, unless set).
POOL_SIZE_VARIABLE = "BENCH_BASELINE_POOL_MAX"
# Where a worker that must never call fal is pointed: the discard port on loopback.
NOWHERE = "http://127.0.0.1:9"


@dataclass(frozen=True)
class Options:
    smoke: bool = False
    runs: int = 3
    duration_s: float = 12.0
    driver: str = "auto"  # load generator: auto (wrk if installed), wrk, python
    out_dir: Path = RESULTS_DIR
    profile: bool = False  # py-spy the falrelay process during one extra run
    # Also measure falrelay with proposed app changes applied in-process (bench/variants.py).
    experiments: bool = False

    @property
    def warmup_s(self) -> float:
        return 1.0 if self.smoke else 3.0

    def flags(self) -> list[str]:
        """The options that change what is measured, as `python -m bench` takes them: the
        command that reproduces a report."""
        default = Options()
        flags = []
        if self.smoke:
            flags.append("--smoke")
        if self.runs != default.runs:
            flags.append(f"--runs {self.runs}")
        if self.duration_s != default.duration_s:
            flags.append(f"--duration {self.duration_s:g}")
        if self.driver != default.driver:
            flags.append(f"--driver {self.driver}")
        if self.profile:
            flags.append("--profile")
        if self.experiments:
            flags.append("--experiments")
        return flags


@dataclass
class Context:
    options: Options
    postgres: BenchPostgres
    work_dir: Path
    machine: dict[str, Any]
    postgres_version: str = ""
    _reports: list[Report] = field(default_factory=list)

    def cpu_meter(self, **processes: Process) -> CpuMeter:
        return CpuMeter(self.postgres, processes)

    def processes(self, label: str) -> Processes:
        log_dir = self.work_dir / label
        log_dir.mkdir(parents=True, exist_ok=True)
        defaults = {}
        if self.options.smoke:
            # Smoke runs every benchmark at once: small pools keep all of them within
            # Postgres's 100 connections.
            defaults = {"FALRELAY_DB_POOL_MAX_SIZE": "4", POOL_SIZE_VARIABLE: "4"}
        return Processes(log_dir, defaults)

    def report(self, name: str, title: str, *, baseline: str, goal: str) -> Report:
        command = " ".join(["python -m bench", name, *self.options.flags()])
        return Report(
            name=name,
            title=title,
            baseline=baseline,
            goal=goal,
            command=command,
            mode="smoke" if self.options.smoke else "full",
            machine={**self.machine, "postgres": self.postgres_version},
        )

    async def load(self, spec: load.LoadSpec) -> load.LoadResult:
        return await asyncio.to_thread(load.run, spec, self.options.driver, self.work_dir)

    async def start_profile(self, pid: int, seconds: float, label: str) -> Profiling:
        out = self.work_dir / f"{label}.pyspy.txt"
        return Profiling(await profile.record(pid, seconds, out), out)


class CpuMeter:
    """CPU used by each of our processes (and Postgres, and the machine as a whole) between
    `start` and `per_unit`: where the CPU of one request, delivery or job goes. The machine
    figure includes other people's work on this shared machine: the gap is the noise."""

    def __init__(self, postgres: BenchPostgres, processes: dict[str, Process]) -> None:
        self._sources: dict[str, Callable[[], float | None]] = {
            name: p.cpu_seconds for name, p in processes.items()
        }
        self._sources["postgres"] = postgres.cpu_seconds
        self._sources["machine"] = machine_busy_seconds
        self._before: dict[str, float | None] = {}

    def start(self) -> None:
        self._before = {name: read() for name, read in self._sources.items()}

    def per_unit(self, units: int) -> dict[str, float]:
        """Milliseconds of CPU per unit of work since `start`, by process."""
        used: dict[str, float] = {}
        for name, read in self._sources.items():
            now, before = read(), self._before.get(name)
            if now is not None and before is not None and units:
                used[name] = round(1000 * (now - before) / units, 3)
        return used


@dataclass
class Profiling:
    process: asyncio.subprocess.Process
    out: Path

    async def summary(self) -> dict[str, Any]:
        await self.process.wait()
        summary = profile.summarise(self.out)
        # py-spy's raw stacks, by name: kept in the --logs directory when one is given.
        summary["raw"] = self.out.name
        return summary


def falrelay_env(database_url: str, **settings: Any) -> dict[str, str]:
    """FALRELAY_* for a falrelay process: production defaults but for what a bench must set."""
    env = {
        "FALRELAY_DATABASE_URL": database_url,
        "FALRELAY_FAL_KEY": "bench-fal-key",
        "FALRELAY_FAL_QUEUE_URL": NOWHERE,
        "FALRELAY_FAL_JWKS_URL": f"{NOWHERE}/.well-known/jwks.json",
    }
    env.update(
        {
            f"FALRELAY_{k.upper()}": str(v).lower() if isinstance(v, bool) else str(v)
            for k, v in settings.items()
        }
    )
    return env


async def start_falrelay(
    procs: Processes,
    command: str,
    database_url: str,
    *,
    name: str | None = None,
    variants: str = "",
    port: int | None = None,
    **settings: Any,
) -> tuple[Process, str]:
    """`falrelay api` or `falrelay serve` on a loopback port, once /readyz says yes.
    `variants`: proposed changes to apply in-process (bench/variants.py)."""
    port = port or free_port()
    url = f"http://{HOST}:{port}"
    args = (command, "--host", HOST, "--port", str(port))
    if variants:
        argv = python_argv("-m", "bench.variants", variants, *args)
    else:
        argv = falrelay_argv(*args)
    process = procs.start(
        name or f"falrelay-{command}", argv, falrelay_env(database_url, **settings)
    )
    await process.wait_http(f"{url}/readyz")
    return process, url


async def start_worker(
    procs: Processes,
    database_url: str,
    *,
    name: str | None = None,
    variants: str = "",
    **settings: Any,
) -> Process:
    """`falrelay worker`, once it says it runs. `name` names its log: one per worker."""
    if variants:
        argv = python_argv("-m", "bench.variants", variants, "worker")
    else:
        argv = falrelay_argv("worker")
    name = name or "falrelay-worker" + (f"-{variants}" if variants else "")
    process = procs.start(name, argv, falrelay_env(database_url, **settings))
    await process.wait_log("worker running")
    return process


async def start_fakefal(procs: Processes, name: str = "fakefal") -> tuple[Process, str]:
    """The built-in fake fal with zero queue and run latency, served like the receiver (no
    access log: `falrelay fakefal` logs every request, which would take CPU from the servers
    being measured on this 2-core machine)."""
    port = free_port()
    url = f"http://{HOST}:{port}"
    argv = uvicorn_argv("bench.fakefal_app:create", port, "--factory")
    process = procs.start(name, argv)
    await process.wait_http(f"{url}/.well-known/jwks.json")
    return process, url


async def start_receiver(procs: Processes, name: str = "receiver") -> tuple[Process, str]:
    port = free_port()
    url = f"http://{HOST}:{port}"
    # Some benchmarks leave requests hanging on it: its stop waits for none of them.
    argv = uvicorn_argv(
        "bench.receiver:app", port, "--timeout-graceful-shutdown", "1", lifespan="off"
    )
    process = procs.start(name, argv)
    await process.wait_http(f"{url}/stats")
    return process, url


def uvicorn_argv(app: str, port: int, *extra: str, lifespan: str = "on") -> list[str]:
    # The same server stack as falrelay's (uvicorn picks uvloop and httptools when installed).
    return python_argv(
        "-m",
        "uvicorn",
        app,
        "--host",
        HOST,
        "--port",
        str(port),
        "--no-access-log",
        "--log-level",
        "warning",
        "--lifespan",
        lifespan,
        *extra,
    )


async def create_api_key(database_url: str, name: str = "bench") -> tuple[uuid.UUID, str]:
    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        return await create_client(pool, name)
    finally:
        await pool.close()
