"""A real S3 API on loopback for tests: `moto_server` (from `moto[server]`) as a subprocess on a
free port, started by the tests themselves and stopped with them."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

import httpx

from tests.servers import free_port

REGION = "us-east-1"
# What the S3 store reads (obstore takes the standard AWS variables); moto accepts any.
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "falrelay-test",
    "AWS_SECRET_ACCESS_KEY": "falrelay-test-secret",
    "AWS_REGION": REGION,
}


# The bucket the session's moto_server holds; tests share it, each under a prefix of its own.
BUCKET = "falrelay-tests"


class MotoServer:
    def __init__(self) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in __exit__)
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> MotoServer:
        script = Path(sys.executable).parent / "moto_server"
        port = self.url.rsplit(":", 1)[1]
        self._process = subprocess.Popen(
            [str(script), "-H", "127.0.0.1", "-p", port],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60  # a bound: moto imports for seconds on a busy machine
        while True:
            try:
                if httpx.get(f"{self.url}/moto-api/", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if self._process.poll() is not None or time.monotonic() > deadline:
                self._log.seek(0)
                raise RuntimeError(f"moto_server did not start: {self._log.read()[-2000:]!r}")
            time.sleep(0.05)

    def create_bucket(self, name: str) -> None:
        import boto3  # moto's own dependency: a real S3 client for the set-up

        boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        ).create_bucket(Bucket=name)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._log.close()
