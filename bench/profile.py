"""py-spy on a running server during a load run, summarised by package and by function.

Self time (the innermost Python frame of each sample) says where the CPU goes; idle samples
(an event loop waiting in epoll) are not recorded, so shares are of busy time. Shares are of
the main thread (the event loop's); other threads (FastAPI's thread pool for plain `def`
dependencies) are counted apart, as py-spy cannot always tell a thread blocked on a lock
from a busy one.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


def py_spy() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


async def record(pid: int, seconds: float, out: Path) -> asyncio.subprocess.Process:
    """Starts recording `pid` for `seconds`; await `.wait()` on the result for the file."""
    exe = py_spy()
    if exe is None:
        raise RuntimeError("py-spy is not installed (pip install py-spy)")
    return await asyncio.create_subprocess_exec(
        exe,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(max(1, round(seconds))),
        "--rate",
        "250",
        "--format",
        "raw",
        "--threads",
        "--nonblocking",
        "--output",
        str(out),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


def package_of(path: str) -> str:
    """A frame's file → the library it belongs to (`fastapi`, `asyncpg`, `asyncio`, `app.api`)."""
    if "site-packages/" in path:
        head = path.split("site-packages/", 1)[1].split("/", 1)[0]
        return head.removesuffix(".py")
    parts = Path(path).parts
    if "app" in parts and "bench" not in parts and "lib" not in parts:
        rest = parts[parts.index("app") + 1 :]
        return "app." + rest[0].removesuffix(".py") if len(rest) > 1 else "app"
    match = re.search(r"python3\.\d+/([^/]+)", path)
    if match:
        return match.group(1).removesuffix(".py")
    return path or "?"


def summarise(raw: Path, top: int = 15) -> dict[str, Any]:
    self_by_package: Counter[str] = Counter()
    self_by_function: Counter[str] = Counter()
    inclusive_by_package: Counter[str] = Counter()
    inclusive_app: Counter[str] = Counter()
    by_thread: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        parts = stack.split(";")
        if parts[0].startswith("thread ("):
            thread = parts.pop(0).split(": ", 1)[-1]
            by_thread[thread] += count
            if thread != "MainThread":
                continue
        frames = [m for f in parts if (m := _FRAME.match(f))]
        if not frames:
            continue
        total += count
        leaf = frames[-1]
        package = package_of(leaf["file"])
        self_by_package[package] += count
        self_by_function[f"{leaf['func']} ({package})"] += count
        for seen in {package_of(f["file"]) for f in frames}:
            inclusive_by_package[seen] += count
        # Our own functions, inclusive: which step of a request the time is spent under.
        for seen in {
            f"{f['func']} ({package_of(f['file'])})"
            for f in frames
            if package_of(f["file"]).startswith("app.")
        }:
            inclusive_app[seen] += count

    def share(counter: Counter[str]) -> list[tuple[str, float]]:
        if not total:
            return []
        return [(k, round(100 * v / total, 1)) for k, v in counter.most_common(top)]

    return {
        "samples": total,
        "samples_by_thread": dict(by_thread.most_common(5)),
        "self_by_package_pct": share(self_by_package),
        "self_by_function_pct": share(self_by_function),
        "inclusive_by_package_pct": share(inclusive_by_package),
        "inclusive_app_functions_pct": share(inclusive_app),
    }


def format_summary(summary: dict[str, Any], rows: int = 10) -> str:
    def row(items: list[tuple[str, float]]) -> str:
        return ", ".join(f"{k} {v}%" for k, v in items[:rows])

    return (
        f"py-spy, {summary['samples']} samples\n"
        f"  self by package: {row(summary['self_by_package_pct'])}\n"
        f"  self by function: {row(summary['self_by_function_pct'])}\n"
        f"  inclusive by package: {row(summary['inclusive_by_package_pct'])}\n"
        f"  inclusive, app functions: {row(summary['inclusive_app_functions_pct'])}"
    )
