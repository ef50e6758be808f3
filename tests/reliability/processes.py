"""`falrelay serve` as a process the fault runs can kill and start again, as a supervisor
(systemd, Kubernetes) would."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx


def falrelay_command(*args: str) -> list[str]:
    script = Path(sys.executable).with_name("falrelay")
    return [str(script), *args] if script.exists() else [sys.executable, "-m", "app", *args]


def serve_environment(**settings: str) -> dict[str, str]:
    """This process's environment without its FALRELAY_* settings, plus `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FALRELAY_")}
    env.update({f"FALRELAY_{name.upper()}": value for name, value in settings.items()})
    return env


class ServeProcess:
    """One `falrelay serve` at a time on a fixed port; each life logs to a file of its own."""

    def __init__(self, env: dict[str, str], port: int, log_dir: Path) -> None:
        self.env = env
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_dir = log_dir
        self.lives = 0
        self.kills = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def logs(self) -> list[Path]:
        return sorted(self.log_dir.glob("serve-*.log"))

    def start(self) -> None:
        assert self._proc is None or self._proc.poll() is not None
        self.lives += 1
        with (self.log_dir / f"serve-{self.lives:04d}.log").open("wb") as log:
            self._proc = subprocess.Popen(
                falrelay_command("serve", "--host", "127.0.0.1", "--port", str(self.port)),
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no drain, no cleanup, whatever it was doing."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGKILL)
            self._proc.wait()
            self.kills += 1

    def stop(self) -> None:
        """SIGTERM and wait for the drain (the end of a run)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    async def ready(self, within: float = 60.0) -> None:
        """Until /readyz answers 200, starting the process again whenever it exits (it does
        when Postgres is unreachable at startup)."""
        deadline = time.monotonic() + within
        async with httpx.AsyncClient(timeout=2) as http:
            while time.monotonic() < deadline:
                if not self.alive():
                    self.start()
                try:
                    if (await http.get(f"{self.url}/readyz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError(f"falrelay serve was not ready within {within} s")
