"""A Postgres server of a test's own, which it may stop, crash and start again.

The shared test server (tests/conftest.py) must never go down under other tests, so the fault
and outage runs start their own from the pgserver package's binaries: initdb into a temporary
directory, then the postmaster on a free loopback TCP port that stays the same across restarts,
so the service under test reconnects to the URL it was given.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path
from types import TracebackType

from tests.servers import free_port

# initdb and postgres refuse to run as root; pgserver runs them as a system user of its own.
_SYSTEM_USER = "pgserver"


def _scratch_dir() -> str | None:
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


class DisposablePostgres:
    def __init__(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR unset
            import pgserver
            from pgserver import utils

        self._pgserver = pgserver
        self._root = Path(tempfile.mkdtemp(prefix="falrelay-pg-", dir=_scratch_dir()))
        self.pgdata = self._root / "pgdata"
        self.log = self._root / "postgres.log"
        self.port = free_port()
        self._user: str | None = None
        self.pgdata.mkdir()
        if os.geteuid() == 0:
            self._user = _SYSTEM_USER
            entry = utils.ensure_user_exists(_SYSTEM_USER)
            utils.ensure_prefix_permissions(self.pgdata)
            utils.ensure_prefix_permissions(Path(pgserver.__file__).parent / "pginstall" / "bin")
            for path in (self._root, self.pgdata):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        self._run(
            "initdb",
            ["--auth=trust", "--encoding=utf8", "-U", "postgres", "--no-sync"],
        )

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        # fsync=off is safe here: a crash is a killed postmaster, never a lost page cache.
        # synchronous_commit stays on: off, an immediate stop loses commits already answered.
        options = f"-h 127.0.0.1 -p {self.port} -k {self._root} -c fsync=off -c max_connections=200"
        self._run("pg_ctl", ["-w", "-t", "30", "-o", options, "-l", str(self.log), "start"])

    def stop(self, mode: str = "fast") -> None:
        """`fast`: a clean shutdown; `immediate`: as if the server crashed (recovery at start)."""
        self._run("pg_ctl", ["-w", "-t", "30", "-m", mode, "stop"])

    def running(self) -> bool:
        try:
            self._run("pg_ctl", ["status"])
        except subprocess.CalledProcessError:
            return False
        return True

    def close(self) -> None:
        if self.running():
            self.stop("immediate")
        shutil.rmtree(self._root, ignore_errors=True)

    def __enter__(self) -> DisposablePostgres:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _run(self, command: str, args: list[str]) -> str:
        run = getattr(self._pgserver, command)
        output: str = run(args, pgdata=self.pgdata, user=self._user, timeout=60)
        return output
