"""Slow and idle clients against a real `falrelay api` process: partial headers, a partial
body and idle keep-alive connections are closed within their timeouts, a normal request is
answered meanwhile, long responses are never cut, and connections past the cap get 503."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import secrets
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest

from app.auth import service as auth_service
from app.db.pool import Pool, create_pool
from tests.conftest import PostgresServer
from tests.reliability.processes import falrelay_command, serve_environment
from tests.servers import free_port

pytestmark = pytest.mark.slow

HEADER_TIMEOUT = 2.0
BODY_TIMEOUT = 2.0
KEEPALIVE_TIMEOUT = 1
SLOW_CLIENTS = 500
# The server starts with fewer descriptors than the slow clients need: it must raise its own
# soft limit, or it cannot accept the normal request.
SERVER_SOFT_NOFILE = 256
# On a busy machine a timer fires, and 500 sockets close, a little late; and the server may
# start its clock a little before the client's `opened`.
LATE = 2.0
EARLY = HEADER_TIMEOUT - 0.25
HOST = "127.0.0.1"


@dataclass
class Api:
    url: str
    port: int
    pool: Pool
    key: str
    log: Path


@contextlib.asynccontextmanager
async def api_process(
    database_url: str, log: Path, *, soft_nofile: int | None = None, **settings: str
) -> AsyncIterator[Api]:
    pool = await create_pool(database_url, min_size=1, max_size=2)
    _, key = await auth_service.create_client(pool, "slow-clients")
    port = free_port()
    env = serve_environment(database_url=database_url, log_format="json", **settings)

    def lower_nofile() -> None:
        if soft_nofile is not None:
            _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft_nofile, hard))

    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *falrelay_command("api", "--host", HOST, "--port", str(port)),
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=lower_nofile,
        )
    try:
        url = f"http://{HOST}:{port}"
        deadline = time.monotonic() + 30
        async with httpx.AsyncClient(timeout=2) as http:
            while True:
                if proc.returncode is not None:
                    raise AssertionError(await asyncio.to_thread(log.read_text))
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get(f"{url}/readyz")).status_code == 200:
                        break
                assert time.monotonic() < deadline, "falrelay api did not become ready"
                await asyncio.sleep(0.05)
        yield Api(url, port, pool, key, log)
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        await pool.close()


@pytest.fixture(scope="module")
def client_nofile() -> Iterator[None]:
    """Room for this process's own ends of the slow connections."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4 * SLOW_CLIENTS
    if soft != resource.RLIM_INFINITY and soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.skip(f"the open files hard limit ({hard}) is below {wanted}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture(scope="module")
async def api(
    postgres: PostgresServer,
    template_database: str,
    tmp_path_factory: pytest.TempPathFactory,
    client_nofile: None,
) -> AsyncIterator[Api]:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2 * SLOW_CLIENTS:
        pytest.skip(f"the open files hard limit ({hard}) leaves the server no room to raise")
    name = f"falrelay_t_{secrets.token_hex(6)}"
    database_url = await postgres.create_database(name, template=template_database)
    try:
        async with api_process(
            database_url,
            tmp_path_factory.mktemp("slow") / "api.log",
            soft_nofile=SERVER_SOFT_NOFILE,
            http_header_timeout_seconds=str(HEADER_TIMEOUT),
            http_body_timeout_seconds=str(BODY_TIMEOUT),
            http_keepalive_timeout_seconds=str(KEEPALIVE_TIMEOUT),
            http_max_connections=str(2 * SLOW_CLIENTS),
        ) as server:
            yield server
    finally:
        await postgres.drop_database(name)


class Conn:
    """One raw client connection, timed from when it was opened."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, opened: float
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.opened = opened

    @classmethod
    async def open(cls, port: int, data: bytes = b"") -> Conn:
        # Timed from before the connect: the server's clock for it cannot start earlier, so
        # "closed after" is never short of the server's timeout however busy this loop is
        # (stamped after the connect, a starved loop made it look early).
        opened = time.monotonic()
        reader, writer = await asyncio.open_connection(HOST, port)
        conn = cls(reader, writer, opened)
        if data:
            writer.write(data)
            await writer.drain()
        return conn

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def until_closed(self, within: float) -> tuple[bytes, float]:
        """Everything the server sent, and when it closed, in seconds since `opened`."""
        data = b""

        async def read_all() -> None:
            nonlocal data
            while chunk := await self.reader.read(65536):
                data += chunk

        # A reset after the server's answer and close (a trickler's late byte) ends it too.
        with contextlib.suppress(ConnectionResetError):
            await asyncio.wait_for(read_all(), within)
        return data, time.monotonic() - self.opened

    async def response(self, within: float = 10) -> bytes:
        """One response with a Content-Length, the connection left open."""
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), within)
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        return head + await asyncio.wait_for(self.reader.readexactly(length), within)

    def close(self) -> None:
        self.writer.close()


def partial_headers(n: int) -> bytes:
    return f"GET /healthz HTTP/1.1\r\nHost: {HOST}\r\nX-Slow-Client: {n}".encode()


def request(path: str, *headers: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: {HOST}", *headers, "", ""]
    return "\r\n".join(lines).encode()


async def test_partial_headers_are_closed_and_a_normal_request_is_answered(api: Api) -> None:
    slow = [await Conn.open(api.port, partial_headers(n)) for n in range(SLOW_CLIENTS)]
    # A slowloris variant: headers trickled a byte at a time, each well inside the timeout.
    trickler = await Conn.open(api.port, b"GET /healthz HTTP/1.1\r\n")

    async def trickle() -> None:
        with contextlib.suppress(ConnectionError):
            while not trickler.reader.at_eof():
                await trickler.send(b"X")
                await asyncio.sleep(0.3)

    trickling = asyncio.create_task(trickle())
    try:
        async with httpx.AsyncClient(base_url=api.url, timeout=5) as http:
            started = time.monotonic()
            response = await http.get("/healthz")
            took = time.monotonic() - started
        assert response.status_code == 200
        assert took < 1.0, took
        # ...while every slow client was still connected.
        assert not any(conn.reader.at_eof() for conn in slow)

        results = await asyncio.gather(
            *(conn.until_closed(HEADER_TIMEOUT + 10) for conn in [*slow, trickler])
        )
    finally:
        trickling.cancel()
        for conn in [*slow, trickler]:
            conn.close()

    for data, closed_after in results:
        assert data.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), data
        assert b"\r\nconnection: close\r\n" in data
        assert EARLY < closed_after <= HEADER_TIMEOUT + LATE, closed_after

    async with httpx.AsyncClient(base_url=api.url, timeout=5) as http:
        assert (await http.get("/healthz")).status_code == 200


async def test_a_partial_body_is_answered_408_within_the_body_timeout(api: Api) -> None:
    body = orjson.dumps({"input": {"prompt": "never finished"}})
    head = (
        "POST /v1/jobs HTTP/1.1\r\n"
        f"Host: {HOST}\r\n"
        f"Authorization: Bearer {api.key}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    # Half the body at once; and a body trickled a byte at a time, each well inside the timeout.
    stalled = await Conn.open(api.port, head + body[: len(body) // 2])
    trickler = await Conn.open(api.port, head)

    async def trickle() -> None:
        with contextlib.suppress(ConnectionError):
            for byte in body[:-1]:
                if trickler.reader.at_eof():
                    return
                await trickler.send(bytes([byte]))
                await asyncio.sleep(0.3)

    trickling = asyncio.create_task(trickle())
    try:
        results = await asyncio.gather(
            stalled.until_closed(BODY_TIMEOUT + 10), trickler.until_closed(BODY_TIMEOUT + 10)
        )
    finally:
        trickling.cancel()
        stalled.close()
        trickler.close()

    for data, closed_after in results:
        assert data.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), data
        assert BODY_TIMEOUT - 0.25 <= closed_after <= BODY_TIMEOUT + LATE, closed_after
    assert await api.pool.fetchval("SELECT count(*) FROM jobs") == 0


async def test_idle_keep_alive_connections_are_closed(api: Api) -> None:
    idle = await Conn.open(api.port, request("/healthz"))
    # After a first request, a second one that stops halfway through its headers.
    half = await Conn.open(api.port, request("/healthz"))
    assert (await idle.response()).startswith(b"HTTP/1.1 200 ")
    idle.opened = time.monotonic()
    assert (await half.response()).startswith(b"HTTP/1.1 200 ")
    half.opened = time.monotonic()
    await half.send(b"GET /healthz HTTP/1.1\r\nHost: ")

    (idle_data, idle_after), (half_data, half_after) = await asyncio.gather(
        idle.until_closed(KEEPALIVE_TIMEOUT + 10), half.until_closed(HEADER_TIMEOUT + 10)
    )
    idle.close()
    half.close()

    assert idle_data == b""  # nothing was asked, nothing is answered
    # The server's timer started as it sent the answer, a little before `opened`.
    assert KEEPALIVE_TIMEOUT / 2 <= idle_after <= KEEPALIVE_TIMEOUT + LATE, idle_after
    assert half_data.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), half_data
    assert HEADER_TIMEOUT - 0.25 <= half_after <= HEADER_TIMEOUT + LATE, half_after


async def test_long_responses_outlive_every_timeout(api: Api) -> None:
    """An event stream and a `Prefer: wait` answer run longer than the header, body and
    keep-alive timeouts: those bound what the client sends, never what it receives."""
    longer = max(HEADER_TIMEOUT, BODY_TIMEOUT, KEEPALIVE_TIMEOUT) + 1
    auth = {"Authorization": f"Bearer {api.key}"}
    async with httpx.AsyncClient(base_url=api.url, headers=auth, timeout=30) as http:
        created = await http.post("/v1/jobs", json={"input": {"prompt": "a fox"}})
        assert created.status_code == 201
        job_id = created.json()["id"]  # stays queued: `falrelay api` runs no workers

        async def stream() -> tuple[int, bytes]:
            seen = bytearray()
            async with http.stream("GET", f"/v1/jobs/{job_id}/events") as response:

                async def read() -> None:
                    async for chunk in response.aiter_raw():
                        seen.extend(chunk)

                reading = asyncio.create_task(read())
                # The stream ends only at the job's terminal event, or if the server cuts it.
                done, _ = await asyncio.wait({reading}, timeout=longer)
                reading.cancel()
                assert not done, reading.exception() or "the stream ended"
                return response.status_code, bytes(seen)

        async def wait() -> tuple[bytes, float]:
            """`Prefer: wait`, from a client that sends its body a moment after its headers (so
            the body deadline is armed, and must be disarmed once the body is in)."""
            body = orjson.dumps({"input": {"prompt": "a fox, waited for"}})
            conn = await Conn.open(
                api.port,
                (
                    "POST /v1/jobs HTTP/1.1\r\n"
                    f"Host: {HOST}\r\n"
                    f"Authorization: Bearer {api.key}\r\n"
                    f"Prefer: wait={longer:g}\r\n"
                    "Content-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n"
                ).encode(),
            )
            try:
                await asyncio.sleep(BODY_TIMEOUT / 4)  # the client's pace, well inside the bound
                await conn.send(body)
                sent = time.monotonic()
                answer = await conn.response(within=longer + 10)
                return answer, time.monotonic() - sent
            finally:
                conn.close()

        async def pipelined() -> bytes:
            """An event stream, and on the same connection the start of a next request whose
            headers never finish: the stream must still not be cut."""
            conn = await Conn.open(
                api.port,
                request(f"/v1/jobs/{job_id}/events", f"Authorization: Bearer {api.key}")
                + partial_headers(0),
            )
            try:
                seen = bytearray()

                async def read() -> None:
                    while chunk := await conn.reader.read(65536):
                        seen.extend(chunk)

                reading = asyncio.create_task(read())
                done, _ = await asyncio.wait({reading}, timeout=longer)
                reading.cancel()
                assert not done, reading.exception() or "the stream ended"
                return bytes(seen)
            finally:
                conn.close()

        (stream_status, seen), (answer, waited), on_one = await asyncio.gather(
            stream(), wait(), pipelined()
        )
    assert stream_status == 200
    assert seen.startswith(b"retry: ")
    assert on_one.startswith(b"HTTP/1.1 200 OK\r\n"), on_one
    assert b"retry: " in on_one
    assert b" 408 " not in on_one
    assert answer.startswith(b"HTTP/1.1 201 Created\r\n"), answer
    assert f"\r\npreference-applied: wait={longer:g}\r\n".encode() in answer
    assert waited >= longer - 0.05
    assert await api.pool.fetchval("SELECT count(*) FROM jobs WHERE status = 'queued'") == 2


async def test_connections_past_the_cap_are_answered_503(
    fresh_database_url: str, tmp_path: Path
) -> None:
    cap = 20
    async with api_process(
        fresh_database_url, tmp_path / "api.log", http_max_connections=str(cap)
    ) as server:
        held: list[Conn] = []
        try:
            # Each connection is answered, and stays open (keep-alive), up to the cap.
            for _ in range(cap):
                conn = await Conn.open(server.port, request("/healthz"))
                assert (await conn.response()).startswith(b"HTTP/1.1 200 ")
                held.append(conn)
            past = await Conn.open(server.port, request("/healthz"))
            data, _ = await past.until_closed(10)
            past.close()
            assert data.startswith(b"HTTP/1.1 503 Service Unavailable\r\n"), data
            assert b"\r\nconnection: close\r\n" in data

            # One connection fewer, and a new one is served again.
            held.pop().close()
            deadline = time.monotonic() + 10
            async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
                while (await http.get("/healthz")).status_code != 200:
                    assert time.monotonic() < deadline, "no room after a connection closed"
                    await asyncio.sleep(0.05)
        finally:
            for conn in held:
                conn.close()
