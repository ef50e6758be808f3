"""What `falrelay dev` prints: one line where the embedded Postgres starts (not pgserver's initdb
and pg_ctl output), and one line, and a non-zero exit, when its port is taken."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.cli.test_commands import DevProcess, falrelay
from tests.servers import free_port

pytestmark = pytest.mark.slow

# What pgserver and alembic log when nobody quiets them.
NOISE = ("pgserver", "initdb", "pg_ctl", "The files belonging", "alembic", "Running upgrade")


def _noise(lines: list[str]) -> list[str]:
    return [line for line in lines if any(word in line for word in NOISE)]


def test_a_first_start_says_one_line_and_a_second_on_the_same_port_one_more(
    tmp_path: Path,
) -> None:
    port = free_port()
    first = DevProcess(tmp_path, port)  # a fresh data directory: initdb, then every migration
    try:
        before_banner = "".join(first.output).split("falrelay dev is running")[0].splitlines()
        assert _noise(before_banner) == []
        postgres_lines = [line for line in before_banner if "Postgres" in line]
        assert postgres_lines == ["starting the embedded Postgres in ./.falrelay/pgdata ..."]
        # The banner's own example names this program as it can be run again from here (the
        # venv is not activated in this shell).
        assert first.proc.stdout is not None
        while not first.output[-1].startswith("Or: "):  # the banner is printed at once
            line = first.proc.stdout.readline()
            assert line, "falrelay dev ended:\n" + "".join(first.output)
            first.output.append(line)
        example = first.output[-1]
        program = example.split()[1]
        assert program == falrelay()[0] or shutil.which(program), example

        env = {k: v for k, v in os.environ.items() if not k.startswith("FALRELAY_")}
        second = subprocess.run(
            falrelay("dev", "--port", str(port)),
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert second.returncode == 1
        assert second.stdout == ""
        assert second.stderr.splitlines() == [
            f"falrelay dev: port {port} on 127.0.0.1 is already in use (another falrelay dev?); "
            "stop it, or choose another with --port"
        ]
        # The first one is untouched.
        assert httpx.get(f"{first.base}/readyz").status_code == 200
    except BaseException:
        first.stop()
        raise
    # Nor does stopping it print pgserver's bookkeeping.
    first.proc.send_signal(signal.SIGINT)
    rest, _ = first.proc.communicate(timeout=30)
    assert first.proc.returncode == 0
    assert _noise(rest.splitlines()) == []
    assert "Shutting down" in rest
    assert not (tmp_path / ".falrelay" / "pgdata" / "postmaster.pid").exists()
