"""The processes a benchmark runs: started with their output in log files, stopped by pid.

Servers are separate processes so the load generator never shares an event loop (or a GIL)
with what it measures.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import httpx

# Loopback only, and never through a proxy meant for the internet.
HOST = "127.0.0.1"
_PROXY_VARIABLES = {"http_proxy", "https_proxy", "all_proxy"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def falrelay_argv(*args: str) -> list[str]:
    """The installed `falrelay` command of this interpreter's environment."""
    script = Path(sys.executable).parent / "falrelay"
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-c", "import sys; from app.cli import main; main(sys.argv[1:])", *args]


def python_argv(*args: str) -> list[str]:
    return [sys.executable, *args]


def _stat_fields(pid: int) -> list[str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The fields after the command name (which may hold spaces and parentheses), from field 3.
    return stat.rsplit(")", 1)[1].split()


def cpu_seconds(pid: int, *, with_reaped_children: bool = False) -> float | None:
    """User + system CPU `pid` has used so far; with its children that have exited and been
    waited for (how a postmaster accounts for its finished backends)."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    ticks = int(fields[11]) + int(fields[12])
    if with_reaped_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def cpu_seconds_of_tree(pid: int) -> float | None:
    """A server and its live children (Postgres: the postmaster and its backends)."""
    total = cpu_seconds(pid, with_reaped_children=True)
    if total is None:
        return None
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None and fields[1] == str(pid):
                total += cpu_seconds(int(entry.name)) or 0.0
    return total


def machine_busy_seconds() -> float:
    """CPU seconds all cores have spent busy since boot (everyone's processes, not just ours)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class Process:
    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._log = log_path.open("wb")
        # A child inherits no FALRELAY_* setting but those given (a run must not depend on the
        # shell it was started from), no proxy (loopback only), and does not buffer its logs.
        full_env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("FALRELAY_") and k.lower() not in _PROXY_VARIABLES
        }
        full_env.update(env)
        full_env["PYTHONUNBUFFERED"] = "1"
        self.popen = subprocess.Popen(
            argv, env=full_env, stdout=self._log, stderr=subprocess.STDOUT, cwd=_repo_root()
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def check_alive(self) -> None:
        code = self.popen.poll()
        if code is not None:
            tail = "\n".join(self.log().splitlines()[-30:])
            raise RuntimeError(f"{self.name} exited with {code}; its log ends:\n{tail}")

    def peak_rss_mib(self) -> float | None:
        """VmHWM: the most resident memory the process has had so far."""
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return None
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return None

    def rss_mib(self) -> float | None:
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return None
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return None

    def cpu_seconds(self) -> float | None:
        return cpu_seconds(self.pid)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (a graceful drain), then SIGKILL if it does not end within `timeout`."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)
        self._log.close()
        return self.popen.returncode

    # Start bounds: generous, as they only end a run that is failing anyway; a server starting
    # beside other work on two busy cores has taken more than 30 s.
    async def wait_http(self, url: str, within: float = 120.0) -> None:
        """Until `url` answers 2xx (a readiness probe)."""
        deadline = time.monotonic() + within
        async with httpx.AsyncClient(trust_env=False, timeout=2.0) as client:
            while True:
                self.check_alive()
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(url)).is_success:
                        return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.name} did not answer {url} in {within} s")
                await asyncio.sleep(0.05)

    async def wait_log(self, text: str, within: float = 120.0) -> None:
        """Until the process has logged `text` (for processes without an HTTP port)."""
        deadline = time.monotonic() + within
        while text not in self.log():
            self.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} did not log {text!r} in {within} s")
            await asyncio.sleep(0.05)


class Processes:
    """Starts processes and stops every one of them, newest first, when the block ends."""

    def __init__(self, log_dir: Path, env_defaults: dict[str, str] | None = None) -> None:
        self.log_dir = log_dir
        # Environment every child gets unless its own `env` says otherwise.
        self.env_defaults = env_defaults or {}
        self._started: list[Process] = []

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Process:
        env = {**self.env_defaults, **(env or {})}
        process = Process(name, argv, env, self.log_dir / f"{name}.log")
        self._started.append(process)
        return process

    def __enter__(self) -> Processes:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for process in reversed(self._started):
            process.stop()


def _repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
