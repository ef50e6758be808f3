"""`falrelay submit`, run as a user runs it (a subprocess) against the whole product over real
HTTP: the service, its workers and the fake fal."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from app.submit import output_paths
from tests.sdk.support import key_of
from tests.servers import free_port
from tests.stack import Stack, StackFactory
from tests.support import job_uuid

pytestmark = pytest.mark.slow

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def falrelay(*args: str) -> list[str]:
    script = Path(sys.executable).with_name("falrelay")
    return [str(script), *args] if script.exists() else [sys.executable, "-m", "app", *args]


async def submit(
    stack: Stack, cwd: Path, *args: str, key: bool = True, stderr: int | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FALRELAY_")}
    env["FALRELAY_URL"] = stack.service_url
    if key:
        env["FALRELAY_API_KEY"] = key_of(stack)
    return await asyncio.to_thread(
        subprocess.run,
        falrelay("submit", *args),
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=stderr if stderr is not None else subprocess.PIPE,
        text=True,
        timeout=60,
        check=False,
    )


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


async def test_submit_waits_shows_progress_and_downloads_the_image(
    make_stack: StackFactory, tmp_path: Path
) -> None:
    async with make_stack() as stack:
        result = await submit(
            stack,
            tmp_path,
            "a red fox in snow",
            "--aspect-ratio", "16:9",
            "--resolution", "1K",
            "--metadata", "order_id=A-1001",
            "--wait",
            "--out", "fox.png",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert result.stdout == "fox.png\n"
        image = (tmp_path / "fox.png").read_bytes()
        assert png_size(image) == (1280, 720)

        # Not a terminal: one line per state, ending at succeeded.
        lines = result.stderr.splitlines()
        job_id = lines[0].split()[0]
        assert lines[0].startswith(f"{job_id} queued")
        assert lines[-1].startswith(f"{job_id} succeeded")
        assert all(line.startswith(job_id) for line in lines)

        job = (await stack.api.get(f"/v1/jobs/{job_id}")).json()
        assert job["metadata"] == {"order_id": "A-1001"}
        assert job["input"]["aspect_ratio"] == "16:9"
        # The file is the very image the job's URL serves.
        served = await stack.fal.get(job["output"]["images"][0]["url"])
        assert served.content == image


async def test_submit_json_prints_the_job_alone_and_finds_the_dev_key(
    make_stack: StackFactory, tmp_path: Path
) -> None:
    async with make_stack() as stack:
        # As `falrelay dev` leaves it: the key in ./.falrelay/dev-api-key, no FALRELAY_API_KEY.
        (tmp_path / ".falrelay").mkdir()
        (tmp_path / ".falrelay" / "dev-api-key").write_text(key_of(stack) + "\n")
        result = await submit(
            stack, tmp_path, "a red fox", "--seed", "42", "--wait", "--json", key=False
        )
        assert result.returncode == 0, result.stderr
        printed = json.loads(result.stdout)
        assert printed == (await stack.api.get(f"/v1/jobs/{printed['id']}")).json()
        assert printed["status"] == "succeeded"
        assert printed["input"]["seed"] == 42

        # Without --wait: only the job id, and the job is stored.
        queued = await submit(stack, tmp_path, "a grey wolf")
        assert queued.returncode == 0, queued.stderr
        job_id = queued.stdout.strip()
        assert queued.stdout == job_id + "\n"
        row = await stack.pool.fetchrow(
            "SELECT input FROM jobs WHERE id = $1 AND client_id = $2",
            job_uuid(job_id),
            stack.client_id,
        )
        assert row is not None
        assert row["input"]["prompt"] == "a grey wolf"


async def test_submit_on_a_terminal_rewrites_one_status_line(
    make_stack: StackFactory, tmp_path: Path
) -> None:
    async with make_stack() as stack:
        await stack.configure_fal(run_latency=0.5)
        controller, terminal = pty.openpty()
        try:
            result = await submit(stack, tmp_path, "a red fox", "--wait", stderr=terminal)
            os.close(terminal)
            shown = b""
            while True:
                try:
                    chunk = os.read(controller, 4096)
                except OSError:  # the terminal's other end is closed: all read
                    break
                if not chunk:
                    break
                shown += chunk
        finally:
            os.close(controller)
        assert result.returncode == 0
        text = shown.decode()
        assert "\r\x1b[K" in text  # the line is redrawn in place
        assert text.count("\n") <= 2  # (a pty turns the one final newline into \r\n)
        final = text.rsplit("\r\x1b[K", 1)[1]
        assert " → " in final
        assert "succeeded" in final
        assert result.stdout.strip().endswith(".png")


async def test_exit_codes_for_a_failed_job_and_for_errors(
    make_stack: StackFactory, tmp_path: Path
) -> None:
    async with make_stack() as stack:
        await stack.configure_fal(error_rate=1.0, error_types=["internal_error"])
        failed = await submit(stack, tmp_path, "a red fox", "--wait", "--json")
        assert failed.returncode == 1, failed.stderr
        job = json.loads(failed.stdout)
        assert job["status"] == "failed"
        assert f"{job['id']} failed" in failed.stderr

        refused = await submit(stack, tmp_path, "a red fox", "--aspect-ratio", "7:5", "--wait")
        assert refused.returncode == 2
        assert refused.stdout == ""
        assert "422 Validation failed" in refused.stderr
        assert "body.input.aspect_ratio" in refused.stderr

        keyless = await submit(stack, tmp_path, "a red fox", key=False)
        assert keyless.returncode == 2
        assert "no API key" in keyless.stderr

        count = await stack.pool.fetchval(
            "SELECT count(*) FROM jobs WHERE client_id = $1", stack.client_id
        )
        assert count == 1  # only the failed job: refused requests store nothing


def test_no_service_at_the_url_says_how_to_start_one(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    env = {k: v for k, v in os.environ.items() if not k.startswith("FALRELAY_")}
    done = subprocess.run(
        falrelay("submit", "a red fox", "--url", url, "--key", "k"),
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert f"no answer from {url}" in done.stderr
    assert "falrelay dev" in done.stderr


def test_several_images_are_numbered() -> None:
    assert output_paths(Path("fox.png"), 1) == [Path("fox.png")]
    assert output_paths(Path("out/fox.png"), 2) == [Path("out/fox-1.png"), Path("out/fox-2.png")]
