"""Load generation: `wrk` when it is installed, else (or for a fixed rate) our asyncio driver.

Both run as a separate process from the servers they measure and from the harness, and both
return the same `LoadResult`. wrk is the default for closed-loop load (N connections, as fast
as the server answers): it is C and costs the 2-core machine far less CPU than any Python
client, which would otherwise take a core from the server it measures. wrk cannot hold a fixed
rate, so open-loop load (the end-to-end benchmark) uses the asyncio driver, run as
`python -m bench.load SPEC.json`.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import stats


@dataclass
class LoadSpec:
    base_url: str
    paths: list[str]
    method: str = "GET"
    headers: dict[str, str] = field(default_factory=dict)
    body: str | None = None
    # Each request gets `Idempotency-Key: <prefix><thread>-<n>`: unique across runs too.
    idempotency_prefix: str | None = None
    connections: int = 64
    duration_s: float = 10.0
    # Open loop: this many requests a second (the asyncio driver only), at most `connections`
    # in flight; latency is counted from when each request was due, not when it was sent.
    rate: float | None = None
    # A bound in count as well as in time.
    max_requests: int = 1_000_000


@dataclass
class LoadResult:
    driver: str
    requests: int
    ok: int  # 2xx answers
    errors: int  # everything else: other statuses, timeouts, socket errors
    duration_s: float
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    started_at: float = 0.0  # wall clock (time.time()) of the first request
    statuses: dict[str, int] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.ok / self.duration_s if self.duration_s else 0.0

    @property
    def error_share(self) -> float:
        return self.errors / self.requests if self.requests else 1.0


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def choose_driver(requested: str, spec: LoadSpec) -> str:
    if spec.rate is not None:
        return "python"
    if requested == "auto":
        return "wrk" if wrk_available() else "python"
    return requested


def run(spec: LoadSpec, driver: str = "auto", work_dir: Path | None = None) -> LoadResult:
    """Blocking: runs the load in a child process and returns what it measured."""
    chosen = choose_driver(driver, spec)
    with tempfile.TemporaryDirectory(prefix="bench-load-", dir=work_dir) as tmp:
        if chosen == "wrk":
            return _run_wrk(spec, Path(tmp))
        spec_path = Path(tmp) / "spec.json"
        spec_path.write_text(json.dumps(asdict(spec)))
        out = _run_child([sys.executable, "-m", "bench.load", str(spec_path)], spec)
        data = json.loads(out.strip().splitlines()[-1])
        return LoadResult(**data)


def _run_child(argv: list[str], spec: LoadSpec) -> str:
    # The child stops itself at duration_s; the timeout only catches a hung child.
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=spec.duration_s + 60, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


# wrk ------------------------------------------------------------------------------------------

_WRK_SCRIPT = """
wrk.method = {method}
{body}
{headers}
local paths = {{{paths}}}
local prefix = {prefix}
local limit = {limit}
local counter = 0
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

function init(args)
  math.randomseed(tid * 7919)
end

function request()
  counter = counter + 1
  if counter > limit then
    wrk.thread:stop()
  end
  if prefix then
    wrk.headers["Idempotency-Key"] = prefix .. tid .. "-" .. counter
  end
  return wrk.format(nil, paths[math.random(#paths)])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRKJSON {{\\"requests\\": %d, \\"duration_us\\": %d, \\"connect\\": %d, \\"read\\": %d, "
    .. "\\"write\\": %d, \\"status\\": %d, \\"timeout\\": %d, \\"p50_us\\": %f, "
    .. "\\"p90_us\\": %f, \\"p99_us\\": %f, \\"max_us\\": %f}}\\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def _lua_string(value: str) -> str:
    # A long bracket needs no escaping as long as the text does not contain its closer.
    assert "]==]" not in value
    return f"[==[{value}]==]"


def wrk_script(spec: LoadSpec) -> str:
    threads = _wrk_threads(spec)
    headers = "\n".join(
        f"wrk.headers[ {_lua_string(k)} ] = {_lua_string(v)}" for k, v in spec.headers.items()
    )
    return _WRK_SCRIPT.format(
        method=_lua_string(spec.method),
        body=f"wrk.body = {_lua_string(spec.body)}" if spec.body is not None else "",
        headers=headers,
        paths=", ".join(_lua_string(p) for p in spec.paths),
        prefix=_lua_string(spec.idempotency_prefix) if spec.idempotency_prefix else "nil",
        limit=max(1, spec.max_requests // threads),
    )


def _wrk_threads(spec: LoadSpec) -> int:
    # Two threads, as the reference figures were measured (wrk -t2 -c64).
    return max(1, min(2, spec.connections))


def _run_wrk(spec: LoadSpec, tmp: Path) -> LoadResult:
    script = tmp / "load.lua"
    script.write_text(wrk_script(spec))
    seconds = max(1, round(spec.duration_s))
    argv = [
        "wrk",
        f"-t{_wrk_threads(spec)}",
        f"-c{spec.connections}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        spec.base_url,
    ]
    started = time.time()
    out = _run_child(argv, spec)
    line = next((x for x in out.splitlines() if x.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result: {out[-2000:]}")
    w = json.loads(line.removeprefix("WRKJSON "))
    errors = w["connect"] + w["read"] + w["write"] + w["status"] + w["timeout"]
    return LoadResult(
        driver="wrk",
        requests=w["requests"],
        ok=max(0, w["requests"] - w["status"]),
        errors=errors,
        duration_s=w["duration_us"] / 1e6,
        p50_ms=w["p50_us"] / 1000,
        p90_ms=w["p90_us"] / 1000,
        p99_ms=w["p99_us"] / 1000,
        max_ms=w["max_us"] / 1000,
        started_at=started,
        statuses={k: w[k] for k in ("connect", "read", "write", "status", "timeout") if w[k]},
    )


# the asyncio driver ---------------------------------------------------------------------------


async def _drive(spec: LoadSpec) -> LoadResult:
    import aiohttp

    rng = random.Random(7919)
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    issued = 0
    connector = aiohttp.TCPConnector(limit=spec.connections)
    timeout = aiohttp.ClientTimeout(total=10)
    body = spec.body.encode() if spec.body is not None else None

    async with aiohttp.ClientSession(
        base_url=spec.base_url, connector=connector, timeout=timeout
    ) as session:

        async def one(n: int, due: float) -> None:
            headers = dict(spec.headers)
            if spec.idempotency_prefix:
                headers["Idempotency-Key"] = f"{spec.idempotency_prefix}{n}"
            try:
                async with session.request(
                    spec.method, rng.choice(spec.paths), data=body, headers=headers
                ) as response:
                    await response.read()
                    key = str(response.status)
            except (aiohttp.ClientError, TimeoutError) as exc:
                key = type(exc).__name__
            statuses[key] = statuses.get(key, 0) + 1
            latencies.append(time.perf_counter() - due)

        started_wall = time.time()
        start = time.perf_counter()
        deadline = start + spec.duration_s
        if spec.rate is None:

            async def connection() -> None:
                nonlocal issued
                while time.perf_counter() < deadline and issued < spec.max_requests:
                    issued += 1
                    await one(issued, time.perf_counter())

            await asyncio.gather(*(connection() for _ in range(spec.connections)))
        else:
            in_flight = asyncio.Semaphore(spec.connections)
            total = min(spec.max_requests, int(spec.rate * spec.duration_s))
            tasks: list[asyncio.Task[None]] = []

            async def bounded(n: int, due: float) -> None:
                async with in_flight:
                    await one(n, due)

            for n in range(total):
                due = start + n / spec.rate
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(bounded(n, due)))
            issued = total
            await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start

    ok = sum(n for key, n in statuses.items() if key.startswith("2"))
    ms = [x * 1000 for x in latencies]
    return LoadResult(
        driver="python",
        requests=issued,
        ok=ok,
        errors=issued - ok,
        duration_s=elapsed,
        p50_ms=stats.percentile(ms, 50),
        p90_ms=stats.percentile(ms, 90),
        p99_ms=stats.percentile(ms, 99),
        max_ms=max(ms) if ms else None,
        started_at=started_wall,
        statuses=statuses,
    )


def main(argv: list[str]) -> None:
    spec = LoadSpec(**json.loads(Path(argv[0]).read_text()))
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    result = runner(_drive(spec))
    sys.stdout.write(json.dumps(asdict(result)) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
