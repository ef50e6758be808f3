"""The `falrelay` command, run as a user runs it: a subprocess, real HTTP on loopback."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import httpx
import pytest

from app.auth import keys
from app.db.migrate import head_revision
from app.db.pool import asyncpg_dsn
from tests.conftest import PostgresServer
from tests.servers import free_port

pytestmark = pytest.mark.slow


def falrelay(*args: str) -> list[str]:
    script = Path(sys.executable).with_name("falrelay")
    return [str(script), *args] if script.exists() else [sys.executable, "-m", "app", *args]


def run(*args: str, database_url: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FALRELAY_")}
    if database_url:
        env["FALRELAY_DATABASE_URL"] = database_url
    return subprocess.run(
        falrelay(*args), env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_commands_without_a_database_url_say_what_to_do() -> None:
    for command in (["serve"], ["migrate"], ["keys", "create", "x"]):
        result = run(*command)
        assert result.returncode == 2, result
        assert "FALRELAY_DATABASE_URL is not set" in result.stderr
        assert "falrelay dev" in result.stderr
        assert result.stdout == ""


async def test_migrate_then_keys_create_prints_only_the_key(postgres: PostgresServer) -> None:
    name = "falrelay_cli_keys"
    url = await postgres.create_database(name)
    try:
        migrated = run("migrate", database_url=url)
        assert migrated.returncode == 0, migrated.stderr
        assert head_revision() in migrated.stderr

        created = run("keys", "create", "billing-service", database_url=url)
        assert created.returncode == 0, created.stderr
        key = created.stdout.strip()
        assert created.stdout == key + "\n"
        assert re.fullmatch(r"frk_[A-Za-z0-9_-]{43}", key)
        assert "billing-service" in created.stderr
        assert key not in created.stderr

        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:
            row = await conn.fetchrow(
                "SELECT c.name FROM api_keys k JOIN clients c ON c.id = k.client_id "
                "WHERE k.key_hash = $1",
                keys.hash_key(key),
            )
        finally:
            await conn.close()
        assert row is not None
        assert row["name"] == "billing-service"

        revoked = run("keys", "revoke", key, database_url=url)
        assert revoked.returncode == 0, revoked.stderr
        again = run("keys", "revoke", key, database_url=url)
        assert again.returncode == 1
        assert "no active key" in again.stderr
        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:
            revoked_at = await conn.fetchval(
                "SELECT revoked_at FROM api_keys WHERE key_hash = $1", keys.hash_key(key)
            )
        finally:
            await conn.close()
        assert revoked_at is not None
    finally:
        await postgres.drop_database(name)


class DevProcess:
    def __init__(self, cwd: Path, port: int) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FALRELAY_")}
        self.base = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            falrelay("dev", "--port", str(port)),
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.output: list[str] = []
        self.key = self._wait_for_key()

    def _wait_for_key(self) -> str:
        deadline = time.monotonic() + 60
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.output.append(line)
            match = re.search(r"API key\s+(frk_\S+)", line)
            if match:
                return match.group(1)
        self.stop()
        raise AssertionError("falrelay dev printed no key:\n" + "".join(self.output))

    def stop(self, sig: signal.Signals = signal.SIGINT) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            assert self.proc.stdout is not None
            self.proc.stdout.close()


def test_dev_serves_jobs_with_no_configuration_and_keeps_them(tmp_path: Path) -> None:
    dev_dir = tmp_path
    port = free_port()
    dev = DevProcess(dev_dir, port)
    try:
        assert f"API       {dev.base}" in "".join(dev.output)
        headers = {"Authorization": f"Bearer {dev.key}"}
        created = httpx.post(
            f"{dev.base}/v1/jobs",
            json={"input": {"prompt": "a red fox in snow", "aspect_ratio": "16:9"}},
            headers=headers,
        )
        assert created.status_code == 201, created.text
        job = created.json()
        # The built-in fake fal finishes it, and the image URL serves a real PNG.
        deadline = time.monotonic() + 20
        while job["status"] not in ("succeeded", "failed"):
            assert time.monotonic() < deadline, job
            time.sleep(0.1)
            job = httpx.get(f"{dev.base}/v1/jobs/{job['id']}", headers=headers).json()
        assert job["status"] == "succeeded", job
        image = job["output"]["images"][0]
        assert image["url"].startswith(f"{dev.base}/fakefal/files/")
        png = httpx.get(image["url"])
        assert png.content.startswith(b"\x89PNG")
        assert (image["width"], image["height"]) == (2816, 1584)
        assert httpx.get(f"{dev.base}/readyz").status_code == 200
    finally:
        assert dev.stop(signal.SIGTERM) == 0
    pgdata = dev_dir / ".falrelay" / "pgdata"
    assert not (pgdata / "postmaster.pid").exists(), "the embedded Postgres was left running"

    # A second start finds the same data and prints the same key.
    again = DevProcess(dev_dir, port)
    try:
        assert again.key == dev.key
        response = httpx.get(
            f"{again.base}/v1/jobs/{job['id']}", headers={"Authorization": f"Bearer {again.key}"}
        )
        assert response.status_code == 200
    finally:
        assert again.stop(signal.SIGINT) == 0
