"""`python -m bench all | <name> [--smoke] [--runs N] [--duration S] [--driver wrk|python]`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path

from bench import machine
from bench.benchmarks import (
    claims,
    delivery_fairness,
    e2e,
    fairness,
    fanout,
    fanout_sql,
    intake,
    memory,
    mirror,
    purge,
    queue,
    scale,
    statements,
    validation,
    watch,
)
from bench.context import RESULTS_DIR, Context, Options
from bench.database import bench_postgres
from bench.report import Report

Benchmark = Callable[[Context], Awaitable[Report]]

# In the order; `all` runs them in this order.
BENCHMARKS: dict[str, Benchmark] = {
    "intake": intake.run,
    "e2e": e2e.run,
    "fanout": fanout.run,
    "fanout-sql": fanout_sql.run,
    "claims": claims.run,
    "queue": queue.run,
    "scale": scale.run,
    "memory": memory.run,
    "delivery-fairness": delivery_fairness.run,
    "fairness": fairness.run,
    "validation": validation.run,
    "purge": purge.run,
    "mirror": mirror.run,
    "statements": statements.run,
    "watch": watch.run,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("name", choices=["all", *BENCHMARKS], help="which benchmark")
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes, one short run: checks the harness"
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (median reported)")
    parser.add_argument("--duration", type=float, default=12.0, help="seconds of load per run")
    parser.add_argument(
        "--driver",
        choices=["auto", "wrk", "python"],
        default="auto",
        help="closed-loop load generator (auto: wrk if installed)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where the JSON goes")
    parser.add_argument(
        "--profile", action="store_true", help="py-spy the falrelay process in an extra run"
    )
    parser.add_argument(
        "--experiments",
        action="store_true",
        help="also measure falrelay with proposed app changes (bench/variants.py)",
    )
    parser.add_argument(
        "--logs", type=Path, default=None, help="keep process logs and profiles here"
    )
    parser.add_argument(
        "--scratch", type=Path, default=None, help="parent dir of the embedded Postgres data"
    )
    return parser


SMOKE_CONCURRENCY = 3


async def main_async(args: argparse.Namespace) -> int:
    options = Options(
        smoke=args.smoke,
        runs=max(1, args.runs),
        duration_s=args.duration,
        driver=args.driver,
        out_dir=args.out,
        profile=args.profile,
        experiments=args.experiments,
    )
    # SIGTERM cancels the run like Ctrl-C does, so every process and database is cleaned up.
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    names = list(BENCHMARKS) if args.name == "all" else [args.name]
    with contextlib.ExitStack() as stack:
        if args.logs is not None:
            args.logs.mkdir(parents=True, exist_ok=True)
            logs = args.logs.resolve()
        else:
            logs = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="falrelay-bench-")))
        async with bench_postgres(args.scratch) as postgres:
            ctx = Context(
                options=options,
                postgres=postgres,
                work_dir=logs,
                machine=machine.describe(),
                postgres_version=await postgres.version(),
            )
            if options.smoke:
                # Smoke numbers mean nothing: run a few at a time, to check the harness in
                # seconds (every benchmark has its own databases and processes). All eight at
                # once started some thirty processes on two cores, and on a busy machine a
                # server then took longer than its start bound to become ready.
                running = asyncio.Semaphore(SMOKE_CONCURRENCY)

                async def limited(name: str) -> bool:
                    async with running:
                        return await _run_one(ctx, name)

                outcomes = await asyncio.gather(*(limited(name) for name in names))
            else:
                outcomes = [await _run_one(ctx, name) for name in names]
    return 0 if all(outcomes) else 1


async def _run_one(ctx: Context, name: str) -> bool:
    started = time.monotonic()
    try:
        report = await BENCHMARKS[name](ctx)
    except Exception as exc:
        sys.stderr.write(f"bench {name} failed: {exc!r}\n")
        traceback.print_exc()
        return False
    report.duration_s = round(time.monotonic() - started, 1)
    path = report.write(ctx.options.out_dir)
    sys.stdout.write(report.table() + f"\nwrote {path}\n\n")
    sys.stdout.flush()
    return True


def main() -> None:
    args = build_parser().parse_args()
    try:
        import uvloop

        code = uvloop.run(main_async(args))
    except ImportError:
        code = asyncio.run(main_async(args))
    raise SystemExit(code)


if __name__ == "__main__":
    main()
