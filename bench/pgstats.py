"""A Postgres that counts what it is asked: statements, with their calls, rows and time.

The embedded server (pgserver's PostgreSQL 16) ships no `pg_stat_statements`, so the
benchmarks that count statements (`statements`, `watch`) get a server of their own, the first
of these that can be had:

1. `FALRELAY_BENCH_DATABASE_URL`, when that server already preloads `pg_stat_statements`;
2. a private server from Debian's PostgreSQL packages (`/usr/lib/postgresql/<v>/bin`, whose
   `lib/` holds `pg_stat_statements.so`): initdb in a temp dir, a free loopback port,
   `shared_preload_libraries=pg_stat_statements`, `pg_stat_statements.track=all`. As root it
   runs as the `postgres` user (Postgres refuses to run as root). The machine's own server is
   never touched;
3. else a private embedded server with `log_statement=all`, whose log is parsed: calls per
   statement only (no rows, no time), said in the report.

Either way the benchmark has the server to itself, so its counts hold nothing of the other
benchmarks that run beside it in smoke mode. Transactions come from `pg_stat_database`.
The harness's own queries carry `HARNESS` in a comment and are left out of every count.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from app.db import embedded
from app.db.pool import asyncpg_dsn
from bench.database import ENV_URL, MAX_CONNECTIONS, BenchPostgres
from bench.processes import HOST, free_port

HARNESS = "/* bench-harness */"
DEBIAN_ROOT = Path("/usr/lib/postgresql")
PG_STAT_STATEMENTS = "pg_stat_statements"
LOG_STATEMENT = "log_statement"


@dataclass
class Statement:
    query: str
    calls: int
    rows: int | None = None
    total_ms: float | None = None
    toplevel: bool = True  # False: run inside a function or trigger (track=all)
    # What identifies the statement across windows: pg_stat_statements' query id (its text
    # may be stored with or without its constants replaced), else the text.
    key: str = ""

    def __post_init__(self) -> None:
        self.key = self.key or self.query


@dataclass
class Snapshot:
    """What one database was asked between a `reset` and a `read`."""

    seconds: float
    statements: list[Statement]
    xact_commit: int
    xact_rollback: int

    @property
    def calls(self) -> int:
        """Statements sent by clients (top level): the round trips worth counting."""
        return sum(s.calls for s in self.statements if s.toplevel)


@dataclass
class StatsServer:
    postgres: BenchPostgres
    method: str  # PG_STAT_STATEMENTS or LOG_STATEMENT
    description: str
    version: str = ""
    log_path: Path | None = None  # LOG_STATEMENT: the server's log
    notes: list[str] = field(default_factory=list)

    async def counter(self, database_url: str) -> StatementCounter:
        counter = StatementCounter(self, database_url)
        await counter.prepare()
        return counter


class StatementCounter:
    """Counts one database's statements between `reset` and `read`."""

    def __init__(self, server: StatsServer, database_url: str) -> None:
        self.server = server
        self.dsn = asyncpg_dsn(database_url)
        self.database = database_url.rsplit("/", 1)[1].split("?", 1)[0]
        self._oid = 0
        self._has_toplevel = False
        self._log_offset = 0
        self._reset_at = time.monotonic()

    async def prepare(self) -> None:
        conn = await asyncpg.connect(asyncpg_dsn(self.server.postgres.admin_url))
        try:
            self._oid = await conn.fetchval(
                f"SELECT oid FROM pg_database WHERE datname = $1 {HARNESS}", self.database
            )
            if self.server.method == PG_STAT_STATEMENTS:
                await conn.execute(f"CREATE EXTENSION IF NOT EXISTS pg_stat_statements {HARNESS}")
                self._has_toplevel = bool(
                    await conn.fetchval(
                        "SELECT count(*) FROM pg_attribute WHERE attrelid = "
                        f"'pg_stat_statements'::regclass AND attname = 'toplevel' {HARNESS}"
                    )
                )
        finally:
            await conn.close()

    async def harness_fetchval(self, sql: str, *args: Any) -> Any:
        """A query of the harness's own on the measured database, left out of the counts."""
        conn = await asyncpg.connect(self.dsn)
        try:
            return await conn.fetchval(f"{sql} {HARNESS}", *args)
        finally:
            await conn.close()

    async def calls_so_far(self, prefix: str) -> int | None:
        """Calls since the last reset of the statements starting with `prefix` (None without
        pg_stat_statements): a cheap look at a rate while a window runs."""
        if self.server.method != PG_STAT_STATEMENTS:
            return None
        conn = await asyncpg.connect(asyncpg_dsn(self.server.postgres.admin_url))
        try:
            calls = await conn.fetchval(
                "SELECT COALESCE(sum(calls), 0) FROM pg_stat_statements "
                f"WHERE dbid = $1 AND query LIKE $2 {HARNESS}",
                self._oid,
                prefix + "%",
            )
        finally:
            await conn.close()
        return int(calls)

    async def reset(self) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.execute(f"SELECT pg_stat_reset() {HARNESS}")
        finally:
            await conn.close()
        if self.server.method == PG_STAT_STATEMENTS:
            admin = await asyncpg.connect(asyncpg_dsn(self.server.postgres.admin_url))
            try:
                await admin.execute(
                    f"SELECT pg_stat_statements_reset(0, $1::oid, 0) {HARNESS}", self._oid
                )
            finally:
                await admin.close()
        else:
            assert self.server.log_path is not None
            self._log_offset = self.server.log_path.stat().st_size
        self._reset_at = time.monotonic()

    async def read(self) -> Snapshot:
        seconds = time.monotonic() - self._reset_at
        if self.server.method == PG_STAT_STATEMENTS:
            statements = await self._read_pg_stat_statements()
        else:
            statements = await asyncio.to_thread(self._read_log)
        conn = await asyncpg.connect(self.dsn)
        try:
            row = await conn.fetchrow(
                "SELECT xact_commit, xact_rollback FROM pg_stat_database "
                f"WHERE datname = current_database() {HARNESS}"
            )
        finally:
            await conn.close()
        assert row is not None
        return Snapshot(
            seconds=seconds,
            statements=statements,
            # The harness's own reset counts here too: the same in every window compared.
            xact_commit=int(row["xact_commit"]),
            xact_rollback=int(row["xact_rollback"]),
        )

    async def _read_pg_stat_statements(self) -> list[Statement]:
        toplevel = "toplevel" if self._has_toplevel else "true AS toplevel"
        conn = await asyncpg.connect(asyncpg_dsn(self.server.postgres.admin_url))
        try:
            rows = await conn.fetch(
                f"SELECT queryid, query, calls, rows, total_exec_time, {toplevel} "
                f"FROM pg_stat_statements WHERE dbid = $1 {HARNESS}",
                self._oid,
            )
        finally:
            await conn.close()
        # One entry per query id and level: the same statement can have several entries (one
        # per user), and its text is stored as first seen after a reset: with its constants
        # replaced by $n when it was parsed after the reset, as written when it was prepared
        # before. The text kept is the normalised one where there is one.
        merged: dict[tuple[str, bool], Statement] = {}
        for r in rows:
            if HARNESS in r["query"]:
                continue
            key = (str(r["queryid"]), bool(r["toplevel"]))
            text = normalise(r["query"])
            s = merged.setdefault(key, Statement(text, 0, 0, 0.0, key[1], key=key[0]))
            if "$" in text and "$" not in s.query:
                s.query = text
            s.calls += int(r["calls"])
            s.rows = (s.rows or 0) + int(r["rows"])
            s.total_ms = (s.total_ms or 0.0) + float(r["total_exec_time"])
        return list(merged.values())

    def _read_log(self) -> list[Statement]:
        assert self.server.log_path is not None
        with self.server.log_path.open("rb") as log:
            log.seek(self._log_offset)
            text = log.read().decode(errors="replace")
        counts: dict[str, int] = {}
        for database, query in parse_statement_log(text):
            if database == self.database and HARNESS not in query:
                key = normalise(query)
                counts[key] = counts.get(key, 0) + 1
        return [Statement(query=q, calls=n) for q, n in counts.items()]


# `log_line_prefix` of the fallback: the database names whose statement it is.
LOG_LINE_PREFIX = "%m [%p] db=%d "
_LOG_ENTRY = re.compile(
    r"^\S+ \S+ \S+ \[\d+\] db=(?P<db>\S*) (?P<level>[A-Z]+):\s+(?P<message>.*)$"
)
_STATEMENT = re.compile(r"^(?:statement|execute [^:]+):\s(?P<query>.*)$", re.DOTALL)


def parse_statement_log(text: str) -> list[tuple[str, str]]:
    """(database, statement) of every statement `log_statement=all` logged in `text`: its
    `statement: ...` (simple protocol) and `execute <name>: ...` (a prepared statement's run)
    lines, with their continuation lines (a statement's own newlines)."""
    found: list[tuple[str, str]] = []
    current: list[str] | None = None
    database = ""
    for line in text.splitlines():
        entry = _LOG_ENTRY.match(line)
        if entry is None:
            if current is not None:
                current.append(line)
            continue
        if current is not None:
            found.append((database, "\n".join(current)))
            current = None
        statement = _STATEMENT.match(entry["message"]) if entry["level"] == "LOG" else None
        if statement is not None:
            database = entry["db"]
            current = [statement["query"]]
    if current is not None:
        found.append((database, "\n".join(current)))
    return found


def normalise(query: str) -> str:
    """One line, single spaces: the same statement from two call sites reads the same."""
    return " ".join(query.split())


async def _preloads_pg_stat_statements(admin_url: str) -> bool:
    conn = await asyncpg.connect(asyncpg_dsn(admin_url))
    try:
        preload = str(await conn.fetchval("SHOW shared_preload_libraries"))
    finally:
        await conn.close()
    return PG_STAT_STATEMENTS in preload


def debian_postgres() -> Path | None:
    """The newest Debian PostgreSQL whose install has pg_stat_statements, by its bin dir."""
    if not DEBIAN_ROOT.is_dir():
        return None
    candidates = []
    for version in DEBIAN_ROOT.iterdir():
        bin_dir = version / "bin"
        if (bin_dir / "initdb").exists() and (version / "lib" / "pg_stat_statements.so").exists():
            with contextlib.suppress(ValueError):
                candidates.append((float(version.name), bin_dir))
    return max(candidates)[1] if candidates else None


def _as_postgres_user(argv: list[str]) -> list[str]:
    """Postgres will not run as root: as root, run it as the `postgres` user."""
    if os.geteuid() != 0:
        return argv
    runuser = shutil.which("runuser")
    if runuser is None:
        raise RuntimeError("running as root without runuser: cannot start Postgres")
    return [runuser, "-u", "postgres", "--", *argv]


def _run(argv: list[str], log: Path) -> None:
    with log.open("ab") as out:
        subprocess.run(
            _as_postgres_user(argv), stdout=out, stderr=subprocess.STDOUT, check=True, timeout=120
        )


@contextlib.asynccontextmanager
async def _debian_server(bin_dir: Path, scratch: Path | None) -> AsyncIterator[StatsServer]:
    with tempfile.TemporaryDirectory(prefix="falrelay-bench-pgss-", dir=scratch) as tmp:
        root = Path(tmp)
        # The server's log is written by the server; our commands' output goes to ctl.log.
        data, log, ctl = root / "data", root / "server.log", root / "ctl.log"
        if os.geteuid() == 0:
            shutil.chown(root, "postgres", "postgres")
            os.chmod(root, 0o700)
        port = free_port()
        await asyncio.to_thread(
            _run,
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
            ctl,
        )
        options = " ".join(
            [
                f"-p {port}",
                f"-c listen_addresses={HOST}",
                f"-c unix_socket_directories={root}",
                f"-c max_connections={MAX_CONNECTIONS}",
                f"-c shared_preload_libraries={PG_STAT_STATEMENTS}",
                "-c pg_stat_statements.track=all",
                "-c pg_stat_statements.max=10000",
            ]
        )
        pg_ctl = str(bin_dir / "pg_ctl")
        await asyncio.to_thread(
            _run, [pg_ctl, "-D", str(data), "-l", str(log), "-o", options, "-w", "start"], ctl
        )
        try:
            postgres = BenchPostgres(
                admin_url=f"postgresql://postgres@{HOST}:{port}/postgres",
                description=f"private {bin_dir.parent.name} with pg_stat_statements",
                pgdata=data,
            )
            server = StatsServer(postgres, PG_STAT_STATEMENTS, postgres.description)
            server.version = await postgres.version()
            try:
                yield server
            finally:
                await postgres.drop_all()
        finally:
            await asyncio.to_thread(
                _run, [pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"], ctl
            )


@contextlib.asynccontextmanager
async def _logging_embedded_server(scratch: Path | None) -> AsyncIterator[StatsServer]:
    with tempfile.TemporaryDirectory(prefix="falrelay-bench-pglog-", dir=scratch) as tmp:
        pgdata = Path(tmp) / "pgdata"
        server = await asyncio.to_thread(embedded.start, pgdata, cleanup_mode="delete")
        try:
            conn = await asyncpg.connect(asyncpg_dsn(server.url("postgres")))
            try:
                await conn.execute("ALTER SYSTEM SET log_statement = 'all'")
                await conn.execute(f"ALTER SYSTEM SET log_line_prefix = '{LOG_LINE_PREFIX}'")
                await conn.execute("SELECT pg_reload_conf()")
            finally:
                await conn.close()
            postgres = BenchPostgres(
                admin_url=server.url("postgres"),
                description="private embedded (pgserver) with log_statement=all",
                pgdata=pgdata,
            )
            stats = StatsServer(
                postgres,
                LOG_STATEMENT,
                postgres.description,
                log_path=pgdata / "log",
                notes=[
                    "no pg_stat_statements to be had (no server preloading it, no Debian "
                    "PostgreSQL): statements counted from log_statement=all on a private "
                    "embedded server; calls only, no rows or time"
                ],
            )
            stats.version = await postgres.version()
            try:
                yield stats
            finally:
                await postgres.drop_all()
        finally:
            await asyncio.to_thread(server.stop)


@contextlib.asynccontextmanager
async def stats_postgres(scratch: Path | None = None) -> AsyncIterator[StatsServer]:
    """The server a statement-counting benchmark runs on (see the module's docstring)."""
    external = os.environ.get(ENV_URL)
    if external and await _preloads_pg_stat_statements(external):
        postgres = BenchPostgres(admin_url=external, description=f"{ENV_URL}")
        server = StatsServer(postgres, PG_STAT_STATEMENTS, postgres.description)
        server.version = await postgres.version()
        try:
            yield server
        finally:
            await postgres.drop_all()
        return
    bin_dir = debian_postgres()
    if bin_dir is not None:
        async with _debian_server(bin_dir, scratch) as server:
            yield server
        return
    async with _logging_embedded_server(scratch) as server:
        yield server
